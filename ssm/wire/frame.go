package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Frame layout constants (docs/protocol.md section 4.1).
const (
	// HeaderLength is the value of the first header field: the offset of
	// PayloadLength, not the size of the header.
	HeaderLength = 116
	// FrameHeaderSize is where the payload starts (HeaderLength + 4).
	FrameHeaderSize = HeaderLength + 4
	// MessageTypeSize is the width of the space-padded MessageType field.
	MessageTypeSize = 32
	// SchemaVersion is the only schema version in use.
	SchemaVersion = 1
	// MaxPayload is the largest data payload ssmproxy sends in one message:
	// the real agent and plugin read and send at most 1024 bytes at a time.
	MaxPayload = 1024
	// MaxFrameSize bounds what the decoder accepts. Real peers never send
	// more than a few KiB (data is cut at 1024 bytes; JSON control payloads
	// are small); a generous bound still stops memory abuse.
	MaxFrameSize = 256 * 1024
)

const (
	offHeaderLength  = 0
	offMessageType   = 4
	offSchemaVersion = 36
	offCreatedDate   = 40
	offSequence      = 48
	offFlags         = 56
	offMessageID     = 64
	offDigest        = 80
	offPayloadType   = 112
	offPayloadLength = 116
)

// Message types (docs/protocol.md section 5.1).
const (
	TypeInputStreamData   = "input_stream_data"
	TypeOutputStreamData  = "output_stream_data"
	TypeAcknowledge       = "acknowledge"
	TypeChannelClosed     = "channel_closed"
	TypePausePublication  = "pause_publication"
	TypeStartPublication  = "start_publication"
	TypeAgentSessionState = "agent_session_state"
)

// PayloadType values (docs/protocol.md section 5.2).
type PayloadType uint32

const (
	PayloadNone                 PayloadType = 0
	PayloadOutput               PayloadType = 1
	PayloadError                PayloadType = 2
	PayloadSize                 PayloadType = 3
	PayloadParameter            PayloadType = 4
	PayloadHandshakeRequest     PayloadType = 5
	PayloadHandshakeResponse    PayloadType = 6
	PayloadHandshakeComplete    PayloadType = 7
	PayloadEncChallengeRequest  PayloadType = 8
	PayloadEncChallengeResponse PayloadType = 9
	PayloadFlag                 PayloadType = 10
	PayloadStdErr               PayloadType = 11
	PayloadExitCode             PayloadType = 12
)

// Header Flags bits. Client data carries 0, acks and control frames 3, the
// agent's first stream message 1. Receivers ignore them.
const (
	FlagSYN uint64 = 1
	FlagFIN uint64 = 2
	// FlagsAck is what acks and client control frames carry.
	FlagsAck = FlagSYN | FlagFIN
)

// Frame is one data-channel message ("ClientMessage"/"AgentMessage" upstream).
type Frame struct {
	// HeaderLength as read from the wire; Encode always writes 116.
	HeaderLength   uint32
	MessageType    string
	SchemaVersion  uint32
	CreatedDate    uint64 // Unix epoch milliseconds
	SequenceNumber int64
	Flags          uint64
	MessageID      uuid.UUID
	// PayloadDigest as read from the wire; Encode computes it.
	PayloadDigest [32]byte
	PayloadType   PayloadType
	// PayloadLength as read from the wire; Encode writes len(Payload).
	PayloadLength uint32
	Payload       []byte
}

// Decoding errors. Every error Decode returns wraps exactly one of these, so
// callers can branch with errors.Is, and is a *FrameError for errors.As.
var (
	ErrFrameShort         = errors.New("frame shorter than its header")
	ErrFrameTooLarge      = errors.New("frame larger than the size bound")
	ErrHeaderLength       = errors.New("invalid header length")
	ErrMessageType        = errors.New("empty or invalid message type")
	ErrCreatedDate        = errors.New("created date is zero")
	ErrPayloadDigest      = errors.New("payload digest mismatch")
	ErrPayloadLength      = errors.New("payload length mismatch")
	ErrEmptyPayload       = errors.New("empty payload")
	ErrMessageTypeTooLong = errors.New("message type longer than 32 bytes")
)

// FrameError describes why a frame was rejected.
type FrameError struct {
	Err    error // one of the Err* sentinels above
	Detail string
}

func (e *FrameError) Error() string {
	if e.Detail == "" {
		return "ssm frame: " + e.Err.Error()
	}
	return "ssm frame: " + e.Err.Error() + ": " + e.Detail
}

func (e *FrameError) Unwrap() error { return e.Err }

func frameErr(err error, format string, args ...any) error {
	return &FrameError{Err: err, Detail: fmt.Sprintf(format, args...)}
}

// Encode serializes f. It always writes HeaderLength 116, the SHA-256 digest of
// the payload and its length, ignoring the corresponding fields of f. It does
// not refuse an empty payload: that rule belongs to the sender (the stream
// never builds one), while the codec must be able to reproduce every frame a
// peer may emit.
func Encode(f *Frame) ([]byte, error) {
	buf := make([]byte, FrameHeaderSize+len(f.Payload))
	if err := EncodeInto(buf, f); err != nil {
		return nil, err
	}
	return buf, nil
}

// EncodeInto serializes f into buf, which must be exactly
// FrameHeaderSize+len(f.Payload) bytes long.
func EncodeInto(buf []byte, f *Frame) error {
	if len(f.MessageType) > MessageTypeSize {
		return frameErr(ErrMessageTypeTooLong, "%q", f.MessageType)
	}
	if f.MessageType == "" {
		return frameErr(ErrMessageType, "empty")
	}
	if len(buf) != FrameHeaderSize+len(f.Payload) {
		return fmt.Errorf("ssm frame: buffer of %d bytes for a %d-byte payload", len(buf), len(f.Payload))
	}
	if len(f.Payload) > MaxFrameSize-FrameHeaderSize {
		return frameErr(ErrFrameTooLarge, "payload of %d bytes", len(f.Payload))
	}
	be := binary.BigEndian
	be.PutUint32(buf[offHeaderLength:], HeaderLength)
	n := copy(buf[offMessageType:offSchemaVersion], f.MessageType)
	for i := offMessageType + n; i < offSchemaVersion; i++ {
		buf[i] = ' '
	}
	be.PutUint32(buf[offSchemaVersion:], f.SchemaVersion)
	be.PutUint64(buf[offCreatedDate:], f.CreatedDate)
	be.PutUint64(buf[offSequence:], uint64(f.SequenceNumber))
	be.PutUint64(buf[offFlags:], f.Flags)
	PutMessageID(buf[offMessageID:offDigest], f.MessageID)
	sum := sha256.Sum256(f.Payload)
	copy(buf[offDigest:offPayloadType], sum[:])
	be.PutUint32(buf[offPayloadType:], uint32(f.PayloadType))
	be.PutUint32(buf[offPayloadLength:], uint32(len(f.Payload)))
	copy(buf[FrameHeaderSize:], f.Payload)
	return nil
}

// PutMessageID writes id in wire order: UUID bytes 8-15 first, then 0-7
// (docs/protocol.md section 4.2).
func PutMessageID(dst []byte, id uuid.UUID) {
	copy(dst[0:8], id[8:16])
	copy(dst[8:16], id[0:8])
}

// WireMessageID reads a MessageId from its 16 wire bytes.
func WireMessageID(src []byte) uuid.UUID {
	var id uuid.UUID
	copy(id[0:8], src[8:16])
	copy(id[8:16], src[0:8])
	return id
}

// Decode parses and validates a frame the way the client must: fixed offsets,
// payload = everything after HeaderLength+4, and the checks of docs/protocol.md
// section 4.4 plus ssmproxy's own (PayloadLength must match, size bound). The
// returned Frame's Payload aliases b.
func Decode(b []byte) (*Frame, error) {
	f := new(Frame)
	if err := DecodeInto(b, f); err != nil {
		return nil, err
	}
	return f, nil
}

// DecodeInto is Decode into a Frame the caller owns, so that the hot path
// (one frame per 1024 bytes) allocates nothing. On error f is undefined.
func DecodeInto(b []byte, f *Frame) error {
	if err := decodeHeaderInto(b, f); err != nil {
		return err
	}
	return f.Validate()
}

// DecodeHeader parses b at fixed offsets with only the bounds checks that keep
// the parse safe (length, HeaderLength within the frame, size bound). It is
// what a lenient peer (such as the real agent) does; Validate applies the rest.
func DecodeHeader(b []byte) (*Frame, error) {
	f := new(Frame)
	if err := decodeHeaderInto(b, f); err != nil {
		return nil, err
	}
	return f, nil
}

// decodeHeaderInto is DecodeHeader into a Frame the caller owns.
func decodeHeaderInto(b []byte, f *Frame) error {
	if len(b) > MaxFrameSize {
		return frameErr(ErrFrameTooLarge, "%d bytes", len(b))
	}
	if len(b) < FrameHeaderSize {
		return frameErr(ErrFrameShort, "%d bytes", len(b))
	}
	be := binary.BigEndian
	hl := be.Uint32(b[offHeaderLength:])
	if hl == 0 || uint64(hl)+4 > uint64(len(b)) {
		return frameErr(ErrHeaderLength, "%d in a %d-byte frame", hl, len(b))
	}
	*f = Frame{
		HeaderLength:   hl,
		MessageType:    trimMessageType(b[offMessageType:offSchemaVersion]),
		SchemaVersion:  be.Uint32(b[offSchemaVersion:]),
		CreatedDate:    be.Uint64(b[offCreatedDate:]),
		SequenceNumber: int64(be.Uint64(b[offSequence:])),
		Flags:          be.Uint64(b[offFlags:]),
		MessageID:      WireMessageID(b[offMessageID:offDigest]),
		PayloadType:    PayloadType(be.Uint32(b[offPayloadType:])),
		PayloadLength:  be.Uint32(b[hl:]),
		Payload:        b[hl+4:],
	}
	copy(f.PayloadDigest[:], b[offDigest:offPayloadType])
	return nil
}

// Validate applies the receive checks of docs/protocol.md section 4.4 to a frame
// produced by DecodeHeader.
func (f *Frame) Validate() error {
	// MGS appears to send publication control frames with minimal headers;
	// like the real client, accept them without further checks.
	if f.MessageType == TypeStartPublication || f.MessageType == TypePausePublication {
		return nil
	}
	if f.HeaderLength != HeaderLength {
		return frameErr(ErrHeaderLength, "%d, want %d", f.HeaderLength, HeaderLength)
	}
	if f.MessageType == "" || !printableASCII(f.MessageType) {
		return frameErr(ErrMessageType, "%q", f.MessageType)
	}
	if f.CreatedDate == 0 {
		return frameErr(ErrCreatedDate, "")
	}
	if int(f.PayloadLength) != len(f.Payload) {
		return frameErr(ErrPayloadLength, "header says %d, frame carries %d", f.PayloadLength, len(f.Payload))
	}
	if f.PayloadLength != 0 {
		if sum := sha256.Sum256(f.Payload); !bytes.Equal(sum[:], f.PayloadDigest[:]) {
			return frameErr(ErrPayloadDigest, "")
		}
	}
	return nil
}

// trimMessageType strips NUL bytes and surrounding white space, as both real
// peers do, so NUL padding is accepted too.
func trimMessageType(b []byte) string {
	end := len(b)
	for end > 0 && (b[end-1] == ' ' || b[end-1] == 0 || b[end-1] == '\t' || b[end-1] == '\n' || b[end-1] == '\r') {
		end--
	}
	start := 0
	for start < end && (b[start] == ' ' || b[start] == 0) {
		start++
	}
	s := b[start:end]
	if bytes.IndexByte(s, 0) >= 0 {
		return string(bytes.ReplaceAll(s, []byte{0}, nil))
	}
	// The known types come back as the constants: no allocation per frame.
	switch string(s) {
	case TypeOutputStreamData:
		return TypeOutputStreamData
	case TypeInputStreamData:
		return TypeInputStreamData
	case TypeAcknowledge:
		return TypeAcknowledge
	}
	return string(s)
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

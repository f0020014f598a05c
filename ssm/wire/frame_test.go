package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/google/uuid"
)

// vector is one case of testdata/frames.json, a copy of shared/vectors/frames.json
// produced with the official plugin's message package.
type vector struct {
	Name      string `json:"name"`
	Direction string `json:"direction"`
	Fields    struct {
		MessageType       string `json:"messageType"`
		SchemaVersion     uint32 `json:"schemaVersion"`
		CreatedDateMillis uint64 `json:"createdDateMillis"`
		SequenceNumber    int64  `json:"sequenceNumber"`
		Flags             uint64 `json:"flags"`
		MessageID         string `json:"messageId"`
		PayloadType       uint32 `json:"payloadType"`
		Payload           string `json:"payload"`
	} `json:"fields"`
	Frame       string `json:"frame"`
	FrameLength int    `json:"frameLength"`
	HeaderHex   string `json:"headerHex"`
	Decoded     struct {
		HeaderLength      uint32 `json:"headerLength"`
		MessageType       string `json:"messageType"`
		SchemaVersion     uint32 `json:"schemaVersion"`
		CreatedDateMillis uint64 `json:"createdDateMillis"`
		SequenceNumber    int64  `json:"sequenceNumber"`
		Flags             uint64 `json:"flags"`
		MessageID         string `json:"messageId"`
		PayloadDigestHex  string `json:"payloadDigestHex"`
		PayloadType       uint32 `json:"payloadType"`
		PayloadLength     uint32 `json:"payloadLength"`
		Payload           string `json:"payload"`
	} `json:"decoded"`
	DecodedPayload json.RawMessage `json:"decodedPayload"`
	ValidateError  *string         `json:"validateError"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/frames.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 15 {
		t.Fatalf("expected the 15 golden frames, got %d", len(vs))
	}
	return vs
}

func b64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoldenEncode(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			f := &Frame{
				MessageType:    v.Fields.MessageType,
				SchemaVersion:  v.Fields.SchemaVersion,
				CreatedDate:    v.Fields.CreatedDateMillis,
				SequenceNumber: v.Fields.SequenceNumber,
				Flags:          v.Fields.Flags,
				MessageID:      uuid.MustParse(v.Fields.MessageID),
				PayloadType:    PayloadType(v.Fields.PayloadType),
				Payload:        b64(t, v.Fields.Payload),
			}
			got, err := Encode(f)
			if err != nil {
				t.Fatal(err)
			}
			want := b64(t, v.Frame)
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded frame differs\n got %x\nwant %x", got, want)
			}
			if len(got) != v.FrameLength {
				t.Fatalf("length %d, want %d", len(got), v.FrameLength)
			}
			if h := hex.EncodeToString(got[:FrameHeaderSize]); h != v.HeaderHex {
				t.Fatalf("header hex %s, want %s", h, v.HeaderHex)
			}
		})
	}
}

func TestGoldenDecode(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			f, err := Decode(b64(t, v.Frame))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			d := v.Decoded
			if f.HeaderLength != d.HeaderLength || f.MessageType != d.MessageType ||
				f.SchemaVersion != d.SchemaVersion || f.CreatedDate != d.CreatedDateMillis ||
				f.SequenceNumber != d.SequenceNumber || f.Flags != d.Flags ||
				f.MessageID.String() != d.MessageID || uint32(f.PayloadType) != d.PayloadType ||
				f.PayloadLength != d.PayloadLength {
				t.Fatalf("decoded header %+v, want %+v", f, d)
			}
			if hex.EncodeToString(f.PayloadDigest[:]) != d.PayloadDigestHex {
				t.Fatalf("digest %x, want %s", f.PayloadDigest, d.PayloadDigestHex)
			}
			if !bytes.Equal(f.Payload, b64(t, d.Payload)) {
				t.Fatalf("payload differs")
			}
		})
	}
}

// TestGoldenPayloads checks that the typed payloads decode to the reference
// structs and that the payloads a client builds re-encode byte for byte.
func TestGoldenPayloads(t *testing.T) {
	for _, v := range loadVectors(t) {
		if len(v.DecodedPayload) == 0 || string(v.DecodedPayload) == "null" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			payload := b64(t, v.Fields.Payload)
			var rebuilt []byte
			var err error
			switch {
			case v.Fields.MessageType == TypeAcknowledge:
				a, perr := ParseAcknowledge(payload)
				if perr != nil {
					t.Fatal(perr)
				}
				rebuilt = AppendAcknowledge(nil, a.AcknowledgedMessageType, uuid.MustParse(a.AcknowledgedMessageID), a.AcknowledgedMessageSequenceNumber)
				viaJSON, _ := MarshalPayload(a)
				if !bytes.Equal(viaJSON, payload) {
					t.Fatalf("encoding/json ack %s differs from %s", viaJSON, payload)
				}
			case v.Fields.MessageType == TypeChannelClosed:
				var c ChannelClosed
				err = json.Unmarshal(payload, &c)
				rebuilt, _ = MarshalPayload(c)
			case PayloadType(v.Fields.PayloadType) == PayloadHandshakeRequest:
				var h HandshakeRequest
				err = json.Unmarshal(payload, &h)
				var st SessionTypeRequest
				if err == nil {
					err = json.Unmarshal(h.RequestedClientActions[0].ActionParameters, &st)
				}
				if st.SessionType != SessionTypePort || st.Properties["portNumber"] != "22" {
					t.Fatalf("session type request %+v", st)
				}
				rebuilt, _ = MarshalPayload(h)
			case PayloadType(v.Fields.PayloadType) == PayloadHandshakeResponse:
				resp := HandshakeResponse{
					ClientVersion:          "1.2.804.0",
					ProcessedClientActions: []ProcessedClientAction{{ActionType: ActionSessionType, ActionStatus: ActionSuccess}},
				}
				rebuilt, _ = MarshalPayload(resp)
			case PayloadType(v.Fields.PayloadType) == PayloadHandshakeComplete:
				var h HandshakeComplete
				err = json.Unmarshal(payload, &h)
				if h.HandshakeTimeToComplete != 1234567890 {
					t.Fatalf("HandshakeTimeToComplete %d", h.HandshakeTimeToComplete)
				}
				rebuilt, _ = MarshalPayload(h)
			case PayloadType(v.Fields.PayloadType) == PayloadFlag:
				fl, ferr := ParseFlag(payload)
				if ferr != nil || fl != FlagTerminateSession || fl.String() != "TerminateSession" {
					t.Fatalf("flag %v %v", fl, ferr)
				}
				rebuilt = EncodeFlag(fl)
			case PayloadType(v.Fields.PayloadType) == PayloadSize:
				rebuilt, _ = MarshalPayload(SizeData{Cols: 120, Rows: 40})
			default:
				t.Fatalf("unhandled typed payload %s", v.Name)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rebuilt, payload) {
				t.Fatalf("payload rebuilt as\n%s\nwant\n%s", rebuilt, payload)
			}
		})
	}
}

func TestMessageIDHalfSwap(t *testing.T) {
	id := uuid.MustParse("00112233-4455-4677-8899-aabbccddeeff")
	var wire [16]byte
	PutMessageID(wire[:], id)
	if got := hex.EncodeToString(wire[:]); got != "8899aabbccddeeff0011223344554677" {
		t.Fatalf("wire order %s", got)
	}
	if WireMessageID(wire[:]) != id {
		t.Fatal("round trip failed")
	}
}

func validFrame(t testing.TB, payload []byte) []byte {
	t.Helper()
	b, err := Encode(&Frame{MessageType: TypeOutputStreamData, SchemaVersion: 1, CreatedDate: 1, SequenceNumber: 9,
		MessageID: uuid.New(), PayloadType: PayloadOutput, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	mutate := func(f func(b []byte) []byte) []byte { return f(validFrame(t, []byte("hello"))) }
	cases := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"short", make([]byte, 119), ErrFrameShort},
		{"empty", nil, ErrFrameShort},
		{"too large", make([]byte, MaxFrameSize+1), ErrFrameTooLarge},
		{"header length zero", mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b, 0); return b }), ErrHeaderLength},
		{"header length beyond frame", mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b, 1<<31); return b }), ErrHeaderLength},
		{"header length 115", mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b, 115); return b }), ErrHeaderLength},
		{"empty type", mutate(func(b []byte) []byte { copy(b[4:36], bytes.Repeat([]byte{' '}, 32)); return b }), ErrMessageType},
		{"control bytes in type", mutate(func(b []byte) []byte { b[6] = 0x01; return b }), ErrMessageType},
		{"created date zero", mutate(func(b []byte) []byte { binary.BigEndian.PutUint64(b[40:], 0); return b }), ErrCreatedDate},
		{"digest", mutate(func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }), ErrPayloadDigest},
		{"payload length", mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b[116:], 4); return b }), ErrPayloadLength},
		{"trailing byte", mutate(func(b []byte) []byte { return append(b, 'x') }), ErrPayloadLength},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.frame)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is not a *FrameError", err)
			}
		})
	}
}

func TestDecodeAcceptsNULPadding(t *testing.T) {
	b := validFrame(t, []byte("x"))
	for i := 4 + len(TypeOutputStreamData); i < 36; i++ {
		b[i] = 0
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.MessageType != TypeOutputStreamData {
		t.Fatalf("type %q", f.MessageType)
	}
}

func TestPublicationSkipsChecks(t *testing.T) {
	// MGS may send these with minimal headers: zero date, stale digest.
	b := make([]byte, FrameHeaderSize)
	binary.BigEndian.PutUint32(b, HeaderLength)
	copy(b[4:], TypePausePublication)
	f, err := Decode(b)
	if err != nil || f.MessageType != TypePausePublication {
		t.Fatalf("%v %v", f, err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 100, MaxPayload} {
		p := bytes.Repeat([]byte{0xa5}, n)
		f := &Frame{MessageType: TypeInputStreamData, SchemaVersion: 1, CreatedDate: 1775081795001,
			SequenceNumber: 1<<40 + 3, Flags: 0, MessageID: uuid.New(), PayloadType: PayloadOutput, Payload: p}
		b, err := Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		g, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if g.MessageType != f.MessageType || g.SequenceNumber != f.SequenceNumber || g.MessageID != f.MessageID ||
			g.CreatedDate != f.CreatedDate || !bytes.Equal(g.Payload, p) || g.PayloadDigest != sha256.Sum256(p) {
			t.Fatalf("round trip of %d bytes changed the frame", n)
		}
	}
	if _, err := Encode(&Frame{MessageType: "this_message_type_is_longer_than_32"}); !errors.Is(err, ErrMessageTypeTooLong) {
		t.Fatalf("long type: %v", err)
	}
}

// FuzzDecode: the decoder never panics, and whatever it accepts re-encodes to
// a frame that decodes to the same fields.
func FuzzDecode(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(b64(f, v.Frame))
	}
	f.Add(make([]byte, 120))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if fr.MessageType == TypeStartPublication || fr.MessageType == TypePausePublication {
			return
		}
		out, err := Encode(fr)
		if err != nil {
			t.Fatalf("accepted frame does not re-encode: %v", err)
		}
		g, err := Decode(out)
		if err != nil {
			t.Fatalf("re-encoded frame rejected: %v", err)
		}
		if g.MessageType != fr.MessageType || g.SequenceNumber != fr.SequenceNumber || g.MessageID != fr.MessageID ||
			g.Flags != fr.Flags || g.PayloadType != fr.PayloadType || !bytes.Equal(g.Payload, fr.Payload) {
			t.Fatalf("re-encode changed the frame")
		}
	})
}

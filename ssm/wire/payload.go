package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/uuid"
)

// Acknowledge is the JSON payload of an acknowledge frame. Field order matters:
// the real peers emit exactly this order (see the golden vectors).
type Acknowledge struct {
	AcknowledgedMessageType           string `json:"AcknowledgedMessageType"`
	AcknowledgedMessageID             string `json:"AcknowledgedMessageId"`
	AcknowledgedMessageSequenceNumber int64  `json:"AcknowledgedMessageSequenceNumber"`
	IsSequentialMessage               bool   `json:"IsSequentialMessage"`
}

// AppendAcknowledge appends the JSON of an Acknowledge to dst. It produces the
// same bytes as encoding/json for the struct (message types and canonical UUIDs
// never need escaping) without the reflection cost, because an ack is sent for
// every data message.
func AppendAcknowledge(dst []byte, messageType string, id uuid.UUID, seq int64) []byte {
	dst = append(dst, `{"AcknowledgedMessageType":"`...)
	dst = append(dst, messageType...)
	dst = append(dst, `","AcknowledgedMessageId":"`...)
	var idb [36]byte
	encodeUUID(idb[:], id)
	dst = append(dst, idb[:]...)
	dst = append(dst, `","AcknowledgedMessageSequenceNumber":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"IsSequentialMessage":true}`...)
	return dst
}

func encodeUUID(dst []byte, id uuid.UUID) {
	const hexdigits = "0123456789abcdef"
	j := 0
	for i, b := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j] = hexdigits[b>>4]
		dst[j+1] = hexdigits[b&0x0f]
		j += 2
	}
}

// ParseAckSequence extracts AcknowledgedMessageSequenceNumber from an
// acknowledge payload. An ack arrives for every message sent, so the exact
// shape the real peers emit (the field order of Acknowledge, compact, no
// escapes) is read without reflection; anything else goes to encoding/json,
// so both paths always agree (a repeated key, a key in another case or in a
// nested object reads as encoding/json reads it: FuzzParseAckSequence).
func ParseAckSequence(p []byte) (int64, bool) {
	if n, ok := parseCanonicalAck(p); ok {
		return n, true
	}
	a, err := ParseAcknowledge(p)
	if err != nil {
		return 0, false
	}
	return a.AcknowledgedMessageSequenceNumber, true
}

// parseCanonicalAck reads an ack in exactly AppendAcknowledge's layout.
func parseCanonicalAck(p []byte) (int64, bool) {
	rest, ok := bytes.CutPrefix(p, []byte(`{"AcknowledgedMessageType":"`))
	if !ok {
		return 0, false
	}
	if rest, ok = skipPlainString(rest); !ok {
		return 0, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"AcknowledgedMessageId":"`)); !ok {
		return 0, false
	}
	if rest, ok = skipPlainString(rest); !ok {
		return 0, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"AcknowledgedMessageSequenceNumber":`)); !ok {
		return 0, false
	}
	j := 0
	if j < len(rest) && rest[j] == '-' {
		j++
	}
	digits := j
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	// JSON numbers have no leading zeros; leave those to encoding/json.
	if j == digits || (rest[digits] == '0' && j > digits+1) {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return 0, false
	}
	switch string(rest[j:]) {
	case `,"IsSequentialMessage":true}`, `,"IsSequentialMessage":false}`:
		return n, true
	}
	return 0, false
}

// skipPlainString skips the rest of a JSON string with no escapes and no
// control characters, up to and including its closing quote.
func skipPlainString(b []byte) ([]byte, bool) {
	for i, c := range b {
		switch {
		case c == '"':
			return b[i+1:], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// ParseAcknowledge decodes an acknowledge payload.
func ParseAcknowledge(p []byte) (Acknowledge, error) {
	var a Acknowledge
	if err := json.Unmarshal(p, &a); err != nil {
		return a, fmt.Errorf("acknowledge payload: %w", err)
	}
	return a, nil
}

// Session types and action names used in the handshake (docs/protocol.md section 6).
const (
	ActionSessionType   = "SessionType"
	ActionKMSEncryption = "KMSEncryption"
	SessionTypePort     = "Port"
	// PropertyType is the Port session property that picks the agent's
	// mode; PortTypeLocalPortForwarding (the port-forwarding documents)
	// makes it multiplex with smux (docs/protocol.md 11.1).
	PropertyType                = "type"
	PortTypeLocalPortForwarding = "LocalPortForwarding"
)

// ActionStatus values in a HandshakeResponse.
const (
	ActionSuccess     = 1
	ActionFailed      = 2
	ActionUnsupported = 3
)

// HandshakeRequest is sent by the agent as its first stream message.
type HandshakeRequest struct {
	AgentVersion           string                  `json:"AgentVersion"`
	RequestedClientActions []RequestedClientAction `json:"RequestedClientActions"`
}

// RequestedClientAction is one action of a HandshakeRequest. ActionParameters
// is kept raw because its shape depends on ActionType.
type RequestedClientAction struct {
	ActionType       string          `json:"ActionType"`
	ActionParameters json.RawMessage `json:"ActionParameters"`
}

// SessionTypeRequest is the ActionParameters of a SessionType action.
type SessionTypeRequest struct {
	SessionType string            `json:"SessionType"`
	Properties  map[string]string `json:"Properties"`
}

// HandshakeResponse is the client's answer (PayloadType 6).
type HandshakeResponse struct {
	ClientVersion          string                  `json:"ClientVersion"`
	ProcessedClientActions []ProcessedClientAction `json:"ProcessedClientActions"`
	Errors                 []string                `json:"Errors"`
}

// ProcessedClientAction reports the outcome of one requested action.
type ProcessedClientAction struct {
	ActionType   string `json:"ActionType"`
	ActionStatus int    `json:"ActionStatus"`
	ActionResult any    `json:"ActionResult"`
	Error        string `json:"Error"`
}

// HandshakeComplete ends the handshake (PayloadType 7).
type HandshakeComplete struct {
	// HandshakeTimeToComplete is a Go time.Duration in nanoseconds.
	HandshakeTimeToComplete int64  `json:"HandshakeTimeToComplete"`
	CustomerMessage         string `json:"CustomerMessage"`
}

// ChannelClosed is the payload MGS sends when the session is over.
type ChannelClosed struct {
	MessageID     string `json:"MessageId"`
	CreatedDate   string `json:"CreatedDate"`
	DestinationID string `json:"DestinationId"`
	SessionID     string `json:"SessionId"`
	MessageType   string `json:"MessageType"`
	SchemaVersion int    `json:"SchemaVersion"`
	Output        string `json:"Output"`
}

// SizeData is the terminal size payload (PayloadType 3).
type SizeData struct {
	Cols uint32 `json:"cols"`
	Rows uint32 `json:"rows"`
}

// Flag values (PayloadType 10, docs/protocol.md section 5.3).
type Flag uint32

const (
	FlagDisconnectToPort   Flag = 1
	FlagTerminateSession   Flag = 2
	FlagConnectToPortError Flag = 3
)

func (f Flag) String() string {
	switch f {
	case FlagDisconnectToPort:
		return "DisconnectToPort"
	case FlagTerminateSession:
		return "TerminateSession"
	case FlagConnectToPortError:
		return "ConnectToPortError"
	}
	return "Flag(" + strconv.FormatUint(uint64(f), 10) + ")"
}

// EncodeFlag returns the 4-byte big-endian Flag payload.
func EncodeFlag(f Flag) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(f))
	return b
}

// ParseFlag decodes a Flag payload, which must be exactly 4 bytes.
func ParseFlag(p []byte) (Flag, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("flag payload of %d bytes, want 4", len(p))
	}
	return Flag(binary.BigEndian.Uint32(p)), nil
}

// MessageSchemaVersion of the opening frame.
const MessageSchemaVersion = "1.0"

// OpenDataChannel is the text frame a client sends right after the upgrade.
type OpenDataChannel struct {
	MessageSchemaVersion string `json:"MessageSchemaVersion"`
	RequestID            string `json:"RequestId"`
	TokenValue           string `json:"TokenValue"`
	ClientID             string `json:"ClientId,omitempty"`
	ClientVersion        string `json:"ClientVersion,omitempty"`
	// ClientInstanceID is set only by agents on their own leg.
	ClientInstanceID string `json:"ClientInstanceId,omitempty"`
}

// String redacts the token so an OpenDataChannel can be logged.
func (o OpenDataChannel) String() string {
	return fmt.Sprintf("OpenDataChannel{RequestId:%s ClientId:%s ClientVersion:%s TokenValue:[redacted]}", o.RequestID, o.ClientID, o.ClientVersion)
}

// AgentSessionState is sent by the agent to MGS only.
type AgentSessionState struct {
	SchemaVersion int    `json:"SchemaVersion"`
	SessionState  string `json:"SessionState"`
	SessionID     string `json:"SessionId"`
}

// MarshalPayload returns the compact encoding/json form of a payload struct,
// which is what the real peers emit.
func MarshalPayload(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	return b, nil
}

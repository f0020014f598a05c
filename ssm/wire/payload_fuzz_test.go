package wire

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
)

// FuzzParseAckSequence: the fast path and encoding/json agree. Whatever
// ParseAckSequence takes from a payload is what a full decode of that payload
// says, so a crafted ack (a key inside a string, a repeated key) cannot make
// the fast path ack a message the agent never acknowledged.
func FuzzParseAckSequence(f *testing.F) {
	id := uuid.MustParse("5e9a1a8c-6a7d-4a7b-9c8e-0d1f2a3b4c5d")
	f.Add(AppendAcknowledge(nil, TypeOutputStreamData, id, 7))
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber":1,"AcknowledgedMessageSequenceNumber":2}`))
	f.Add([]byte(`{"AcknowledgedMessageType":"\"AcknowledgedMessageSequenceNumber\":5,","AcknowledgedMessageSequenceNumber":6}`))
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber": 3 }`))
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber":-0}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		got, ok := ParseAckSequence(p)
		a, err := ParseAcknowledge(p)
		if ok != (err == nil) {
			t.Fatalf("fast path ok=%v, full decode err=%v", ok, err)
		}
		if ok && got != a.AcknowledgedMessageSequenceNumber {
			t.Fatalf("fast path read %d, the payload says %d", got, a.AcknowledgedMessageSequenceNumber)
		}
	})
}

// FuzzAcknowledgeRoundTrip: AppendAcknowledge emits exactly what
// encoding/json would for the struct, for any type name and sequence number.
func FuzzAcknowledgeRoundTrip(f *testing.F) {
	f.Add("output_stream_data", []byte("0123456789abcdef"), int64(0))
	f.Add("input_stream_data", []byte{0xff, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, int64(-1))
	f.Fuzz(func(t *testing.T, typ string, idb []byte, seq int64) {
		if len(idb) < 16 {
			return
		}
		for _, c := range []byte(typ) {
			// Message types are short ASCII names that never need escaping
			// (docs/protocol.md 5.1); AppendAcknowledge relies on it.
			if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return
			}
		}
		id, _ := uuid.FromBytes(idb[:16])
		got := AppendAcknowledge(nil, typ, id, seq)
		want, err := json.Marshal(Acknowledge{AcknowledgedMessageType: typ, AcknowledgedMessageID: id.String(),
			AcknowledgedMessageSequenceNumber: seq, IsSequentialMessage: true})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("AppendAcknowledge = %s, encoding/json = %s", got, want)
		}
		n, ok := ParseAckSequence(got)
		if !ok || n != seq {
			t.Fatalf("ParseAckSequence(%s) = %d, %v", got, n, ok)
		}
	})
}

// FuzzParseFlag: only 4-byte payloads are flags, and they round-trip.
func FuzzParseFlag(f *testing.F) {
	f.Add(EncodeFlag(FlagTerminateSession))
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		fl, err := ParseFlag(p)
		if (err == nil) != (len(p) == 4) {
			t.Fatalf("ParseFlag of %d bytes: %v", len(p), err)
		}
		if err == nil && string(EncodeFlag(fl)) != string(p) {
			t.Fatalf("flag %v does not round-trip", fl)
		}
		_ = fl.String()
	})
}

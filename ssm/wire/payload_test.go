package wire

import (
	"testing"

	"github.com/google/uuid"
)

func TestParseAckSequence(t *testing.T) {
	id := uuid.New()
	for _, seq := range []int64{0, 1, 42, 1 << 40} {
		p := AppendAcknowledge(nil, TypeOutputStreamData, id, seq)
		if got, ok := ParseAckSequence(p); !ok || got != seq {
			t.Fatalf("ParseAckSequence(%s) = %d, %v", p, got, ok)
		}
	}
	for _, c := range []struct {
		p    string
		seq  int64
		want bool
	}{
		// Other layouts fall back to encoding/json.
		{`{"AcknowledgedMessageSequenceNumber":3}`, 3, true},
		{`{"AcknowledgedMessageSequenceNumber": 7 }`, 7, true},
		{`{}`, 0, true},
		{``, 0, false},
		{`{"AcknowledgedMessageType":"x","AcknowledgedMessageSequenceNumber":"3"}`, 0, false},
		{`{"AcknowledgedMessageType":"x","AcknowledgedMessageSequenceNumber":3.5}`, 0, false},
		{`{"AcknowledgedMessageType":"x","AcknowledgedMessageSequenceNumber":99999999999999999999}`, 0, false},
	} {
		if seq, ok := ParseAckSequence([]byte(c.p)); ok != c.want || seq != c.seq {
			t.Errorf("ParseAckSequence(%s) = %d, %v; want %d, %v", c.p, seq, ok, c.seq, c.want)
		}
	}
}

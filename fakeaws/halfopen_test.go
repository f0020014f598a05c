package fakeaws

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// A half-open leg hides the client's frames from the agent, not from the
// validator: what the client sent into the silent leg it did send, so its
// later resends are resends. Before, the validator missed them, took the
// first resend after the episode for a new message out of order
// (sequence-gap) and every later resend of the hidden one for a changed
// retransmission (seen in make soak).
func TestHalfOpenFramesReachTheValidator(t *testing.T) {
	s := New(Options{})
	// The relay's parts of a session, without an agent behind it.
	ss := &session{srv: s, id: "alice-0", maxSeqIn: -1, maxSeqOut: -1}
	ss.val = newValidator(s, ss.id)
	ss.faultsClient = s.faults.forDirection(ss.id, dirClientToAgent)
	frame := func(seq int64) []byte {
		b, err := wire.Encode(&wire.Frame{MessageType: wire.TypeInputStreamData, SchemaVersion: 1,
			CreatedDate: uint64(time.Now().UnixMilli()), SequenceNumber: seq, MessageID: uuid.New(),
			PayloadType: wire.PayloadOutput, Payload: []byte("data")})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	f0, f1 := frame(0), frame(1)
	ss.halfOpen = true
	ss.fromClient(f0) // into the silent leg
	ss.halfOpen = false
	ss.fromClient(f1) // new, in order
	ss.fromClient(f0) // the resend of the hidden one
	for _, v := range s.Violations("error") {
		if v.Code == "sequence-gap" || v.Code == "retransmission-differs" {
			t.Errorf("%s: %s", v.Code, v.Detail)
		}
	}
	if n := s.stats.frames[dirClientToAgent].retransmissions.Load(); n != 1 {
		t.Errorf("retransmissions %d, want 1 (the resend of seq 0)", n)
	}
}

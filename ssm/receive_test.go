package ssm

import (
	"bytes"
	"testing"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// TestReceiverByteBound: what a peer can make the receiver hold is bounded
// in bytes, not only in messages (docs/protocol.md 8.6): out-of-order
// messages beyond the byte limit, oversize payloads and numbers far beyond
// the window are all refused without an ack, and the stream still
// completes once the gap is filled.
func TestReceiverByteBound(t *testing.T) {
	var delivered []byte
	r := newReceiver(receiverLimits{messages: 1000, bytes: 3 * MaxStreamPayload}, func(_ wire.PayloadType, p []byte) bool {
		delivered = append(delivered, p...)
		return true
	})
	big := func(seq int64) []byte { return bytes.Repeat([]byte{byte('a' + seq)}, MaxStreamPayload) }
	for seq := int64(1); seq <= 3; seq++ {
		if v := r.receive(seq, wire.PayloadOutput, big(seq)); v != verdictAck {
			t.Fatalf("seq %d within the byte bound: %v", seq, v)
		}
	}
	// The message count allows it, the bytes do not: no ack.
	if v := r.receive(4, wire.PayloadOutput, big(4)); v != verdictDrop {
		t.Fatalf("seq 4 beyond the byte bound: %v, want drop", v)
	}
	if st := r.stats(); st.Buffered != 3 || st.BufferedBytes != 3*MaxStreamPayload || st.Full != 1 {
		t.Fatalf("stats after the byte bound: %+v", st)
	}
	// Oversize payloads are refused whatever their number, even in order.
	for _, seq := range []int64{0, 5} {
		if v := r.receive(seq, wire.PayloadOutput, make([]byte, MaxStreamPayload+1)); v != verdictOversize {
			t.Fatalf("oversize seq %d: %v", seq, v)
		}
	}
	// Far beyond the window: ignored, nothing stored.
	if v := r.receive(MaxSeqAhead+1, wire.PayloadOutput, []byte("x")); v != verdictDrop {
		t.Fatalf("seq beyond the window: %v", v)
	}
	if v := r.receive(MaxSeqAhead, wire.PayloadOutput, []byte("y")); v != verdictDrop {
		t.Fatalf("seq at the window edge with the buffer full: %v", v)
	}
	if st := r.stats(); st.Oversize != 2 || st.TooFarAhead != 1 || st.Buffered != 3 {
		t.Fatalf("stats after refusals: %+v", st)
	}
	// The gap is filled: everything held drains and the byte count returns
	// to zero, so later messages fit again.
	if v := r.receive(0, wire.PayloadOutput, []byte("0")); v != verdictAck {
		t.Fatalf("seq 0: %v", v)
	}
	if st := r.stats(); st.Expected != 4 || st.Buffered != 0 || st.BufferedBytes != 0 {
		t.Fatalf("after the gap was filled: %+v", st)
	}
	if len(delivered) != 1+3*MaxStreamPayload {
		t.Fatalf("delivered %d bytes", len(delivered))
	}
	if v := r.receive(5, wire.PayloadOutput, big(5)); v != verdictAck {
		t.Fatalf("room again after draining: %v", v)
	}
}

// TestAckQueueBound: acks waiting for a stuck writer are bounded; past the
// bound no ack is queued (the message is then not accepted, see
// handleStreamData) until the writer took the queue.
func TestAckQueueBound(t *testing.T) {
	a := &acks{clk: clock.Or(nil)}
	for i := 0; i < maxQueuedAcks; i++ {
		if !a.ack(int64(i), uuid.New()) {
			t.Fatalf("ack %d refused below the bound", i)
		}
	}
	if !a.full() || a.ack(maxQueuedAcks, uuid.New()) {
		t.Fatal("ack queued beyond the bound")
	}
	a.take()
	if a.full() || !a.ack(maxQueuedAcks, uuid.New()) {
		t.Fatal("no room after the writer took the queue")
	}
}

// TestReackLeavesRoomForNewAcks: after a reconnect at bulk speed, the acks
// of the last reackWindow outnumber the queue. Re-sending them all filled
// it, so every new message (which needs a fresh ack) was refused until the
// writer caught up, and with the leg cut every few hundred milliseconds that
// never happened. Re-acks take at most half the queue, newest first.
func TestReackLeavesRoomForNewAcks(t *testing.T) {
	a := &acks{clk: clock.Or(nil)}
	for i := 0; i < recentAcks; i++ {
		if !a.ack(int64(i), uuid.New()) {
			t.Fatalf("ack %d refused", i)
		}
		if i%1000 == 999 {
			a.take() // the writer keeps up
		}
	}
	a.take()
	n := a.reack(a.clk.Now())
	q := a.take()
	if n != len(q) || n > maxQueuedAcks/2 || n == 0 {
		t.Fatalf("re-acked %d (queued %d), want at most %d", n, len(q), maxQueuedAcks/2)
	}
	if last := q[len(q)-1].seq; last != recentAcks-1 {
		t.Fatalf("last re-ack is for %d, want the newest %d", last, recentAcks-1)
	}
	if a.full() {
		t.Fatal("no room for new acks after a reconnect")
	}
}

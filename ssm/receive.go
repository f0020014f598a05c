package ssm

import (
	"sync"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// DefaultMaxOutOfOrder bounds the messages held ahead of a gap. Beyond it,
// new out-of-order messages are dropped without an ack and the agent resends
// them later.
const DefaultMaxOutOfOrder = 4096

// inMsg is a received stream message held until its turn.
type inMsg struct {
	payloadType wire.PayloadType
	payload     []byte
}

// verdict is what the receiver decided about one incoming stream message.
type verdict int

const (
	verdictDrop      verdict = iota // no ack: invalid, buffer full, or not ready
	verdictAck                      // ack it (new or duplicate)
	verdictDuplicate                // already delivered: re-ack it
)

// receiver is the incoming half of the reliable stream (docs/protocol.md 8.3):
// in-order delivery, selective acks for buffered out-of-order messages, and a
// re-ack for every duplicate.
type receiver struct {
	mu       sync.Mutex
	expected int64
	ooo      map[int64]inMsg
	maxOOO   int
	// deliver hands an in-order message to the session. It returns false when
	// the session is not ready for it; the message is then neither acked nor
	// consumed, and the sender's retransmission brings it again.
	deliver func(pt wire.PayloadType, payload []byte) bool

	duplicates, outOfOrder, notReady int64
}

func newReceiver(maxOOO int, deliver func(wire.PayloadType, []byte) bool) *receiver {
	if maxOOO <= 0 {
		maxOOO = DefaultMaxOutOfOrder
	}
	return &receiver{ooo: make(map[int64]inMsg), maxOOO: maxOOO, deliver: deliver}
}

// receive applies the receive rules to one message. payload is not retained
// unless the message is buffered, in which case it is copied. Delivery of the
// in-order message and of any buffered successors happens inside receive, on
// the caller's goroutine, in sequence order.
func (r *receiver) receive(seq int64, pt wire.PayloadType, payload []byte) verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A buffered message the session was not ready for earlier gets another
	// chance first, so the stream cannot stall on it.
	r.drainLocked()
	switch {
	case seq < r.expected:
		r.duplicates++
		return verdictDuplicate
	case seq > r.expected:
		if _, ok := r.ooo[seq]; ok {
			// A repeat of a buffered message: re-ack, keep one copy.
			r.duplicates++
			return verdictDuplicate
		}
		if len(r.ooo) >= r.maxOOO {
			return verdictDrop
		}
		r.outOfOrder++
		r.ooo[seq] = inMsg{payloadType: pt, payload: append([]byte(nil), payload...)}
		return verdictAck
	}
	if _, ok := r.ooo[seq]; ok {
		// Stored earlier while the session was not ready: a resend.
		r.duplicates++
		return verdictDuplicate
	}
	if !r.deliver(pt, payload) {
		r.notReady++
		// Hold it like an out-of-order message while there is room, so the
		// agent need not resend it; drain delivers it when the session can
		// take it. With no room: no ack, and the agent resends.
		if len(r.ooo) >= r.maxOOO {
			return verdictDrop
		}
		r.ooo[seq] = inMsg{payloadType: pt, payload: append([]byte(nil), payload...)}
		return verdictAck
	}
	r.expected++
	r.drainLocked()
	return verdictAck
}

// drain delivers whatever buffered messages have become deliverable; the
// session calls it when the local reader made room.
func (r *receiver) drain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drainLocked()
}

// drainLocked delivers the expected message and its successors from the
// buffer. They are already acked, so one the session is not ready for stays
// buffered until the next drain; r.mu must be held.
func (r *receiver) drainLocked() {
	for {
		m, ok := r.ooo[r.expected]
		if !ok {
			return
		}
		if !r.deliver(m.payloadType, m.payload) {
			r.notReady++
			return
		}
		delete(r.ooo, r.expected)
		r.expected++
	}
}

// ReceiverStats is a snapshot of the incoming stream.
type ReceiverStats struct {
	Expected                         int64
	Buffered                         int
	Duplicates, OutOfOrder, NotReady int64
}

func (r *receiver) stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ReceiverStats{Expected: r.expected, Buffered: len(r.ooo), Duplicates: r.duplicates, OutOfOrder: r.outOfOrder, NotReady: r.notReady}
}

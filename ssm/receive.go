package ssm

import (
	"sync"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Receive bounds (docs/protocol.md 8.3 and 8.6). A peer can make the client
// hold only what these allow, whatever it sends: the agent's own buffers are
// far larger, but it never needs them towards one client.
const (
	// DefaultMaxOutOfOrder bounds the messages held ahead of a gap. Beyond
	// it, new out-of-order messages are dropped without an ack and the agent
	// resends them later.
	DefaultMaxOutOfOrder = 4096
	// DefaultMaxOutOfOrderBytes bounds the payload bytes held ahead of a gap
	// (or held while the session is not ready), with the same rule: beyond
	// it, no ack. The count bound alone would let 4096 large messages pin a
	// gigabyte.
	DefaultMaxOutOfOrderBytes = 4 << 20
	// MaxStreamPayload is the largest incoming stream payload accepted. The
	// agent cuts data at 1024 bytes and its JSON payloads are small; a larger
	// payload is dropped without an ack.
	MaxStreamPayload = 16 << 10
	// MaxSeqAhead: a sequence number more than this past the next expected
	// one is ignored (no ack, nothing stored). A real agent's messages that
	// far ahead would need thousands of unacked messages in flight.
	MaxSeqAhead = 4096
)

// inMsg is a received stream message held until its turn.
type inMsg struct {
	payloadType wire.PayloadType
	payload     []byte
}

// verdict is what the receiver decided about one incoming stream message.
type verdict int

const (
	verdictDrop      verdict = iota // no ack: buffer full, too far ahead, or not ready
	verdictAck                      // ack it (new or duplicate)
	verdictDuplicate                // already delivered: re-ack it
	verdictOversize                 // payload over MaxStreamPayload: no ack
)

// receiverLimits bound what a receiver holds (docs/protocol.md 8.6).
type receiverLimits struct {
	messages int // out-of-order (and not-ready) messages held
	bytes    int // their payload bytes
}

// receiver is the incoming half of the reliable stream (docs/protocol.md 8.3):
// in-order delivery, selective acks for buffered out-of-order messages, and a
// re-ack for every duplicate.
type receiver struct {
	mu       sync.Mutex
	expected int64
	ooo      map[int64]inMsg
	held     int // payload bytes in ooo
	limits   receiverLimits
	// deliver hands an in-order message to the session. It returns false when
	// the session is not ready for it; the message is then neither acked nor
	// consumed, and the sender's retransmission brings it again.
	deliver func(pt wire.PayloadType, payload []byte) bool

	duplicates, outOfOrder, notReady int64
	// Refusals: payload too large, sequence number too far ahead, no room.
	oversize, tooFarAhead, full int64
}

func newReceiver(limits receiverLimits, deliver func(wire.PayloadType, []byte) bool) *receiver {
	if limits.messages <= 0 {
		limits.messages = DefaultMaxOutOfOrder
	}
	if limits.bytes <= 0 {
		limits.bytes = DefaultMaxOutOfOrderBytes
	}
	return &receiver{ooo: make(map[int64]inMsg), limits: limits, deliver: deliver}
}

// roomFor reports whether a message of n payload bytes may be held; r.mu
// must be held.
func (r *receiver) roomFor(n int) bool {
	if len(r.ooo) >= r.limits.messages || r.held+n > r.limits.bytes {
		r.full++
		return false
	}
	return true
}

// holdLocked stores a copy of the message; r.mu must be held and roomFor
// must have said yes.
func (r *receiver) holdLocked(seq int64, pt wire.PayloadType, payload []byte) {
	r.ooo[seq] = inMsg{payloadType: pt, payload: append([]byte(nil), payload...)}
	r.held += len(payload)
}

// receive applies the receive rules to one message. payload is not retained
// unless the message is buffered, in which case it is copied. Delivery of the
// in-order message and of any buffered successors happens inside receive, on
// the caller's goroutine, in sequence order.
func (r *receiver) receive(seq int64, pt wire.PayloadType, payload []byte) verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(payload) > MaxStreamPayload {
		// Checked first: an oversize message is never acked, whatever its
		// number, so a peer cannot learn that one got through.
		r.oversize++
		return verdictOversize
	}
	// A buffered message the session was not ready for earlier gets another
	// chance first, so the stream cannot stall on it.
	r.drainLocked()
	switch {
	case seq < r.expected:
		r.duplicates++
		return verdictDuplicate
	case seq > r.expected+MaxSeqAhead:
		r.tooFarAhead++
		return verdictDrop
	case seq > r.expected:
		if _, ok := r.ooo[seq]; ok {
			// A repeat of a buffered message: re-ack, keep one copy.
			r.duplicates++
			return verdictDuplicate
		}
		if !r.roomFor(len(payload)) {
			return verdictDrop
		}
		r.outOfOrder++
		r.holdLocked(seq, pt, payload)
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
		if !r.roomFor(len(payload)) {
			return verdictDrop
		}
		r.holdLocked(seq, pt, payload)
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
		r.held -= len(m.payload)
		r.expected++
	}
}

// ReceiverStats is a snapshot of the incoming stream.
type ReceiverStats struct {
	Expected                         int64
	Buffered                         int // messages held
	BufferedBytes                    int // their payload bytes
	Duplicates, OutOfOrder, NotReady int64
	// Dropped without an ack: payload over MaxStreamPayload, sequence
	// number over MaxSeqAhead past the expected one, no room to hold it.
	Oversize, TooFarAhead, Full int64
}

func (r *receiver) stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ReceiverStats{Expected: r.expected, Buffered: len(r.ooo), BufferedBytes: r.held,
		Duplicates: r.duplicates, OutOfOrder: r.outOfOrder, NotReady: r.notReady,
		Oversize: r.oversize, TooFarAhead: r.tooFarAhead, Full: r.full}
}

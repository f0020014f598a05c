package ssm

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// The session's acknowledgements (docs/protocol.md 8.3): one record per
// received stream message, queued for whichever leg writes next, and
// remembered for a few seconds so that acks lost with a dead leg are sent
// again on the next one. The leg's writer encodes each record straight into
// its websocket batch (ackEncoder): no frame is built, copied or
// pooled on the reader's side.

// reackWindow: after a reconnect, acks sent this shortly before the last leg
// died are sent again. Acks in flight when a leg dies are lost; the agent
// resends only the oldest unacked message, one per tick, so each lost ack
// would otherwise cost a full resend cycle in sequence (minutes after a busy
// drop).
const (
	reackWindow = 3 * time.Second
	recentAcks  = 8192
)

// maxQueuedAcks bounds the acks waiting for a writer (docs/protocol.md
// 8.6). A peer that floods us with messages while it reads nothing (so our
// writer is stuck) would otherwise grow the queue without end; a message
// that arrives while it is full is dropped unacked, and the peer resends it.
const maxQueuedAcks = 8192

// acks is the session's ack machinery: the queue the legs write from and
// the ring of recent acks.
type acks struct {
	clk clock.Clock

	// mu guards the queue and the ring: one lock per ack on the hot path.
	mu     sync.Mutex
	queue  []ackRecord
	queued atomic.Int32 // len(queue), for full without the lock
	spare  []ackRecord  // the previous batch's storage (take)
	ring   [recentAcks]ackRecord
	next   int
	n      int
}

// ackRecord is one acknowledge: the output_stream_data message it
// acknowledges, and when it was (first) queued, its CreatedDate.
type ackRecord struct {
	seq int64
	id  uuid.UUID
	at  time.Time
}

// ack queues the acknowledge for message seq/id and remembers it. It
// reports whether an ack was queued.
func (a *acks) ack(seq int64, id uuid.UUID) bool {
	rec := ackRecord{seq: seq, id: id, at: a.clk.Now()}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.pushLocked(rec) {
		return false
	}
	a.ring[a.next] = rec
	a.next = (a.next + 1) % recentAcks
	a.n = min(a.n+1, recentAcks)
	return true
}

// full reports whether the queue is at maxQueuedAcks: the message that
// would need the next ack is better not accepted at all.
func (a *acks) full() bool { return a.queued.Load() >= maxQueuedAcks }

// pushLocked queues rec unless the queue is full; a.mu must be held.
func (a *acks) pushLocked(rec ackRecord) bool {
	if len(a.queue) >= maxQueuedAcks {
		return false
	}
	a.queue = append(a.queue, rec)
	a.queued.Store(int32(len(a.queue)))
	return true
}

// take returns the queued records and empties the queue. The queue's
// storage alternates between two slices, so a busy session allocates
// none: the caller is done with the previous batch when it takes the next
// (the current leg's writer is the only taker).
func (a *acks) take() []ackRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	q := a.queue
	a.queue = a.spare[:0]
	a.spare = q
	a.queued.Store(0)
	return q
}

// clear drops the queue: acks meant for a dead leg are re-sent from the ring.
func (a *acks) clear() {
	a.mu.Lock()
	a.queue = nil
	a.spare = nil
	a.queued.Store(0)
	a.mu.Unlock()
}

// since returns the distinct records newer than t, oldest first.
func (a *acks) since(t time.Time) []ackRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := make(map[int64]bool)
	var out []ackRecord
	for i := 0; i < a.n; i++ {
		rec := a.ring[(a.next-a.n+i+recentAcks)%recentAcks]
		if rec.at.After(t) && !seen[rec.seq] {
			seen[rec.seq] = true
			out = append(out, rec)
		}
	}
	return out
}

// reack queues acks again for everything acked within reackWindow before
// legDied (however long the resume took), and returns how many. Re-acks are
// best effort and take at most half the queue, the most recent first (those
// were the likeliest in flight): at bulk speed 3 s of acks outnumber the
// queue, and a queue full of re-acks after every reconnect would refuse the
// new messages that need a fresh ack (handleStreamData), so a session whose
// leg is cut every few hundred milliseconds stalled (ssm race tests under
// load saw missing-ack from the fake).
func (a *acks) reack(legDied time.Time) int {
	if legDied.IsZero() {
		legDied = a.clk.Now()
	}
	recs := a.since(legDied.Add(-reackWindow))
	a.mu.Lock()
	room := maxQueuedAcks/2 - len(a.queue)
	a.mu.Unlock()
	if room <= 0 {
		return 0
	}
	if len(recs) > room {
		recs = recs[len(recs)-room:]
	}
	now := a.clk.Now()
	a.mu.Lock()
	for _, rec := range recs {
		rec.at = now
		a.pushLocked(rec)
	}
	a.mu.Unlock()
	return len(recs)
}

// outbox is what a session offers its legs to write (legOutbox): its acks
// first, then the stream's messages that are due. wake signals the writer
// of the current leg.
type outbox struct {
	acks *acks
	send *sender
	kick chan struct{}
}

func newOutbox(a *acks, send *sender) *outbox {
	return &outbox{acks: a, send: send, kick: make(chan struct{}, 1)}
}

func (o *outbox) wake()                   { signal(o.kick) }
func (o *outbox) wakeup() <-chan struct{} { return o.kick }
func (o *outbox) takeAcks() []ackRecord   { return o.acks.take() }
func (o *outbox) emitDue(now time.Time, max int, emit func([]byte)) int {
	return o.send.emitDue(now, max, emit)
}
func (o *outbox) nextDue() time.Time { return o.send.nextDeadline() }

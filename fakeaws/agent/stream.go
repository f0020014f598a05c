package agent

import (
	"math"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// RTT estimator constants, identical in the agent and the plugin
// (docs/protocol.md section 8.4).
const (
	initialRTO       = 200 * time.Millisecond
	initialSRTT      = 100 * time.Millisecond
	rttAlpha         = 1.0 / 8
	rttBeta          = 1.0 / 4
	clockGranularity = 10 * time.Millisecond
	maxRTO           = time.Second
)

// outEntry is one sequenced output message. frame is nil once the message
// has been acked, or when it was never stored because the buffer was full.
type outEntry struct {
	frame    []byte
	lastSent time.Time
}

// outBuffer is the agent's outgoing message buffer: every sequenced message
// stays in it, byte for byte, until the client acks exactly that sequence
// number (acks are selective, docs/protocol.md section 8.2).
//
// Entries are kept in a slice indexed by seq-base, so an ack is O(1) and the
// oldest unacked message is always ents[0]; acked entries ahead of the head
// are dropped as soon as the head is acked.
type outBuffer struct {
	mu   sync.Mutex
	base int64 // sequence number of ents[0]
	ents []outEntry
	live int // stored, unacked messages (what the capacity bounds)
	cap  int

	// RTT estimator in float64 nanoseconds, as the real agent computes it.
	srtt   float64
	rttvar float64
	rto    time.Duration
}

func newOutBuffer(capacity int) *outBuffer {
	return &outBuffer{cap: capacity, srtt: float64(initialSRTT), rto: initialRTO}
}

// add records message seq, sent (or due to be sent) at now. When the buffer
// already holds cap unacked messages the message is not stored, exactly as the
// real agent does: it is sent once and can never be retransmitted.
func (o *outBuffer) add(seq int64, frame []byte, now time.Time) (stored bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.ents) == 0 {
		o.base = seq
	}
	e := outEntry{lastSent: now}
	if o.live < o.cap {
		e.frame = frame
		o.live++
		stored = true
	}
	o.ents = append(o.ents, e)
	o.trim()
	return stored
}

// ack removes message seq and feeds the RTT estimator. It reports whether seq
// was an unacked stored message; acks for anything else are ignored.
func (o *outBuffer) ack(seq int64, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := seq - o.base
	if i < 0 || i >= int64(len(o.ents)) || o.ents[i].frame == nil {
		return false
	}
	// The agent's sample is measured from the LAST send (it updates the send
	// time on every retransmission), unlike the plugin's.
	o.sample(now.Sub(o.ents[i].lastSent))
	o.ents[i].frame = nil
	o.live--
	o.trim()
	return true
}

// sample updates SRTT, RTTVAR and RTO with one round-trip sample
// (RFC 6298 style, constants of docs/protocol.md section 8.4). o.mu must be held.
func (o *outBuffer) sample(r time.Duration) {
	rtt := float64(r)
	o.rttvar = (1-rttBeta)*o.rttvar + rttBeta*math.Abs(o.srtt-rtt)
	o.srtt = (1-rttAlpha)*o.srtt + rttAlpha*rtt
	o.rto = time.Duration(o.srtt + math.Max(float64(clockGranularity), 4*o.rttvar))
	if o.rto > maxRTO {
		o.rto = maxRTO
	}
}

// trim drops acked and never-stored entries from the head. o.mu must be held.
func (o *outBuffer) trim() {
	n := 0
	for n < len(o.ents) && o.ents[n].frame == nil {
		n++
	}
	if n == 0 {
		return
	}
	clear(o.ents[:n])
	o.ents = o.ents[n:]
	o.base += int64(n)
}

// expired appends to dst the frames due for retransmission at now and marks
// them as sent. Head-only (the real agent): only the oldest unacked message is
// considered, so at most one resend per tick. all: every expired message.
func (o *outBuffer) expired(now time.Time, all bool, dst [][]byte) [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.ents {
		e := &o.ents[i]
		if e.frame != nil && now.Sub(e.lastSent) > o.rto {
			e.lastSent = now
			dst = append(dst, e.frame)
		}
		if !all {
			break // ents[0] is always the head after trim
		}
	}
	return dst
}

// len returns the number of stored, unacked messages.
func (o *outBuffer) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.live
}

// currentRTO returns the retransmission timeout in force.
func (o *outBuffer) currentRTO() time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rto
}

// sendStream sequences a new output_stream_data message, keeps it for
// retransmission and writes it unless publication is paused. sendMu makes
// sequence order and queue order the same.
func (s *session) sendStream(pt wire.PayloadType, payload []byte) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	seq := s.nextSeq
	s.nextSeq++
	var flags uint64
	if seq == 0 {
		flags = wire.FlagSYN // the agent's first stream message carries SYN
	}
	frame := s.encodeFrame(wire.TypeOutputStreamData, seq, flags, pt, payload)
	if frame == nil {
		return
	}
	s.out.add(seq, frame, s.clk.Now())
	s.stats.DataMessagesOut.Add(1)
	if s.paused.Load() {
		// Paused: keep sequencing and buffering, write nothing; the resend
		// tick delivers it once publication resumes (docs/protocol.md 8.8).
		return
	}
	s.write(outFrame{b: frame})
}

// resendLoop is the agent's retransmission scheduler: every 100 ms, unless
// paused, it resends what has been unacked for longer than the RTO. It never
// gives up.
func (s *session) resendLoop() {
	t := s.clk.NewTimer(resendTick)
	defer t.Stop()
	var frames [][]byte
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C():
		}
		// While the leg is down there is nothing to write to; leaving the
		// send times alone lets the first tick after a reconnect resend.
		if !s.paused.Load() && s.link.Load() != nil {
			frames = s.out.expired(s.clk.Now(), s.q.ResendAllExpired, frames[:0])
			for _, f := range frames {
				s.write(outFrame{b: f})
			}
			s.stats.Retransmissions.Add(int64(len(frames)))
			clear(frames)
		}
		t.Reset(resendTick)
	}
}

// inMsg is an out-of-order input message waiting for its predecessors.
type inMsg struct {
	id      uuid.UUID
	pt      wire.PayloadType
	payload []byte
}

// handleInput applies the agent's receive rules (docs/protocol.md section 8.3) to
// one input_stream_data frame. It runs on the reader goroutine and processes
// synchronously, so a blocked target write back-pressures the channel.
func (s *session) handleInput(f *wire.Frame) {
	s.setPaused(false)
	if f.SequenceNumber == s.expected && f.PayloadType == wire.PayloadOutput && len(s.inBuf) == 0 && s.deferOutput(f) {
		return
	}
	// Everything else sees the target exactly as the real agent would: the
	// deferred writes happen (or fail and rewind) first.
	s.flushTarget()
	if len(s.inBuf) > 0 {
		// A buffered successor whose processing failed earlier was already
		// acked and will not be retransmitted; retry it before anything else.
		s.drainIncoming()
	}
	seq := f.SequenceNumber
	switch {
	case seq == s.expected:
		if !s.process(f.PayloadType, f.Payload) {
			// Not ready: no ack, no advance; the client retransmits.
			s.stats.DroppedNotReady.Add(1)
			return
		}
		s.sendAck(f.MessageID, seq)
		s.deliverHandshake()
		s.expected++
		s.drainIncoming()
	case seq > s.expected:
		if _, ok := s.inBuf[seq]; !ok {
			if len(s.inBuf) >= s.q.IncomingBufferCap {
				s.log.Warn("incoming buffer full; dropping out-of-order message", "seq", seq)
				return // no ack: the client retransmits
			}
			s.inBuf[seq] = inMsg{id: f.MessageID, pt: f.PayloadType, payload: append([]byte(nil), f.Payload...)}
		}
		s.stats.OutOfOrderIn.Add(1)
		s.sendAck(f.MessageID, seq) // acked at once, processed later
	default:
		s.stats.DuplicatesIn.Add(1)
		if !s.q.NoReackDuplicates {
			s.sendAck(f.MessageID, seq)
			s.stats.DuplicatesReacked.Add(1)
		}
	}
}

// drainIncoming processes buffered messages that have become in order.
func (s *session) drainIncoming() {
	for {
		m, ok := s.inBuf[s.expected]
		if !ok || !s.process(m.pt, m.payload) {
			return
		}
		s.deliverHandshake() // buffered messages were acked on arrival
		delete(s.inBuf, s.expected)
		s.expected++
	}
}

// handleAck removes the acked message from the outgoing buffer.
func (s *session) handleAck(f *wire.Frame) {
	s.setPaused(false)
	s.stats.AcksIn.Add(1)
	seq, ok := wire.ParseAckSequence(f.Payload)
	if !ok {
		_, err := wire.ParseAcknowledge(f.Payload) // only for the reason
		s.log.Warn("dropping unparsable acknowledge", "err", err)
		return
	}
	s.out.ack(seq, s.clk.Now())
}

// sendAck acknowledges one input message.
func (s *session) sendAck(id uuid.UUID, seq int64) {
	s.write(outFrame{ack: true, ackID: id, ackSeq: seq})
	s.stats.AcksOut.Add(1)
}

// setPaused records pause_publication (true) or its clearing (false). The
// fast path is one atomic load, because every input frame and ack clears it.
func (s *session) setPaused(p bool) {
	if s.paused.Load() == p {
		return
	}
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	switch {
	case p && !s.paused.Load():
		s.resumed = make(chan struct{})
		s.paused.Store(true)
	case !p && s.paused.Load():
		s.paused.Store(false)
		close(s.resumed)
	}
}

// waitUnpaused blocks while publication is paused. It reports false if done
// closed first.
func (s *session) waitUnpaused(done <-chan struct{}) bool {
	if !s.paused.Load() {
		return true
	}
	s.pauseMu.Lock()
	ch, p := s.resumed, s.paused.Load()
	s.pauseMu.Unlock()
	if !p {
		return true
	}
	select {
	case <-ch:
		return true
	case <-done:
		return false
	}
}

// targetBatchLimit bounds the Output bytes whose target write is deferred.
const targetBatchLimit = 64 << 10

// deferredAck is the ack of a message whose target write is pending.
type deferredAck struct {
	id  uuid.UUID
	seq int64
}

// deferOutput takes an in-order Output message for a connected target
// without writing it yet: its bytes join the pending target write and its
// ack waits for that write. flushTarget runs before the reader blocks for
// more websocket data (batchConn's read hook), before any other message is
// handled, and when the batch is full. The outcome on the wire is the real
// agent's (ack only after a successful target write, no advance on failure)
// at one target write per burst instead of one per 1 KiB message.
func (s *session) deferOutput(f *wire.Frame) bool {
	if !s.hsComplete.Load() {
		return false
	}
	p := s.port.Load()
	if p == nil || !p.connected() {
		return false // let process decide: not ready, or redial
	}
	s.tbuf = append(s.tbuf, f.Payload...)
	s.tacks = append(s.tacks, deferredAck{id: f.MessageID, seq: f.SequenceNumber})
	s.expected++
	if len(s.tbuf) >= targetBatchLimit {
		s.flushTarget()
	}
	return true
}

// flushTarget writes the deferred Output bytes and sends their acks. If the
// write fails the stream rewinds to the first deferred message and nothing
// is acked, exactly as if each message had been refused as not ready; the
// client retransmits them. Reader goroutine only.
func (s *session) flushTarget() {
	if len(s.tacks) == 0 {
		return
	}
	p := s.port.Load()
	if p != nil && p.handle(wire.PayloadOutput, s.tbuf) {
		for _, a := range s.tacks {
			s.sendAck(a.id, a.seq)
		}
	} else {
		s.expected = s.tacks[0].seq
		s.stats.DroppedNotReady.Add(int64(len(s.tacks)))
	}
	s.tbuf = s.tbuf[:0]
	s.tacks = s.tacks[:0]
}

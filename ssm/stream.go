package ssm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Retransmission constants. The estimator uses the agent's and plugin's
// constants (docs/protocol.md section 8.4) so both ends reason alike; the bounds
// are ssmproxy's own.
const (
	initialRTO       = 200 * time.Millisecond
	initialSRTT      = 100 * time.Millisecond
	clockGranularity = 10 * time.Millisecond
	// DefaultMinRTO keeps a loaded machine's scheduling hiccups from turning
	// into retransmission storms; the agent uses 200 ms as its first RTO.
	DefaultMinRTO = 200 * time.Millisecond
	// DefaultMaxRTO is the agent's cap on the estimated RTO.
	DefaultMaxRTO = time.Second
	// maxBackoff bounds the per-message exponential backoff of Karn's rule.
	maxBackoff = 8 * time.Second
)

// Flow-control defaults (docs/protocol.md section 14, item 3). The window stays far
// below the agent's 100 000-message incoming buffer.
const (
	DefaultInitialWindow  = 64
	DefaultMinWindow      = 16
	DefaultMaxWindow      = 4096
	DefaultMaxWindowBytes = 2 << 20
	// DefaultMaxSpan bounds how far new sequence numbers may run ahead of
	// the oldest unacked message. Selective acks could otherwise let the
	// span grow behind one stuck message past the agent's 100 000-message
	// incoming buffer, beyond which it drops without acking.
	DefaultMaxSpan = 16384
)

// ErrStreamClosed is returned by writes after the stream was shut down.
var ErrStreamClosed = errors.New("stream closed")

// StreamConfig tunes the outgoing half of the reliable stream.
type StreamConfig struct {
	InitialWindow  int // messages
	MinWindow      int
	MaxWindow      int
	MaxWindowBytes int
	MaxSpan        int // messages between the oldest unacked and the newest
	MinRTO         time.Duration
	MaxRTO         time.Duration
}

// withDefaults fills zero fields, each with its default moved only as far
// as the fields that were set require (MaxWindow 8 alone gets MinWindow 8);
// it never changes a value that was set.
func (c StreamConfig) withDefaults() StreamConfig {
	if c.MaxWindow == 0 {
		c.MaxWindow = max(DefaultMaxWindow, c.InitialWindow, c.MinWindow)
	}
	if c.MinWindow == 0 {
		c.MinWindow = min(DefaultMinWindow, c.MaxWindow)
		if c.InitialWindow > 0 {
			c.MinWindow = min(c.MinWindow, c.InitialWindow)
		}
	}
	if c.InitialWindow == 0 {
		c.InitialWindow = min(max(DefaultInitialWindow, c.MinWindow), c.MaxWindow)
	}
	if c.MaxWindowBytes == 0 {
		c.MaxWindowBytes = DefaultMaxWindowBytes
	}
	if c.MaxSpan == 0 {
		c.MaxSpan = max(DefaultMaxSpan, c.MaxWindow)
	}
	if c.MaxRTO == 0 {
		c.MaxRTO = max(DefaultMaxRTO, c.MinRTO)
	}
	if c.MinRTO == 0 {
		c.MinRTO = min(DefaultMinRTO, c.MaxRTO)
	}
	return c
}

// Verify reports the settings that cannot work together.
func (c StreamConfig) Verify() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.MinWindow <= 0 || c.InitialWindow < c.MinWindow || c.MaxWindow < c.InitialWindow {
		bad("stream window must satisfy 0 < min %d <= initial %d <= max %d", c.MinWindow, c.InitialWindow, c.MaxWindow)
	}
	if c.MaxWindowBytes < wire.MaxPayload {
		bad("stream window of %d bytes is smaller than one message (%d)", c.MaxWindowBytes, wire.MaxPayload)
	}
	if c.MaxSpan < c.MaxWindow {
		bad("stream span %d is below the window %d", c.MaxSpan, c.MaxWindow)
	}
	if c.MinRTO <= 0 || c.MaxRTO < c.MinRTO {
		bad("stream RTO bounds must satisfy 0 < min %s <= max %s", c.MinRTO, c.MaxRTO)
	}
	return errors.Join(errs...)
}

// outMsg is one sequenced message awaiting its ack.
type outMsg struct {
	seq   int64
	frame []byte // exact bytes; retransmissions reuse them
	// buf is frame's storage when it came from frameBufs; it goes back
	// there when the message is acked. Frames are read only under the
	// sender's lock (emitDue), so nothing reads a recycled one.
	buf      *frameBuf
	size     int // payload bytes
	sends    int
	lastSent time.Time
	deadline time.Time // retransmit when now >= deadline (zero: never sent)
	acked    bool
}

// sender is the outgoing half of the reliable stream: sequence numbers from 0
// that survive reconnects, a bounded window fed by selective acks, and
// per-message retransmission timers with Karn's rule.
type sender struct {
	cfg   StreamConfig
	clock clock.Clock
	// messageType is input_stream_data for a client.
	messageType string

	mu        sync.Mutex
	next      int64    // next sequence number to assign
	base      int64    // sequence number of q[0]
	q         []outMsg // every unacked message (and acked ones not yet trimmed), by seq
	unsent    int64    // first sequence number never transmitted
	live      int      // unacked messages
	bytes     int      // unacked payload bytes
	cwnd      float64
	ssthresh  float64
	lastCut   time.Time
	paused    bool
	lastProbe time.Time
	closed    error
	sealed    bool          // no more Output: the session is closing
	space     chan struct{} // closed and replaced when the window opens
	waiting   bool          // someone holds space: an ack that leaves room for a batch (or nothing unacked) closes it
	hint      time.Time     // no retransmission is due before this
	ids       *ids          // message ids, under mu
	// onBusy, if set, is told when the first message becomes unacked and
	// when the last one is acked (no-progress detection, progress.go). It
	// is called with mu held and must not call back into the sender.
	onBusy func(busy bool)

	// RTT estimator (RFC 6298 with the agent's constants).
	srtt, rttvar, rto time.Duration

	// Counters.
	retransmits int64
	sentNew     int64
	timeouts    int64
	probes      int64
}

func newSender(cfg StreamConfig, clk clock.Clock, messageType string) *sender {
	cfg = cfg.withDefaults()
	return &sender{
		cfg: cfg, clock: clk, messageType: messageType,
		cwnd: float64(cfg.InitialWindow), ssthresh: float64(cfg.MaxWindow),
		space: make(chan struct{}),
		srtt:  initialSRTT, rto: initialRTO,
		ids: newIDs(),
	}
}

// enqueue assigns the next sequence number to payload and stores it for
// transmission, waiting while the window is full. The payload must be
// non-empty and at most wire.MaxPayload bytes for data; it is copied.
func (s *sender) enqueue(ctx context.Context, pt wire.PayloadType, payload []byte) error {
	if len(payload) == 0 {
		return errors.New("ssm: refusing to send an empty payload")
	}
	for {
		s.mu.Lock()
		if s.closed != nil {
			err := s.closed
			s.mu.Unlock()
			return err
		}
		if s.sealed && pt == wire.PayloadOutput {
			s.mu.Unlock()
			return errSealed
		}
		if s.live < int(s.cwnd) && (s.bytes+len(payload) <= s.cfg.MaxWindowBytes || s.live == 0) &&
			s.next-s.base < int64(s.cfg.MaxSpan) {
			break
		}
		wait := s.space
		s.waiting = true
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer s.mu.Unlock()
	seq := s.next
	n := wire.FrameHeaderSize + len(payload)
	var buf *frameBuf
	var frame []byte
	if n <= len(frameBuf{}) {
		buf = frameBufs.Get().(*frameBuf)
		frame = buf[:n]
	} else {
		frame = make([]byte, n)
	}
	err := wire.EncodeInto(frame, &wire.Frame{
		MessageType:    s.messageType,
		SchemaVersion:  wire.SchemaVersion,
		CreatedDate:    uint64(s.clock.Now().UnixMilli()),
		SequenceNumber: seq,
		Flags:          0,
		MessageID:      s.ids.uuid(),
		PayloadType:    pt,
		Payload:        payload,
	})
	if err != nil {
		if buf != nil {
			frameBufs.Put(buf)
		}
		return err
	}
	s.next++
	s.q = append(s.q, outMsg{seq: seq, frame: frame, buf: buf, size: len(payload)})
	if s.live == 0 && s.onBusy != nil {
		s.onBusy(true)
	}
	s.live++
	s.bytes += len(payload)
	return nil
}

// emitDue hands emit the frames to transmit now, oldest first: every
// message whose retransmission timer expired, then messages never sent, at
// most max. While paused it emits at most one probe per probe interval
// (probe, pause.go). emit runs under the sender's lock and must not keep
// the frame: its storage is recycled once the message is acked. It
// returns how many frames it emitted.
func (s *sender) emitDue(now time.Time, max int, emit func([]byte)) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		if f := s.probe(now); f != nil {
			emit(f)
			return 1
		}
		return 0
	}
	out := 0
	if !now.Before(s.hint) && s.unsent > s.base {
		// Scan the transmitted part for expired timers.
		expired := false
		next := time.Time{}
		limit := int(s.unsent - s.base)
		for i := 0; i < limit && i < len(s.q); i++ {
			m := &s.q[i]
			if m.acked {
				continue
			}
			if !now.Before(m.deadline) {
				if out >= max {
					next = now
					break
				}
				expired = true
				s.retransmits++
				s.transmit(m, now)
				emit(m.frame)
				out++
			}
			if next.IsZero() || m.deadline.Before(next) {
				next = m.deadline
			}
		}
		if next.IsZero() {
			next = now.Add(s.rto)
		}
		s.hint = next
		if expired {
			s.onTimeout(now)
		}
	}
	for out < max && s.unsent < s.next {
		i := int(s.unsent - s.base)
		s.unsent++
		if i < 0 {
			continue
		}
		m := &s.q[i]
		if m.acked {
			continue
		}
		s.sentNew++
		s.transmit(m, now)
		emit(m.frame)
		out++
		if m.deadline.Before(s.hint) || s.hint.IsZero() {
			s.hint = m.deadline
		}
	}
	return out
}

// frameBuf holds one data frame: the header and up to wire.MaxPayload
// bytes. An upload makes one per 1024 bytes and keeps it until the ack;
// recycling them took the garbage collector out of the upload's profile.
type frameBuf [wire.FrameHeaderSize + wire.MaxPayload]byte

var frameBufs = sync.Pool{New: func() any { return new(frameBuf) }}

// transmit records one (re)transmission of m; s.mu must be held.
func (s *sender) transmit(m *outMsg, now time.Time) {
	m.sends++
	m.lastSent = now
	// Karn's rule: a retransmitted message backs off its own timeout.
	timeout := s.rto << (m.sends - 1)
	if timeout > maxBackoff || timeout <= 0 {
		timeout = maxBackoff
	}
	m.deadline = now.Add(timeout)
}

// onTimeout shrinks the window after a retransmission timeout, at most once
// per RTO so one burst of losses counts once; s.mu must be held.
func (s *sender) onTimeout(now time.Time) {
	s.timeouts++
	if now.Sub(s.lastCut) < s.rto {
		return
	}
	s.lastCut = now
	s.ssthresh = s.cwnd / 2
	if s.ssthresh < float64(s.cfg.MinWindow) {
		s.ssthresh = float64(s.cfg.MinWindow)
	}
	s.cwnd = s.ssthresh
}

// ack removes the message with sequence number seq. Unknown numbers are
// ignored (docs/protocol.md section 8.2). It reports whether the ack was new.
func (s *sender) ack(seq int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := seq - s.base
	if i < 0 || i >= int64(len(s.q)) || s.q[i].acked {
		return false
	}
	m := &s.q[i]
	if m.sends == 0 {
		// Acked before we sent it: impossible from a correct peer.
		return false
	}
	m.acked = true
	m.frame = nil
	if m.buf != nil {
		frameBufs.Put(m.buf)
		m.buf = nil
	}
	s.live--
	if s.live == 0 && s.onBusy != nil {
		s.onBusy(false)
	}
	s.bytes -= m.size
	if m.sends == 1 {
		s.sample(s.clock.Now().Sub(m.lastSent))
	}
	// Grow: exponentially below ssthresh, then by about one message per window.
	if s.cwnd < s.ssthresh {
		s.cwnd++
	} else {
		s.cwnd += 1 / s.cwnd
	}
	if s.cwnd > float64(s.cfg.MaxWindow) {
		s.cwnd = float64(s.cfg.MaxWindow)
	}
	// Trim acknowledged messages off the front.
	k := 0
	for k < len(s.q) && s.q[k].acked {
		s.q[k] = outMsg{}
		k++
	}
	if k > 0 {
		s.q = s.q[k:]
		s.base += int64(k)
		if s.unsent < s.base {
			s.unsent = s.base
		}
	}
	if s.waiting && (s.live == 0 || s.roomFor(s.wakeRoom())) {
		// Only when someone waits (a channel per ack was an allocation per
		// message), and only once there is room for a batch: a writer
		// woken for every ack of a full window wrote one message per
		// wakeup (docs/bench.md, "Writing frames"). With everything acked
		// it is woken whatever the room, so it never waits for nothing.
		close(s.space)
		s.space = make(chan struct{})
		s.waiting = false
	}
	return true
}

// wakeRoom is how many messages' room wakes a writer waiting for the
// window: a quarter of the window, at most 32, at least one; s.mu must be
// held.
func (s *sender) wakeRoom() int {
	return max(1, min(32, int(s.cwnd)/4, s.cfg.MaxWindowBytes/wire.MaxPayload/4))
}

// roomFor reports whether k more messages of up to wire.MaxPayload bytes
// fit the window, its bytes and the span; s.mu must be held.
func (s *sender) roomFor(k int) bool {
	return s.live+k <= int(s.cwnd) && s.bytes+k*wire.MaxPayload <= s.cfg.MaxWindowBytes &&
		s.next-s.base+int64(k) <= int64(s.cfg.MaxSpan)
}

// sample feeds one RTT measurement into the estimator (RFC 6298 2.3 with the
// agent's gains and granularity); s.mu must be held.
func (s *sender) sample(r time.Duration) {
	if r < 0 {
		r = 0
	}
	d := s.srtt - r
	if d < 0 {
		d = -d
	}
	s.rttvar = (3*s.rttvar + d) / 4
	s.srtt = (7*s.srtt + r) / 8
	v := 4 * s.rttvar
	if v < clockGranularity {
		v = clockGranularity
	}
	s.rto = s.srtt + v
	if s.rto < s.cfg.MinRTO {
		s.rto = s.cfg.MinRTO
	}
	if s.rto > s.cfg.MaxRTO {
		s.rto = s.cfg.MaxRTO
	}
}

// retransmitAll makes every unacked message due now (after a reconnect).
func (s *sender) retransmitAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hint = time.Time{}
	for i := range s.q {
		if m := &s.q[i]; !m.acked && m.sends > 0 {
			m.deadline = time.Time{}
		}
	}
}

// nextDeadline is when due must be called again even without new data.
func (s *sender) nextDeadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live == 0 {
		return time.Time{}
	}
	if s.paused {
		return s.lastProbe.Add(pausedProbeInterval)
	}
	if s.hint.IsZero() {
		// Nothing scheduled yet: look now.
		return s.clock.Now()
	}
	return s.hint
}

// pending reports whether anything is unacked, and whether anything was never
// transmitted.
func (s *sender) pending() (unacked int, unsent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live, s.unsent < s.next
}

// changed returns a channel closed once an ack leaves room for a batch of
// messages (wakeRoom) or nothing unacked, or the stream is sealed or
// closed, for waiting.
func (s *sender) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting = true
	return s.space
}

// errSealed refuses Output after seal.
var errSealed = errors.New("stream sealed: the session is closing")

// seal refuses every later Output, including writes waiting for window
// room, while control messages (the TerminateSession flag) still go out.
// Closing seals first, so that nothing the agent would discard follows
// the flag (docs/protocol.md 14, item 11).
func (s *sender) seal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sealed {
		s.sealed = true
		close(s.space)
		s.space = make(chan struct{})
	}
}

func (s *sender) close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed == nil {
		s.closed = err
		close(s.space)
		s.space = make(chan struct{})
	}
}

// SenderStats is a snapshot of the outgoing stream.
type SenderStats struct {
	Sent, Retransmits, Timeouts int64
	// Probes counts the frames sent while paused (docs/protocol.md 8.8).
	Probes                int64
	Paused                bool
	Unacked, UnackedBytes int
	Window                int
	RTO, SRTT             time.Duration
}

func (s *sender) stats() SenderStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SenderStats{Sent: s.sentNew, Retransmits: s.retransmits, Timeouts: s.timeouts, Probes: s.probes, Paused: s.paused,
		Unacked: s.live, UnackedBytes: s.bytes, Window: int(s.cwnd), RTO: s.rto, SRTT: s.srtt}
}

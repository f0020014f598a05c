package ssm

import (
	"context"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// No-progress detection (docs/protocol.md 9.4). When the real agent runs out
// of reconnect attempts it logs and goes silent, and what MGS then tells the
// client is unknown: perhaps nothing at all. The client's leg stays up (MGS
// answers pings), so neither the read deadline nor a resume notices, and an
// ssh session would hang until ssh's own keepalives, which many users do
// not enable. So the session watches the agent itself: while a leg is up and
// data of ours is unacked, it counts the time in which nothing at all came
// from the agent (no ack, no output, not even a duplicate). Pings, pongs and
// publication frames come from MGS, not the agent, and do not count. Time
// without a leg does not count either: reconnecting has its own bound, the
// resume budget, and its own error. The count survives a new leg, so a leg
// that keeps being replaced cannot hide a silent agent.

// DefaultNoProgressTimeout is how long a connected session may go with
// unacked data and nothing from the agent before it is declared dead. It
// must outlast a legitimate silence: the agent notices a dead leg of its
// own by its read deadline (60 s after its last pong, 114 s on a new leg),
// then reconnects in up to 5 attempts with backoff up to 5 s, while MGS
// pauses us (protocol.md 10.1). That is about 2 min at worst; 3 min leaves
// a margin, and is still far shorter than the idle timeout a hung ssh
// session would otherwise wait for.
const DefaultNoProgressTimeout = 3 * time.Minute

// progress measures the agent's silence as seen by a busy, connected
// client. It is a plain state machine on the injected clock: events come
// from the dispatcher (heard), the supervisor (setUp) and the sender
// (setBusy); the session's watchdog (watch) waits for deadline.
type progress struct {
	clk     clock.Clock
	timeout time.Duration
	// kick wakes the watchdog when a count starts that would expire before
	// its timer fires. The timer stays armed while nothing is counted, so
	// a count that starts or restarts only moves the deadline later, which
	// the watchdog finds when the timer fires: neither the per-frame path
	// nor a sender going busy and idle with every message wakes it.
	kick chan struct{}

	mu    sync.Mutex
	up    bool          // a leg is connected
	busy  bool          // data of ours is unacked
	quiet time.Duration // silence counted before from
	from  time.Time     // start of the running count; zero unless up and busy
	armed time.Time     // when the watchdog's timer fires; zero: not watching
}

func newProgress(clk clock.Clock, timeout time.Duration) *progress {
	return &progress{clk: clk, timeout: timeout, kick: make(chan struct{}, 1)}
}

// change applies f to the state at the current time, keeping the count
// exact across the change.
func (p *progress) change(f func()) {
	p.mu.Lock()
	now := p.clk.Now()
	was := !p.from.IsZero()
	if was {
		p.quiet += now.Sub(p.from)
		p.from = time.Time{}
	}
	f()
	if p.up && p.busy {
		p.from = now
	}
	at, _ := p.deadlineLocked(now)
	early := !was && !at.IsZero() && !p.armed.IsZero() && at.Before(p.armed)
	p.mu.Unlock()
	if early {
		signal(p.kick)
	}
}

// heard records traffic from the agent: the silence starts over.
func (p *progress) heard() { p.change(func() { p.quiet = 0 }) }

// setUp records whether a leg is connected.
func (p *progress) setUp(up bool) { p.change(func() { p.up = up }) }

// setBusy records whether data of ours is unacked. Going idle takes an
// ack, which is traffic from the agent: the silence starts over.
func (p *progress) setBusy(busy bool) {
	p.change(func() {
		p.busy = busy
		if !busy {
			p.quiet = 0
		}
	})
}

// deadline is when the silence reaches the timeout if nothing changes, and
// the silence counted so far; zero while not counting.
func (p *progress) deadline() (at time.Time, silence time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deadlineLocked(p.clk.Now())
}

// deadlineLocked is deadline at now; p.mu must be held.
func (p *progress) deadlineLocked(now time.Time) (at time.Time, silence time.Duration) {
	if p.from.IsZero() {
		return time.Time{}, p.quiet
	}
	return p.from.Add(p.timeout - p.quiet), p.quiet + now.Sub(p.from)
}

// watch calls expired, once, when the silence reaches the timeout, and
// returns; or returns when ctx ends. It starts counting down only once
// ready is closed (HandshakeComplete: until then the handshake timeout is
// the bound). The session runs it in its own goroutine.
func (p *progress) watch(ctx context.Context, ready <-chan struct{}, expired func(silence time.Duration)) {
	select {
	case <-ready:
	case <-ctx.Done():
		return
	}
	timer := p.clk.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		// Idle, the timer looks again after a full timeout: no count that
		// starts meanwhile can end before that without a kick.
		wait, silence := p.arm()
		if wait <= 0 {
			expired(silence)
			return
		}
		timer.Reset(wait)
		select {
		case <-timer.C():
		case <-p.kick:
		case <-ctx.Done():
			return
		}
	}
}

// arm returns how long the watchdog's timer should wait (the count's
// deadline, or a full timeout while nothing is counted) and records when it
// fires, in one step so that a count starting meanwhile sees it. wait <= 0:
// the silence reached the timeout.
func (p *progress) arm() (wait, silence time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clk.Now()
	at, silence := p.deadlineLocked(now)
	wait = p.timeout
	if !at.IsZero() {
		wait = at.Sub(now)
	}
	p.armed = now.Add(wait)
	return wait, silence
}

// noProgress ends a session whose agent has gone silent. The session is
// terminated before it ends, so that the service does not keep it open
// until its idle timeout and the process does not exit before the call is
// made; the terminating flag keeps the supervisor from resuming a leg the
// service closes meanwhile, and the channel_closed it may send ends the
// session with this error too (ownReason).
func (s *Session) noProgress(silence time.Duration) {
	unacked, _ := s.send.pending()
	err := &NoProgressError{SessionID: s.info.SessionID, Unacked: unacked, Silence: silence}
	s.log.Warn("no progress: the agent is silent; ending the session", "unacked", unacked, "silence", silence)
	s.mu.Lock()
	s.stopping = err
	s.mu.Unlock()
	s.terminating.Store(true)
	s.terminateAPI()
	s.finish(err)
}

package broker

import (
	"context"
	"slices"
	"time"

	"github.com/ssmproxy/ssmproxy/prompt"
)

// The SDK's CredentialsCache is lazy: nothing refreshes until a call needs
// credentials, so a resume landing just after expiry would pay for an STS
// round trip, or fail if STS hiccups then. A long-lived ssmproxy therefore
// re-mints on its own timer at this process's jittered due time, retries
// with backoff while the old credentials are still valid, and prints the
// deadline warnings.

// Start runs the refresh timer until Close. Call it after Prepare succeeded.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == nil {
		return errNotPrepared
	}
	if b.started {
		return nil
	}
	// A wake left by Prepare's adoption is stale: run reads the state
	// afresh anyway, and consuming it later would re-arm a timer that was
	// already right.
	select {
	case <-b.wake:
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop, b.done, b.started = cancel, make(chan struct{}), true
	go b.run(ctx)
	return nil
}

// Close stops the timer and waits for it. It is safe to call more than once
// and without Start.
func (b *Broker) Close() {
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.stop = nil
	b.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// run is the timer goroutine.
func (b *Broker) run(ctx context.Context) {
	defer close(b.done)
	for {
		at, warn := b.nextEvent()
		var fire <-chan time.Time
		var t interface{ Stop() bool }
		if !at.IsZero() {
			tm := b.clk.NewTimer(max(0, at.Sub(b.clk.Now())))
			fire, t = tm.C(), tm
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return
		case <-b.wake:
			if t != nil {
				t.Stop()
			}
			continue
		case <-fire:
		}
		if warn {
			b.emitWarning()
			continue
		}
		b.timerRefresh(ctx)
	}
}

// nextEvent is the earliest of this process's re-mint time (or retry time)
// and the next deadline warning; warn tells which.
func (b *Broker) nextEvent() (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := b.due
	if !b.retryAt.IsZero() {
		next = b.retryAt
	}
	if b.failures < 0 { // permanent failure: nothing left to retry
		next = time.Time{}
	}
	if len(b.warnAt) > 0 && (next.IsZero() || b.warnAt[0].Before(next)) {
		return b.warnAt[0], true
	}
	return next, false
}

// timerRefresh re-mints ahead of expiry; refresh records a failure and
// its retry time, which nextEvent then schedules.
func (b *Broker) timerRefresh(ctx context.Context) {
	if _, err := b.refresh(prompt.WithoutTerminal(ctx)); err == nil {
		b.mu.Lock()
		if b.cur != nil && !b.due.After(b.clk.Now()) {
			b.due = time.Time{} // expired and adopted anyway: nothing to schedule
		}
		b.mu.Unlock()
	}
}

// emitWarning prints the due deadline warning.
func (b *Broker) emitWarning() {
	b.mu.Lock()
	if len(b.warnAt) == 0 {
		b.mu.Unlock()
		return
	}
	b.warnAt = slices.Delete(b.warnAt, 0, 1)
	e := b.cur
	b.mu.Unlock()
	if e == nil || !e.Deadline.Known() {
		return
	}
	now := b.clk.Now()
	b.note.line(warningNotice(b.set.profile, e.Deadline, authorisedUntil(e, now), now))
}

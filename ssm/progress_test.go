package ssm

import (
	"context"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// TestNoProgressCount: the agent's silence counts only while a leg is up
// and data of ours is unacked; anything from the agent starts it over; a
// new leg does not (docs/protocol.md 9.4). All on the simulated clock.
func TestNoProgressCount(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	const timeout = 3 * time.Minute
	p := newProgress(clk, timeout)
	left := func() time.Duration {
		at, _ := p.deadline()
		if at.IsZero() {
			return -1
		}
		return at.Sub(clk.Now())
	}
	kicked := func() bool {
		select {
		case <-p.kick:
			return true
		default:
			return false
		}
	}

	// Idle or disconnected: nothing counts, however long.
	p.setUp(true)
	clk.Advance(time.Hour)
	if l := left(); l != -1 {
		t.Fatalf("idle connected session counts: %v left", l)
	}
	// The idle watchdog's timer fires every timeout (here, once more now).
	if wait, _ := p.arm(); wait != timeout {
		t.Fatalf("idle watchdog waits %v, want %v", wait, timeout)
	}
	// The first unacked message starts the count, without waking the
	// watchdog: its timer fires by the count's deadline anyway.
	p.setBusy(true)
	if l, k := left(), kicked(); l != timeout || k {
		t.Fatalf("busy: %v left (watchdog woken: %v), want the full %v and no wake-up", l, k, timeout)
	}
	clk.Advance(time.Minute)
	// An ack or output starts it over, without waking the watchdog: its
	// timer fires early and finds the later deadline.
	p.heard()
	if l := left(); l != timeout || kicked() {
		t.Fatalf("after agent traffic: %v left, want %v and no wake-up", l, timeout)
	}
	// The leg drops for 10 minutes (the resume budget's business), then a
	// new leg comes: the silence before the drop still counts, the time
	// without a leg does not.
	clk.Advance(2 * time.Minute)
	p.setUp(false)
	if l := left(); l != -1 {
		t.Fatalf("counting without a leg: %v left", l)
	}
	clk.Advance(10 * time.Minute)
	p.arm() // the idle watchdog's timer fired meanwhile
	// The count resumes with 1m left, before the armed timer: a wake-up.
	p.setUp(true)
	if l := left(); l != time.Minute || !kicked() {
		t.Fatalf("new leg: %v left, want 1m0s and a wake-up", l)
	}
	clk.Advance(time.Minute)
	if at, silence := p.deadline(); clk.Now().Before(at) || silence != timeout {
		t.Fatalf("at the timeout: deadline %v from now, silence %v, want due and %v", at.Sub(clk.Now()), silence, timeout)
	}
	// The last ack ends the count.
	p.setBusy(false)
	if l := left(); l != -1 {
		t.Fatalf("all acked but counting: %v left", l)
	}
	p.setBusy(true)
	if l := left(); l != timeout {
		t.Fatalf("new data after an ack: %v left, want %v", l, timeout)
	}
}

// TestNoProgressWatch: the watchdog, on the simulated clock, waits for the
// handshake, then fires once the silence reaches the timeout and not
// before; agent traffic on the way pushes it out.
func TestNoProgressWatch(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	const timeout = 3 * time.Minute
	p := newProgress(clk, timeout)
	ready := make(chan struct{})
	fired := make(chan time.Duration, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.watch(ctx, ready, func(silence time.Duration) { fired <- silence })

	p.setUp(true)
	p.setBusy(true)
	clk.Advance(time.Hour) // before HandshakeComplete nothing fires
	select {
	case s := <-fired:
		t.Fatalf("fired before the handshake completed (silence %v)", s)
	case <-time.After(20 * time.Millisecond):
	}
	p.heard()
	close(ready)
	if !clk.WaitForTimers(1, time.Second) {
		t.Fatal("the watchdog armed no timer")
	}
	clk.Advance(2 * time.Minute)
	p.heard() // the agent answers: the count starts over
	due := clk.Now().Add(timeout)
	// The old deadline passes: the watchdog wakes, finds the later one
	// and re-arms for it.
	clk.Advance(2 * time.Minute)
	if !clk.WaitForNext(due, time.Second) {
		next, ok := clk.Next()
		t.Fatalf("watchdog armed for %v (%v), want 3m after the agent's last sign of life", next.Sub(clk.Now()), ok)
	}
	select {
	case s := <-fired:
		t.Fatalf("fired after 2m of silence (%v)", s)
	default:
	}
	clk.Advance(time.Minute)
	select {
	case s := <-fired:
		if s != timeout {
			t.Fatalf("silence %v, want %v", s, timeout)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no-progress did not fire at the timeout")
	}
}

// Package clock abstracts time for the logic that schedules (retransmission,
// credential refresh, expiry, session timers), so tests can run hours in
// seconds with a Fake.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock is the source of time and timers.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
	// After is NewTimer(d).C().
	After(d time.Duration) <-chan time.Time
	// Since is Now().Sub(t).
	Since(t time.Time) time.Duration
}

// Timer is the part of *time.Timer that schedulers use.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Real returns the wall clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) Since(t time.Time) time.Duration        { return time.Since(t) }
func (realClock) NewTimer(d time.Duration) Timer         { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

// Or returns c, or the real clock when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return Real()
	}
	return c
}

// Fake is a manually advanced clock. Timers fire when Advance moves the time
// past their deadline. It is safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever a timer is added
}

// NewFake returns a Fake clock set to t.
func NewFake(t time.Time) *Fake {
	return &Fake{now: t, changed: make(chan struct{})}
}

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

func (f *Fake) After(d time.Duration) <-chan time.Time { return f.NewTimer(d).C() }

func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{clock: f, c: make(chan time.Time, 1)}
	f.schedule(t, d)
	return t
}

// schedule arms t; f.mu must be held.
func (f *Fake) schedule(t *fakeTimer, d time.Duration) {
	t.when = f.now.Add(d)
	t.armed = true
	if d <= 0 {
		t.fire(f.now)
		return
	}
	f.timers = append(f.timers, t)
	close(f.changed)
	f.changed = make(chan struct{})
}

// Advance moves the clock forward by d, firing every timer that comes due, in
// deadline order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		sort.SliceStable(f.timers, func(i, j int) bool { return f.timers[i].when.Before(f.timers[j].when) })
		if len(f.timers) == 0 || f.timers[0].when.After(end) {
			break
		}
		t := f.timers[0]
		f.timers = f.timers[1:]
		if t.when.After(f.now) {
			f.now = t.when
		}
		t.fire(f.now)
	}
	f.now = end
}

// Set moves the clock to t (forward only), firing due timers.
func (f *Fake) Set(t time.Time) {
	if d := t.Sub(f.Now()); d > 0 {
		f.Advance(d)
	}
}

// Waiters returns the number of armed timers.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// Next returns the deadline of the earliest armed timer; ok is false when
// none is armed. Advance fires every timer whose deadline it reaches before
// it returns, so a timer still armed after an Advance has provably not
// fired: tests use it to check that something is NOT due yet without
// sleeping.
func (f *Fake) Next() (at time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.timers {
		if !ok || t.when.Before(at) {
			at, ok = t.when, true
		}
	}
	return at, ok
}

// WaitForNext blocks until the earliest armed timer is due at exactly at, or
// the timeout passes; it reports whether that happened.
func (f *Fake) WaitForNext(at time.Time, timeout time.Duration) bool {
	return f.waitFor(timeout, func() bool {
		next, ok := f.Next()
		return ok && next.Equal(at)
	})
}

// WaitForTimers blocks until at least n timers are armed or the timeout passes;
// it reports whether n were reached. Tests use it to let goroutines arm their
// timers before advancing.
func (f *Fake) WaitForTimers(n int, timeout time.Duration) bool {
	return f.waitFor(timeout, func() bool { return f.Waiters() >= n })
}

// waitFor re-checks cond whenever a timer is armed (and every 10 ms, for
// timers that are stopped or fire) until it holds or the timeout passes.
func (f *Fake) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		f.mu.Lock()
		ch := f.changed
		f.mu.Unlock()
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		select {
		case <-ch:
		case <-time.After(min(left, 10*time.Millisecond)):
		}
	}
}

type fakeTimer struct {
	clock *Fake
	c     chan time.Time
	when  time.Time
	armed bool
}

func (t *fakeTimer) fire(now time.Time) {
	t.armed = false
	select {
	case t.c <- now:
	default:
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	f := t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.remove(t)
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	f := t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	was := f.remove(t)
	f.schedule(t, d)
	return was
}

// remove disarms t; f.mu must be held.
func (f *Fake) remove(t *fakeTimer) bool {
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			t.armed = false
			return true
		}
	}
	return false
}

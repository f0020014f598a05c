package fakeaws

import (
	"sync"
	"testing"
	"time"
)

// A delay rule with jitter holds each frame Delay plus a random extra below
// Jitter, different from frame to frame, so frames overtake each other.
func TestDelayJitter(t *testing.T) {
	e := newFaultEngine()
	rule := &FaultRule{Action: ActionDelay, Delay: Duration(10 * time.Millisecond), Jitter: Duration(40 * time.Millisecond)}
	if err := rule.validate(); err != nil {
		t.Fatal(err)
	}
	e.rules = []*FaultRule{rule}
	e.n.Store(1)
	d := e.forDirection("s", dirAgentToClient)
	const n = 200
	var mu sync.Mutex
	var order []byte
	var waits []time.Duration
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		start := time.Now()
		d.apply([]byte{byte(i)}, frameInfo{}, func(b []byte) {
			mu.Lock()
			order = append(order, b[0])
			waits = append(waits, time.Since(start))
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	lo, hi := waits[0], waits[0]
	for _, w := range waits {
		lo, hi = min(lo, w), max(hi, w)
	}
	if lo < 10*time.Millisecond {
		t.Errorf("a frame waited %s, less than the fixed delay", lo)
	}
	if hi-lo < 10*time.Millisecond {
		t.Errorf("waits from %s to %s: no jitter", lo, hi)
	}
	overtaken := 0
	for i := 1; i < n; i++ {
		if order[i] < order[i-1] {
			overtaken++
		}
	}
	if overtaken == 0 {
		t.Error("no frame overtook another")
	}
	t.Logf("waits %s..%s, %d of %d frames out of order", lo, hi, overtaken, n)

	for _, bad := range []*FaultRule{
		{Action: ActionDrop, Jitter: Duration(time.Millisecond)},
		{Action: ActionDelay, Jitter: Duration(-time.Millisecond)},
	} {
		if bad.validate() == nil {
			t.Errorf("rule %+v accepted", bad)
		}
	}
}

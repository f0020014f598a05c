package clock

import (
	"testing"
	"time"
)

func TestFakeFiresInOrder(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	a := f.NewTimer(2 * time.Hour)
	b := f.NewTimer(time.Hour)
	stopped := f.NewTimer(30 * time.Minute)
	if !stopped.Stop() {
		t.Fatal("Stop of an armed timer reported false")
	}
	f.Advance(90 * time.Minute)
	select {
	case at := <-b.C():
		if !at.Equal(start.Add(time.Hour)) {
			t.Fatalf("fired at %v", at)
		}
	default:
		t.Fatal("1h timer did not fire")
	}
	select {
	case <-a.C():
		t.Fatal("2h timer fired early")
	case <-stopped.C():
		t.Fatal("stopped timer fired")
	default:
	}
	a.Reset(time.Minute)
	f.Advance(time.Minute)
	select {
	case <-a.C():
	default:
		t.Fatal("reset timer did not fire")
	}
	if got := f.Now(); !got.Equal(start.Add(91 * time.Minute)) {
		t.Fatalf("now %v", got)
	}
}

func TestWaitForTimers(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	go func() {
		time.Sleep(10 * time.Millisecond)
		f.NewTimer(time.Second)
	}()
	if !f.WaitForTimers(1, 5*time.Second) {
		t.Fatal("timer never armed")
	}
	if f.WaitForTimers(2, 20*time.Millisecond) {
		t.Fatal("reported a second timer")
	}
}

func TestNextTimer(t *testing.T) {
	start := time.Unix(0, 0)
	f := NewFake(start)
	if _, ok := f.Next(); ok {
		t.Fatal("no timer armed yet")
	}
	late := f.NewTimer(2 * time.Hour)
	f.NewTimer(time.Hour)
	if at, ok := f.Next(); !ok || !at.Equal(start.Add(time.Hour)) {
		t.Fatalf("Next %v %v", at, ok)
	}
	f.Advance(time.Hour)
	if !f.WaitForNext(start.Add(2*time.Hour), time.Second) {
		t.Fatal("the fired timer is still reported")
	}
	late.Stop()
	if _, ok := f.Next(); ok {
		t.Fatal("a stopped timer is reported")
	}
}

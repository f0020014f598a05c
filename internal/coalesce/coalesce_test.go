package coalesce

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// stepClock is a clock that only moves when the test (or a sleep) moves it.
type stepClock struct {
	now    time.Time
	slept  []time.Duration
	others int64
}

func (c *stepClock) Now() time.Time          { return c.now }
func (c *stepClock) Sleep(d time.Duration)   { c.slept = append(c.slept, d); c.now = c.now.Add(d) }
func (c *stepClock) advance(d time.Duration) { c.now = c.now.Add(d) }

func newTest(cfg Config) (*Reads, *stepClock) {
	c := &stepClock{now: time.Unix(1_000_000, 0)}
	r := New(cfg, func() int64 { return c.others })
	r.SetClock(c.Now, c.Sleep)
	return r, c
}

// read simulates one read returning n bytes, gap after the previous one.
func read(r *Reads, c *stepClock, gap time.Duration, n int) {
	c.advance(gap)
	r.Wait()
	r.Done(n)
}

func TestWaitsOnlyAfterAStreakOfSmallReads(t *testing.T) {
	cfg := Config{Interval: 4 * time.Millisecond, Streak: 3, Small: 100}
	r, c := newTest(cfg)
	for i := 0; i < 3; i++ {
		read(r, c, time.Millisecond, 50)
	}
	if len(c.slept) != 0 {
		t.Fatalf("slept %v before the streak was reached", c.slept)
	}
	if !r.Trickling() {
		t.Fatal("not trickling after the streak")
	}
	read(r, c, time.Millisecond, 50)
	// 1 ms after the last read: wait the remaining 3 ms.
	if len(c.slept) != 1 || c.slept[0] != 3*time.Millisecond {
		t.Fatalf("slept %v, want [3ms]", c.slept)
	}
}

func TestNoWaitAfterAPauseOrALargeRead(t *testing.T) {
	r, c := newTest(Config{Interval: 4 * time.Millisecond, Streak: 1, Small: 100})
	read(r, c, 0, 50)
	// Data after a pause longer than the interval is read at once.
	read(r, c, 10*time.Millisecond, 50)
	if len(c.slept) != 0 {
		t.Fatalf("slept %v after a pause", c.slept)
	}
	// A large read means data is waiting: the next read goes at once.
	read(r, c, 10*time.Millisecond, 100)
	read(r, c, 0, 50)
	if len(c.slept) != 0 {
		t.Fatalf("slept %v after a large read", c.slept)
	}
	read(r, c, 0, 50)
	if len(c.slept) != 1 || c.slept[0] != 4*time.Millisecond {
		t.Fatalf("slept %v, want [4ms] once the reads are small again", c.slept)
	}
}

func TestOtherDirectionGrantsGraceReads(t *testing.T) {
	r, c := newTest(Config{Interval: 4 * time.Millisecond, Streak: 4, Grace: 2, Small: 100})
	for i := 0; i < 5; i++ {
		read(r, c, 0, 10)
	}
	if len(c.slept) != 1 {
		t.Fatalf("slept %v, want one wait in a one-way stream", c.slept)
	}
	c.others++ // a request went the other way: someone waits for the answer
	read(r, c, 0, 10)
	read(r, c, 0, 10)
	if len(c.slept) != 1 {
		t.Fatalf("slept %v: the answer's first reads waited", c.slept)
	}
	read(r, c, 0, 10)
	if len(c.slept) != 2 {
		t.Fatalf("slept %v, want a wait once the grace reads are over", c.slept)
	}
	// Request and answer in turn: every answer is read at once.
	for i := 0; i < 20; i++ {
		c.others++
		read(r, c, 0, 10)
	}
	if len(c.slept) != 2 {
		t.Fatalf("slept %v in a request-answer exchange", c.slept)
	}
}

func TestOffNeverWaits(t *testing.T) {
	for _, r := range []*Reads{nil, New(Off(), nil)} {
		c := &stepClock{now: time.Unix(0, 0)}
		if r != nil {
			r.SetClock(c.Now, c.Sleep)
		}
		for i := 0; i < 100; i++ {
			read(r, c, 0, 1)
		}
		if len(c.slept) != 0 || r.Trickling() {
			t.Fatalf("%v: slept %v", r, c.slept)
		}
	}
}

func TestReaderWrapsReads(t *testing.T) {
	r, c := newTest(Config{Interval: 2 * time.Millisecond, Streak: 1, Small: 1 << 20})
	src := bytes.NewReader(bytes.Repeat([]byte("x"), 10))
	got, err := io.ReadAll(r.Reader(io.LimitReader(src, 10)))
	if err != nil || len(got) != 10 {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if len(c.slept) == 0 {
		t.Fatal("the wrapped reads never waited")
	}
}

func TestSetting(t *testing.T) {
	if Setting(0) != DefaultConfig() {
		t.Errorf("Setting(0) = %+v, want the default", Setting(0))
	}
	if Setting(-1) != Off() {
		t.Errorf("Setting(-1) = %+v, want off", Setting(-1))
	}
	if c := Setting(3 * time.Millisecond); c.Interval != 3*time.Millisecond || c.Streak != DefaultStreak {
		t.Errorf("Setting(3ms) = %+v", c)
	}
}

func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{DefaultConfig(), true},
		{Off(), true},
		{Config{Interval: MaxInterval + time.Millisecond, Streak: 1, Small: 1}, false},
		{Config{Interval: time.Millisecond, Streak: 0, Small: 1}, false},
		{Config{Interval: time.Millisecond, Streak: 1, Small: 0}, false},
		{Config{Interval: time.Millisecond, Streak: 1, Grace: 2, Small: 1}, false},
	} {
		if err := tc.cfg.Verify(); (err == nil) != tc.ok {
			t.Errorf("Verify(%+v) = %v", tc.cfg, err)
		}
	}
}

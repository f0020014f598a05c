// Package coalesce moderates the reads of a stream that trickles in: when
// data keeps arriving in small pieces in one direction only, a read waits
// until one Interval has passed since the previous read, so that one wakeup
// and one system call take several messages instead of one
// (docs/bench.md, "Read coalescing").
//
// The agent sends 1 KiB and then sleeps 1 ms (docs/protocol.md 8.7), so a
// download arrives as one small websocket message per millisecond; read as
// it comes, each costs a wakeup, a read, an ack write and a stdout write.
// Waiting a few milliseconds between reads while the stream flows turns
// those into one of each per few messages. The price is latency, so the
// wait applies only where nobody waits for an answer:
//
//   - only after Streak reads in a row, and never in the first Grace reads
//     after data went the other way: the answer to a request, a keystroke
//     or a query is read at once (a control message now and then, such as
//     SSH's window adjust, does not stop a bulk stream from coalescing);
//   - only after a small read (a large one means the reader is behind and
//     must catch up at once);
//   - never longer than Interval after the previous read: data that arrives
//     after a pause is read as soon as it comes.
//
// Reads run on the wall clock: like socket deadlines, the kernel times the
// socket, not a test's fake clock. Now and Sleep are injectable for tests.
package coalesce

import (
	"fmt"
	"io"
	"time"
)

// Defaults: what ssmproxy uses for its websocket and its stdin.
const (
	// DefaultInterval: at the agent's pace about seven messages per read,
	// and well under what a human or a bulk transfer notices. At 4 ms the
	// paced upload cost about 7 % of a core, at 8 ms about 4 % (make
	// bench, docs/bench.md).
	DefaultInterval = 8 * time.Millisecond
	// DefaultStreak reads before waiting starts: a command's short burst
	// of output is read as it comes.
	DefaultStreak = 16
	// DefaultGrace reads after data went the other way never wait: an
	// answer's first message and the one after it.
	DefaultGrace = 2
	// DefaultSmall: a read of at least this many bytes means data is
	// waiting; the next read does not wait.
	DefaultSmall = 16 << 10
	// MaxInterval bounds Interval: beyond it, a wait is felt.
	MaxInterval = 50 * time.Millisecond
)

// Config is how a Reads moderates. The zero Config never waits.
type Config struct {
	// Interval is the least time between two reads once the stream
	// trickles; zero or negative: never wait.
	Interval time.Duration
	Streak   int // reads before waiting starts
	Grace    int // reads that never wait after data went the other way
	Small    int // bytes: a read this large is followed by one without waiting
}

// DefaultConfig is what ssmproxy uses.
func DefaultConfig() Config {
	return Config{Interval: DefaultInterval, Streak: DefaultStreak, Grace: DefaultGrace, Small: DefaultSmall}
}

// Off is a Config that never waits.
func Off() Config { return Config{} }

// Setting is the Config for an interval option where zero means the
// default and a negative value means off (ssm.Config.ReadCoalesce,
// proxy.StdioOptions.ReadCoalesce).
func Setting(interval time.Duration) Config {
	if interval < 0 {
		return Off()
	}
	c := DefaultConfig()
	if interval > 0 {
		c.Interval = interval
	}
	return c
}

// Verify reports a Config that cannot work.
func (c Config) Verify() error {
	if c.Interval <= 0 {
		return nil
	}
	if c.Interval > MaxInterval {
		return fmt.Errorf("read coalescing interval %s is over %s", c.Interval, MaxInterval)
	}
	if c.Streak < 1 {
		return fmt.Errorf("read coalescing streak %d must be at least 1", c.Streak)
	}
	if c.Grace < 0 || c.Grace > c.Streak {
		return fmt.Errorf("read coalescing grace %d must be between 0 and the streak %d", c.Grace, c.Streak)
	}
	if c.Small < 1 {
		return fmt.Errorf("read coalescing small-read size %d must be at least 1", c.Small)
	}
	return nil
}

// Reads moderates one reader. It is used by that reader's goroutine only.
type Reads struct {
	cfg Config
	// other counts data going the other way (messages or writes); a
	// change grants Grace reads that do not wait. Nil: no other direction
	// is watched.
	other func() int64
	now   func() time.Time
	sleep func(time.Duration)

	last   time.Time // when the previous read returned
	lastN  int       // what it returned
	streak int
	seen   int64
}

// New returns a Reads for cfg. other reports how much data has gone the
// other way so far (nil: nothing is watched).
func New(cfg Config, other func() int64) *Reads {
	return &Reads{cfg: cfg, other: other, now: time.Now, sleep: time.Sleep}
}

// SetClock replaces the wall clock (tests).
func (r *Reads) SetClock(now func() time.Time, sleep func(time.Duration)) {
	r.now, r.sleep = now, sleep
}

// Wait is called before a read; it sleeps when the stream trickles.
func (r *Reads) Wait() {
	if r == nil || r.cfg.Interval <= 0 {
		return
	}
	if r.other != nil {
		if o := r.other(); o != r.seen {
			r.seen = o
			r.streak = min(r.streak, r.cfg.Streak-r.cfg.Grace)
		}
	}
	if !r.Trickling() {
		return
	}
	if d := r.cfg.Interval - r.now().Sub(r.last); d > 0 {
		r.sleep(d)
	}
}

// Trickling reports whether the next read would wait, as far as the reads
// so far tell (Wait also looks at the other direction).
func (r *Reads) Trickling() bool {
	return r != nil && r.cfg.Interval > 0 && r.streak >= r.cfg.Streak && r.lastN < r.cfg.Small
}

// Done records a read that returned n bytes.
func (r *Reads) Done(n int) {
	if r == nil || r.cfg.Interval <= 0 {
		return
	}
	r.last = r.now()
	r.lastN = n
	if n > 0 {
		r.streak++
	}
}

// Reader returns rd with its reads moderated by r (a nil r never waits).
func (r *Reads) Reader(rd io.Reader) io.Reader { return &reader{r: r, rd: rd} }

type reader struct {
	r  *Reads
	rd io.Reader
}

func (m *reader) Read(p []byte) (int, error) {
	m.r.Wait()
	n, err := m.rd.Read(p)
	m.r.Done(n)
	return n, err
}

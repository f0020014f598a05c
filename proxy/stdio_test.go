package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// stream is an in-memory session: the test feeds the agent's output, ends
// the session (with or without an error) and reads what Stdio wrote, closed
// and drained. Close behaves like ssm.Session's: output already received is
// still read, then io.EOF.
type stream struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending []byte
	eof     bool
	err     error
	written bytes.Buffer
	drains  int
	closes  int
	done    chan struct{}
	once    sync.Once
}

func newStream() *stream {
	s := &stream{done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *stream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pending) == 0 && !s.eof && s.err == nil {
		s.cond.Wait()
	}
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		return n, nil
	}
	if s.err != nil {
		return 0, s.err
	}
	return 0, io.EOF
}

func (s *stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.eof || s.err != nil {
		return 0, io.ErrClosedPipe
	}
	return s.written.Write(p)
}

func (s *stream) Drain(time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drains++
	return true
}

func (s *stream) Close() error {
	s.mu.Lock()
	s.closes++
	s.eof = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *stream) Done() <-chan struct{} { return s.done }

func (s *stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// feed queues agent output for Read.
func (s *stream) feed(b []byte) {
	s.mu.Lock()
	s.pending = append(s.pending, b...)
	s.cond.Broadcast()
	s.mu.Unlock()
}

// end ends the session: nil is the service's channel_closed (the rest is
// still read, then io.EOF), an error a failed session.
func (s *stream) end(err error) {
	s.mu.Lock()
	if err == nil {
		s.eof = true
	} else {
		s.err = err
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.once.Do(func() { close(s.done) })
}

func (s *stream) counts() (written string, drains, closes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written.String(), s.drains, s.closes
}

// syncWriter is a goroutine-safe stdout; delay slows every write down.
type syncWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	delay time.Duration
	fail  error
}

func (w *syncWriter) Write(p []byte) (int, error) {
	if w.delay > 0 {
		time.Sleep(w.delay)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return 0, w.fail
	}
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *syncWriter) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len()
}

type result struct{ err error }

func runStdio(ctx context.Context, s *stream, in io.Reader, out io.Writer, clk clock.Clock) chan result {
	ch := make(chan result, 1)
	go func() {
		ch <- result{Stdio(ctx, s, in, out, StdioOptions{Clock: clk})}
	}()
	return ch
}

func wait(t *testing.T, ch chan result) error {
	t.Helper()
	select {
	case r := <-ch:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("Stdio did not return")
		return nil
	}
}

func returned(ch chan result) bool {
	select {
	case r := <-ch:
		ch <- r
		return true
	default:
		return false
	}
}

// openStdin is a stdin that stays open until the test ends.
func openStdin(t *testing.T) io.Reader {
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	return r
}

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// TestStdioEOF: when stdin ends, every byte reaches the session, Stdio waits
// for the acks, lingers one quiet second, closes the session and returns nil.
func TestStdioEOF(t *testing.T) {
	clk := clock.NewFake(t0)
	s := newStream()
	out := &syncWriter{}
	ch := runStdio(context.Background(), s, strings.NewReader("hello, instance"), out, clk)
	// The linger arms two timers: the idle second and the 10 s limit.
	if !clk.WaitForTimers(2, 5*time.Second) {
		t.Fatal("linger never started")
	}
	if returned(ch) {
		t.Fatal("Stdio returned before the quiet second passed")
	}
	clk.Advance(time.Second)
	if err := wait(t, ch); err != nil {
		t.Fatalf("Stdio: %v", err)
	}
	written, drains, closes := s.counts()
	if written != "hello, instance" || drains != 1 || closes < 1 {
		t.Fatalf("written %q, drains %d, closes %d; want every byte, one drain, a close", written, drains, closes)
	}
}

// TestStdioLinger: output that keeps coming after stdin ended keeps Stdio
// passing it on; each write restarts the quiet second, and the 10 s limit
// ends a chatty session.
func TestStdioLinger(t *testing.T) {
	clk := clock.NewFake(t0)
	s := newStream()
	out := &syncWriter{}
	ch := runStdio(context.Background(), s, strings.NewReader(""), out, clk)
	if !clk.WaitForTimers(2, 5*time.Second) {
		t.Fatal("linger never started")
	}
	now := t0
	for i := range 9 {
		clk.Advance(900 * time.Millisecond)
		now = now.Add(900 * time.Millisecond)
		s.feed([]byte{byte('a' + i)})
		// The write restarts the idle timer: it is due a second from now.
		if !clk.WaitForNext(minTime(now.Add(time.Second), t0.Add(10*time.Second)), 5*time.Second) {
			t.Fatalf("round %d: the idle timer was not restarted by the write", i)
		}
		if returned(ch) {
			t.Fatalf("round %d: Stdio returned while output was still flowing", i)
		}
	}
	// 8.1 s have passed; the limit ends it at 10 s although output flows.
	clk.Advance(900 * time.Millisecond)
	s.feed([]byte("j"))
	clk.Advance(time.Second)
	if err := wait(t, ch); err != nil {
		t.Fatalf("Stdio: %v", err)
	}
	if got := out.String(); !strings.HasPrefix(got, "abcdefghi") {
		t.Fatalf("output %q, want every byte received before the end", got)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// TestStdioSlowStdout: a slow stdout gets every byte the session received,
// both when the service closes the channel and when stdin ends first (the
// last output is waited for, not cut at Close).
func TestStdioSlowStdout(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	t.Run("channel closed", func(t *testing.T) {
		clk := clock.NewFake(t0)
		s := newStream()
		out := &syncWriter{delay: time.Millisecond}
		in := openStdin(t)
		ch := runStdio(context.Background(), s, in, out, clk)
		s.feed(payload)
		s.end(nil)
		if err := wait(t, ch); err != nil {
			t.Fatalf("Stdio: %v", err)
		}
		if out.String() != string(payload) {
			t.Fatalf("stdout got %d of %d bytes", out.Len(), len(payload))
		}
	})
	t.Run("stdin ended", func(t *testing.T) {
		clk := clock.NewFake(t0)
		s := newStream()
		out := &syncWriter{delay: time.Millisecond}
		s.feed(payload)
		ch := runStdio(context.Background(), s, strings.NewReader("bye"), out, clk)
		if !clk.WaitForTimers(2, 5*time.Second) {
			t.Fatal("linger never started")
		}
		clk.Advance(10 * time.Second) // past the linger limit: Close while output is still queued
		if err := wait(t, ch); err != nil {
			t.Fatalf("Stdio: %v", err)
		}
		if out.String() != string(payload) {
			t.Fatalf("stdout got %d of %d bytes before Stdio returned", out.Len(), len(payload))
		}
	})
}

// TestStdioSessionFailure: a session that fails returns its error, whether
// the failure shows on the output side or on a write.
func TestStdioSessionFailure(t *testing.T) {
	boom := errors.New("data channel lost")
	clk := clock.NewFake(t0)
	s := newStream()
	in := openStdin(t)
	ch := runStdio(context.Background(), s, in, &syncWriter{}, clk)
	s.end(boom)
	if err := wait(t, ch); !errors.Is(err, boom) {
		t.Fatalf("Stdio returned %v, want the session's error", err)
	}
}

// TestStdioStdoutGone: when ssh goes away (stdout fails), the session is
// closed cleanly and Stdio returns nil.
func TestStdioStdoutGone(t *testing.T) {
	clk := clock.NewFake(t0)
	s := newStream()
	in := openStdin(t)
	ch := runStdio(context.Background(), s, in, &syncWriter{fail: io.ErrClosedPipe}, clk)
	s.feed([]byte("output nobody reads"))
	if err := wait(t, ch); err != nil {
		t.Fatalf("Stdio: %v", err)
	}
	if _, _, closes := s.counts(); closes < 1 {
		t.Fatal("the session was not closed")
	}
}

// TestStdioCancel: a cancelled context (a signal) closes the session and
// returns the context's error.
func TestStdioCancel(t *testing.T) {
	clk := clock.NewFake(t0)
	s := newStream()
	in := openStdin(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := runStdio(ctx, s, in, &syncWriter{}, clk)
	cancel()
	if err := wait(t, ch); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stdio returned %v, want context.Canceled", err)
	}
	if _, _, closes := s.counts(); closes < 1 {
		t.Fatal("the session was not closed")
	}
}

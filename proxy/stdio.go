// Package proxy moves bytes between a Session Manager session and the local
// world: stdin/stdout for `ssmproxy connect` (ssh's ProxyCommand).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/internal/coalesce"
)

// Stream is the part of *ssm.Session the proxy uses.
type Stream interface {
	io.ReadWriter
	// Drain waits (bounded) until everything written has been acknowledged.
	Drain(timeout time.Duration) bool
	// Close ends the session cleanly (TerminateSession).
	Close() error
	Done() <-chan struct{}
	Err() error
}

// StdioOptions tune Stdio.
type StdioOptions struct {
	// DrainTimeout bounds the wait for acks after stdin ends (default 5 s).
	DrainTimeout time.Duration
	// LingerIdle: after stdin ends, output keeps flowing to out until it
	// has been quiet this long (default 1 s) or LingerMax has passed
	// (default 10 s). Port sessions have no half-close, so this is what
	// lets `ssmproxy connect host 80 < request` print the response.
	LingerIdle time.Duration
	LingerMax  time.Duration
	Log        *slog.Logger
	// Clock times the drain, the linger and the last-output wait (default:
	// the real clock); tests inject a fake one.
	Clock clock.Clock
	// ReadCoalesce is the least time between two reads of in while the
	// input streams one way with no output coming back (internal/coalesce,
	// docs/bench.md); default coalesce.DefaultInterval, negative: every
	// read goes at once.
	ReadCoalesce time.Duration
}

// coalescedInput moderates the reads of in: output written to out counts
// as the other direction.
func (o StdioOptions) coalescedInput(in io.Reader, out *activityWriter) io.Reader {
	if o.ReadCoalesce < 0 {
		return in
	}
	return coalesce.New(coalesce.Setting(o.ReadCoalesce), out.writes.Load).Reader(in)
}

// Stdio runs the ProxyCommand data path: in → session, session → out.
// Nothing but the agent's output is ever written to out.
//
// It returns nil when stdin ended and the session was closed cleanly, or
// when the service closed the channel after out received every byte. It
// returns the session's error when the session failed, and ctx's error when
// ctx was cancelled (the session is then closed cleanly too).
func Stdio(ctx context.Context, s Stream, in io.Reader, out io.Writer, o StdioOptions) error {
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 5 * time.Second
	}
	if o.LingerIdle <= 0 {
		o.LingerIdle = time.Second
	}
	if o.LingerMax <= 0 {
		o.LingerMax = 10 * time.Second
	}
	if err := coalesce.Setting(o.ReadCoalesce).Verify(); err != nil {
		return fmt.Errorf("stdin: %w", err)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Clock = clock.Or(o.Clock)
	cw := &activityWriter{w: out, wrote: make(chan struct{}, 1)}
	downDone := make(chan error, 1)
	go func() {
		// Session → out. io.Copy returns nil at the session's io.EOF.
		_, err := io.Copy(cw, s)
		if f, ok := out.(interface{ Sync() error }); ok {
			_ = f.Sync()
		}
		downDone <- err
	}()
	upDone := make(chan error, 1)
	in = o.coalescedInput(in, cw)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, rerr := in.Read(buf)
			if n > 0 {
				if _, werr := s.Write(buf[:n]); werr != nil {
					upDone <- werr
					return
				}
			}
			if rerr != nil {
				if errors.Is(rerr, io.EOF) {
					rerr = nil
				}
				upDone <- rerr
				return
			}
		}
	}()

	select {
	case err := <-upDone:
		if err != nil {
			// Writing failed because the session ended: report why.
			select {
			case <-s.Done():
				return sessionResult(s, <-downDone)
			default:
			}
			o.Log.Warn("reading stdin failed", "err", err)
		}
		// stdin ended: send what is pending, wait for the acks, pass on
		// the output still coming, terminate.
		if !s.Drain(o.DrainTimeout) {
			o.Log.Warn("not every byte was acknowledged before the drain timeout", "timeout", o.DrainTimeout)
		}
		linger(s, cw, o)
		_ = s.Close()
		// Everything already received goes out before we return.
		select {
		case <-downDone:
		case <-o.Clock.After(o.DrainTimeout):
			o.Log.Warn("writing the last output timed out")
		}
		if serr := s.Err(); serr != nil {
			return serr
		}
		return nil
	case err := <-downDone:
		return sessionResult(s, err)
	case <-ctx.Done():
		_ = s.Close()
		select {
		case <-downDone:
		case <-o.Clock.After(o.DrainTimeout):
		}
		return ctx.Err()
	}
}

// linger waits until the output has been quiet for LingerIdle, the session
// ended, or LingerMax passed. Every write to out restarts the idle timer.
func linger(s Stream, w *activityWriter, o StdioOptions) {
	limit := o.Clock.NewTimer(o.LingerMax)
	defer limit.Stop()
	idle := o.Clock.NewTimer(o.LingerIdle)
	defer idle.Stop()
	for {
		select {
		case <-s.Done():
			return
		case <-limit.C():
			return
		case <-idle.C():
			return
		case <-w.wrote:
			if !idle.Stop() {
				// It fired while we took the write: drop the stale tick.
				select {
				case <-idle.C():
				default:
				}
			}
			idle.Reset(o.LingerIdle)
		}
	}
}

// activityWriter passes writes to out and signals each one on wrote (a
// one-slot channel: a pending signal stands for any number of writes).
type activityWriter struct {
	w     io.Writer
	wrote chan struct{}
	// writes counts the writes to out: output coming back lets the next
	// stdin reads go without waiting (internal/coalesce).
	writes atomic.Int64
}

func (c *activityWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if n > 0 {
		c.writes.Add(1)
		select {
		case c.wrote <- struct{}{}:
		default:
		}
	}
	return n, err
}

// sessionResult is the outcome once the session → out copy has ended.
func sessionResult(s Stream, copyErr error) error {
	if serr := s.Err(); serr != nil {
		return serr
	}
	if copyErr != nil {
		// stdout went away (ssh exited); end the session cleanly.
		_ = s.Close()
		return nil
	}
	// channel_closed: every byte has been written to out.
	_ = s.Close()
	return nil
}

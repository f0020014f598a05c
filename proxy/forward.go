package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// ForwardOptions tune a Forwarder.
type ForwardOptions struct {
	// Linger: after a local client stops sending, its connection stays
	// open until the destination closes it or has been quiet this long
	// (default 5 s); smux v1 has no half-close (docs/protocol.md 11.4).
	Linger time.Duration
	Log    *slog.Logger
	Clock  clock.Clock
}

// DefaultForwardOptions are the defaults Verify accepts.
func DefaultForwardOptions() ForwardOptions {
	return ForwardOptions{Linger: 5 * time.Second}.withDefaults()
}

func (o ForwardOptions) withDefaults() ForwardOptions {
	if o.Linger == 0 {
		o.Linger = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Clock = clock.Or(o.Clock)
	return o
}

// Verify reports settings that cannot work.
func (o ForwardOptions) Verify() error {
	if o.Linger < 0 {
		return fmt.Errorf("forward: linger %s is negative", o.Linger)
	}
	return nil
}

// ErrForwarderClosed: the forwarder was closed.
var ErrForwarderClosed = errors.New("forwarder closed")

// Forwarder carries local connections to destinations through Session
// Manager port sessions: one session per destination, opened on first use
// and again after one ended, shared by every connection to that
// destination (many at once in mux mode). The sessions resume through
// websocket closes and credential rotations inside ssm, so open
// connections survive them (docs/architecture.md 4).
type Forwarder struct {
	open OpenFunc
	o    ForwardOptions

	mu     sync.Mutex
	slots  map[Destination]*slot
	closed bool
	conns  sync.WaitGroup
}

// slot holds the tunnel to one destination; its lock makes the opening of
// a session single-flight.
type slot struct {
	mu sync.Mutex
	t  *tunnel
}

// NewForwarder checks o and returns a forwarder that starts sessions with
// open.
func NewForwarder(open OpenFunc, o ForwardOptions) (*Forwarder, error) {
	if err := o.Verify(); err != nil {
		return nil, err
	}
	return &Forwarder{open: open, o: o.withDefaults(), slots: map[Destination]*slot{}}, nil
}

// Open starts the session to dest now, so that a failure (credentials,
// access, an unknown instance) is reported before a listener says ready.
func (f *Forwarder) Open(ctx context.Context, dest Destination) error {
	_, err := f.tunnel(ctx, dest)
	return err
}

// Mux reports whether the current session to dest multiplexes (false when
// there is none).
func (f *Forwarder) Mux(dest Destination) bool {
	f.mu.Lock()
	sl := f.slots[dest]
	f.mu.Unlock()
	if sl == nil {
		return false
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.t != nil && sl.t.mux != nil
}

// tunnel returns a live tunnel to dest, starting a session if there is
// none or the last one ended.
func (f *Forwarder) tunnel(ctx context.Context, dest Destination) (*tunnel, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, ErrForwarderClosed
	}
	sl := f.slots[dest]
	if sl == nil {
		sl = &slot{}
		f.slots[dest] = sl
	}
	f.mu.Unlock()

	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.t != nil && sl.t.alive() {
		return sl.t, nil
	}
	if old := sl.t; old != nil {
		sl.t = nil
		reason := "it ended"
		if err := old.sess.Err(); err != nil {
			reason = err.Error()
		}
		f.o.Log.Warn(fmt.Sprintf("the session to %s ended (%s); starting a new one", dest, reason))
		go old.close()
	}
	flags := make(chan wire.Flag, 64)
	onFlag := func(fl wire.Flag) {
		select {
		case flags <- fl:
		default: // more than 64 pending flags: only the log line is lost
		}
	}
	sess, err := f.open(ctx, dest, onFlag)
	if err != nil {
		return nil, err
	}
	t, err := newTunnel(dest, sess, flags, &f.o)
	if err != nil {
		_ = sess.Close()
		return nil, err
	}
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		t.close()
		return nil, ErrForwarderClosed
	}
	sl.t = t
	return t, nil
}

// Serve accepts connections on ln and carries each to dest, until ln is
// closed (it then returns nil) or accepting fails.
func (f *Forwarder) Serve(ctx context.Context, ln net.Listener, dest Destination) error {
	return f.accept(ctx, ln, func(c net.Conn) { f.handle(ctx, c, dest) })
}

// accept runs the accept loop; each connection is handled on its own
// goroutine, counted for Close.
func (f *Forwarder) accept(ctx context.Context, ln net.Listener, handle func(net.Conn)) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		f.mu.Lock()
		closed := f.closed
		if !closed {
			f.conns.Add(1)
		}
		f.mu.Unlock()
		if closed {
			_ = c.Close()
			return nil
		}
		go func() {
			defer f.conns.Done()
			handle(c)
		}()
	}
}

// handle carries one connection; a session that turns out to be dead when
// the connection arrives is replaced once.
func (f *Forwarder) handle(ctx context.Context, c net.Conn, dest Destination) {
	for range 2 {
		t, err := f.tunnel(ctx, dest)
		if err != nil {
			if !errors.Is(err, ErrForwarderClosed) && ctx.Err() == nil {
				f.o.Log.Warn(fmt.Sprintf("connection from %s: no session to %s: %v", c.RemoteAddr(), dest, err))
			}
			_ = c.Close()
			return
		}
		if err := t.carry(ctx, c); !errors.Is(err, errTunnelDead) {
			return
		}
	}
	_ = c.Close()
}

// Close ends every session (smux, then TerminateSession) and waits for the
// connections they carried. Close the listeners first.
func (f *Forwarder) Close() {
	f.mu.Lock()
	f.closed = true
	slots := make([]*slot, 0, len(f.slots))
	for _, sl := range f.slots {
		slots = append(slots, sl)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, sl := range slots {
		sl.mu.Lock()
		t := sl.t
		sl.mu.Unlock()
		if t != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t.close()
			}()
		}
	}
	wg.Wait()
	f.conns.Wait()
}

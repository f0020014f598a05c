package proxy

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Basic port mode (docs/protocol.md 11.3), for agents too old for smux: the
// session carries the raw bytes of one TCP connection at a time. When a local
// connection ends, ssmproxy sends DisconnectToPort, as the plugin does; the
// agent closes its target connection and dials again on the next Output.
// Two limits come from the agent, not from ssmproxy: the destination closing
// its side is not reported (the agent just redials later), and after the
// first connection a destination that speaks first (SSH, SMTP) is only
// dialled once the local client sends something.

// pump reads the session for the connection holding the turn. Bytes that
// arrive before the first connection (the agent dials at the start) wait
// for it; it ends with the session.
func (t *tunnel) pump() {
	defer t.pumpWG.Done()
	defer close(t.chunks)
	for {
		buf := make([]byte, 32<<10)
		n, err := t.sess.Read(buf)
		if n > 0 {
			select {
			case t.chunks <- buf[:n]:
			case <-t.dead:
				return
			}
		}
		if err != nil {
			t.markDead()
			return
		}
	}
}

// carryBasic carries local once it holds the turn.
func (t *tunnel) carryBasic(ctx context.Context, local net.Conn) error {
	select {
	case t.turn <- struct{}{}:
	case <-ctx.Done():
		_ = local.Close()
		return ctx.Err()
	case <-t.dead:
		return errTunnelDead
	}
	defer func() { <-t.turn }()

	stop := make(chan struct{})
	down := make(chan struct{})
	var lastDown atomic.Int64
	lastDown.Store(t.o.Clock.Now().UnixNano())
	go func() {
		defer close(down)
		defer local.Close()
		for {
			select {
			case c, ok := <-t.chunks:
				if !ok {
					return
				}
				lastDown.Store(t.o.Clock.Now().UnixNano())
				if _, err := local.Write(c); err != nil {
					return
				}
			case <-stop:
				return
			}
		}
	}()
	_, _ = io.Copy(sessionConn{t.sess}, local)
	waitQuiet(down, &lastDown, t.o.Linger, t.o.Clock)
	close(stop)
	_ = local.Close()
	<-down
	if !t.alive() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := t.sess.SendFlag(ctx, wire.FlagDisconnectToPort); err != nil {
		t.log.Warn("sending DisconnectToPort failed", "err", err)
		return nil
	}
	// Once the flag is acknowledged the agent has closed its target
	// connection: what it sent before belongs to the connection that just
	// ended, not to the next one.
	t.sess.Drain(2 * time.Second)
	for dropped := 0; ; {
		select {
		case c, ok := <-t.chunks:
			if ok {
				dropped += len(c)
				continue
			}
		default:
		}
		if dropped > 0 {
			t.log.Debug("dropped output of the closed connection", "bytes", dropped)
		}
		return nil
	}
}

// waitQuiet waits, after the local side stopped sending, until the other
// direction has ended (down closed) or been quiet for linger.
func waitQuiet(down <-chan struct{}, last *atomic.Int64, linger time.Duration, clk clock.Clock) {
	for {
		idle := linger - clk.Since(time.Unix(0, last.Load()))
		if idle <= 0 {
			return
		}
		timer := clk.NewTimer(idle)
		select {
		case <-down:
			timer.Stop()
			return
		case <-timer.C():
		}
	}
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// PortSession is the part of *ssm.Session a forward uses: one
// LocalPortForwarding session (docs/protocol.md 11).
type PortSession interface {
	io.ReadWriter
	// Close ends the session cleanly (TerminateSession flag and API).
	Close() error
	Done() <-chan struct{}
	Err() error
	// Mux reports whether the agent multiplexes the session with smux.
	Mux() bool
	AgentVersion() string
	// SendFlag sends a flag in order with the data (DisconnectToPort).
	SendFlag(ctx context.Context, f wire.Flag) error
	// Drain waits (bounded) until everything written was acknowledged.
	Drain(timeout time.Duration) bool
}

// Destination is where a tunnel's connections go, as the instance sees it:
// Host "" means the instance itself (AWS-StartPortForwardingSession), any
// other host is dialled by the agent (…ToRemoteHost, docs/protocol.md 12).
type Destination struct {
	Host string
	Port int
}

func (d Destination) String() string {
	h := d.Host
	if h == "" {
		h = "localhost"
	}
	return net.JoinHostPort(h, strconv.Itoa(d.Port))
}

// OpenFunc starts a session to dest. The session calls onFlag with each
// Flag message from the agent.
type OpenFunc func(ctx context.Context, dest Destination, onFlag func(wire.Flag)) (PortSession, error)

// smuxKeepAliveOffAbove: the plugin turns smux keepalive off for agents
// newer than this (docs/protocol.md 11.4); an agent at or below it still
// expects NOPs. ssmproxy follows the plugin, since each side's rule was
// made to match the other's.
const smuxKeepAliveOffAbove = "3.1.1511.0"

// smuxConfig is the smux client configuration for a session: protocol
// version 1 and the library's defaults, as both real peers use
// (docs/protocol.md 11.4), keepalive per the version gate.
func smuxConfig(agentVersion string) *smux.Config {
	c := smux.DefaultConfig()
	c.Version = 1
	c.KeepAliveDisabled = wire.VersionGreater(agentVersion, smuxKeepAliveOffAbove)
	return c
}

// sessionConn is the transport smux runs on: the session's bytes. Close
// does not end the session: the tunnel closes it itself, after smux.
type sessionConn struct{ s PortSession }

func (c sessionConn) Read(p []byte) (int, error)  { return c.s.Read(p) }
func (c sessionConn) Write(p []byte) (int, error) { return c.s.Write(p) }
func (c sessionConn) Close() error                { return nil }

// muxConn is the transport of an smux client, gated against a race in
// smux v1.5.x: OpenStream registers a new stream only after its SYN has been
// written, so an agent that refuses the stream at once (ConnectToPortError
// then FIN) can have its FIN read before the stream exists; smux drops a FIN
// for an unknown stream and the connection would hang for ever. Bytes read
// from the session are handed to smux only when no OpenStream is between
// its SYN and its registration (openStream holds the gate for writing).
type muxConn struct {
	sessionConn
	gate *sync.RWMutex
}

func (c muxConn) Read(p []byte) (int, error) {
	n, err := c.s.Read(p)
	// An empty critical section: waiting for a pending OpenStream is
	// the point.
	c.gate.RLock()
	c.gate.RUnlock()
	return n, err
}

// newMuxClient starts an smux client over sess and returns it with the gate
// openStream needs.
func newMuxClient(sess PortSession) (*smux.Session, *sync.RWMutex, error) {
	gate := new(sync.RWMutex)
	m, err := smux.Client(muxConn{sessionConn{sess}, gate}, smuxConfig(sess.AgentVersion()))
	if err != nil {
		return nil, nil, fmt.Errorf("smux client: %w", err)
	}
	return m, gate, nil
}

// openStream opens a stream with the gate held (see muxConn).
func openStream(m *smux.Session, gate *sync.RWMutex) (*smux.Stream, error) {
	gate.Lock()
	defer gate.Unlock()
	return m.OpenStream()
}

// tunnel is one session and the connections it carries: many at once over
// smux in mux mode, one at a time in basic mode (docs/protocol.md 11).
type tunnel struct {
	dest Destination
	sess PortSession
	log  *slog.Logger
	o    *ForwardOptions

	mux  *smux.Session // nil in basic mode
	gate *sync.RWMutex // see muxConn

	// Basic mode: turn admits one connection at a time; the pump reads the
	// session into chunks for whichever connection holds the turn.
	turn   chan struct{}
	chunks chan []byte
	pumpWG sync.WaitGroup

	connectErrors atomic.Int64 // ConnectToPortError flags received
	active        atomic.Int64 // connections being carried
	closeOnce     sync.Once
	deadOnce      sync.Once
	dead          chan struct{} // closed when the tunnel can carry no more
}

// newTunnel wraps a started session. flags delivers the session's agent
// flags; it must be the channel the session's onFlag writes to.
func newTunnel(dest Destination, sess PortSession, flags <-chan wire.Flag, o *ForwardOptions) (*tunnel, error) {
	t := &tunnel{dest: dest, sess: sess, o: o, log: o.Log, dead: make(chan struct{})}
	if sess.Mux() {
		m, gate, err := newMuxClient(sess)
		if err != nil {
			return nil, err
		}
		t.mux, t.gate = m, gate
	} else {
		t.turn = make(chan struct{}, 1)
		t.chunks = make(chan []byte, 16)
		t.pumpWG.Add(1)
		go t.pump()
	}
	go t.watch(flags)
	return t, nil
}

// watch logs each ConnectToPortError (the agent closes that stream itself,
// so the connection ends on its own) and notices the end of the session.
// smux v1.5.15 has no close notification; OpenStream failing marks the
// tunnel dead instead.
func (t *tunnel) watch(flags <-chan wire.Flag) {
	for {
		select {
		case f := <-flags:
			if f == wire.FlagConnectToPortError {
				t.connectErrors.Add(1)
				t.log.Warn(fmt.Sprintf("the instance could not connect to %s (ConnectToPortError); that connection is closed, the listener stays", t.dest))
			}
		case <-t.sess.Done():
			t.markDead()
			return
		case <-t.dead:
			// A dead smux session is found by OpenStream; the
			// session itself is closed by whoever replaces it.
			return
		}
	}
}

func (t *tunnel) markDead() { t.deadOnce.Do(func() { close(t.dead) }) }

// alive reports whether new connections can use this tunnel.
func (t *tunnel) alive() bool {
	select {
	case <-t.dead:
		return false
	default:
		return true
	}
}

// close ends the session: smux first (its FINs are data), then the session
// (TerminateSession). Connections still open end with it.
func (t *tunnel) close() {
	t.closeOnce.Do(func() {
		if t.mux != nil {
			_ = t.mux.Close()
		}
		_ = t.sess.Close()
		t.markDead()
		t.pumpWG.Wait()
	})
}

// errTunnelDead: the session ended; the caller opens a new one.
var errTunnelDead = errors.New("the session ended")

// carry moves one local connection's bytes to the destination and back
// until either side ends; it closes local.
func (t *tunnel) carry(ctx context.Context, local net.Conn) error {
	t.active.Add(1)
	defer t.active.Add(-1)
	if t.mux != nil {
		st, err := openStream(t.mux, t.gate)
		if err != nil {
			t.markDead()
			return fmt.Errorf("%w: %w", errTunnelDead, err)
		}
		splice(local, st, t.o.Linger, t.o.Clock)
		return nil
	}
	return t.carryBasic(ctx, local)
}

// splice copies both ways between a local connection and an smux stream.
// smux v1 has no half-close: a FIN ends the stream both ways. So when the
// local side stops sending, the stream stays open until the destination
// has closed it or been quiet for linger (a request followed by
// shutdown(SHUT_WR) still gets its answer); when the destination closes,
// the local connection is closed.
func splice(local net.Conn, st io.ReadWriteCloser, linger time.Duration, clk clock.Clock) {
	down := make(chan struct{})
	var lastDown atomic.Int64
	lastDown.Store(clk.Now().UnixNano())
	go func() {
		defer close(down)
		// Whatever ends this direction ends the connection: a FIN from
		// the agent (the destination closed, or ConnectToPortError), or
		// the local reader gone.
		defer local.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := st.Read(buf)
			if n > 0 {
				lastDown.Store(clk.Now().UnixNano())
				if _, werr := local.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	_, _ = io.Copy(st, local)
	// The local side sent everything (or failed): wait for the
	// destination's side to finish or go quiet.
	waitQuiet(down, &lastDown, linger, clk)
	_ = st.Close()
	_ = local.Close()
	<-down
}

package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// peerConn carries an smux client over the data channel the way the
// session-manager-plugin's mux mode does: every write becomes Output
// messages of at most 1024 bytes, reads return the agent's Output payloads
// in stream order (Flag messages are kept aside by the peer).
//
// gate works around a race in the smux v1.5.x client (the plugin's too):
// OpenStream registers a stream only after its SYN is written, so the
// agent's FIN for a stream it refuses at once (ConnectToPortError) can be
// parsed before the stream exists, and smux drops it. Bytes are handed to
// smux only while no OpenStream is in progress (muxSession.openStream), as
// ssmproxy's proxy.muxConn does.
type peerConn struct {
	p         *dataPeer
	closeOnce sync.Once
	closed    chan struct{}
	gate      sync.RWMutex
}

func (c *peerConn) Read(b []byte) (int, error) {
	p := c.p
	for {
		p.mu.Lock()
		if len(p.data) > 0 {
			n := copy(b, p.data)
			p.data = p.data[n:] // consumed: memory stays bounded
			p.mu.Unlock()
			c.gate.RLock()
			c.gate.RUnlock()
			return n, nil
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-c.closed:
			return 0, io.EOF
		case <-p.stop:
			return 0, io.EOF
		}
	}
}

func (c *peerConn) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		select {
		case <-c.closed:
			return n, io.ErrClosedPipe
		default:
		}
		k := min(len(b)-n, wire.MaxPayload)
		if c.p.sendMsg(wire.PayloadOutput, b[n:n+k]) < 0 {
			return n, errors.New("peer stopped")
		}
		n += k
	}
	return n, nil
}

func (c *peerConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// muxSession is a client of the fake agent in mux mode: the harness's MGS,
// a reliable data peer and an smux client on top of it.
type muxSession struct {
	m    *mgs
	r    *runner
	p    *dataPeer
	conn *peerConn
	sess *smux.Session
}

// startMuxPeer starts the agent with cfg (type LocalPortForwarding is
// added), answers the handshake as clientVersion and returns the session with
// a data peer but no smux client, for tests that write frames by hand.
func startMuxPeer(t *testing.T, cfg Config, clientVersion string) *muxSession {
	t.Helper()
	if cfg.Properties == nil {
		cfg.Properties = map[string]string{}
	}
	cfg.Properties["type"] = typeLocalPortForwarding
	m := newMGS(t)
	r := startAgent(t, m, cfg)
	l := m.nextLeg(t)
	handshakeAs(t, l, clientVersion)
	p := newDataPeer(t, m, l)
	return &muxSession{m: m, r: r, p: p}
}

// startMux is startMuxPeer plus an smux v1 client with the plugin's settings
// for a modern agent (keepalive off); tune adjusts them.
func startMux(t *testing.T, cfg Config, clientVersion string, tune func(*smux.Config)) *muxSession {
	t.Helper()
	ms := startMuxPeer(t, cfg, clientVersion)
	ms.conn = &peerConn{p: ms.p, closed: make(chan struct{})}
	sc := smux.DefaultConfig()
	sc.KeepAliveDisabled = true
	if tune != nil {
		tune(sc)
	}
	sess, err := smux.Client(ms.conn, sc)
	if err != nil {
		t.Fatal(err)
	}
	ms.sess = sess
	t.Cleanup(func() {
		sess.Close()
		ms.conn.Close()
	})
	return ms
}

// openStream opens an smux stream with the transport's gate held (peerConn).
func (ms *muxSession) openStream() (*smux.Stream, error) {
	ms.conn.gate.Lock()
	defer ms.conn.gate.Unlock()
	return ms.sess.OpenStream()
}

// flags returns the Flag payloads the agent has sent so far.
func (ms *muxSession) flags() [][]byte {
	ms.p.mu.Lock()
	defer ms.p.mu.Unlock()
	return append([][]byte(nil), ms.p.flags...)
}

// waitFlags waits until the agent has sent n Flag messages.
func (ms *muxSession) waitFlags(t *testing.T, n int) [][]byte {
	t.Helper()
	if !ms.p.waitFor(10*time.Second, func() bool { return len(ms.p.flags) >= n }) {
		t.Fatalf("agent sent %d flags, want %d", len(ms.flags()), n)
	}
	return ms.flags()
}

// state describes the session for a failure message: the agent's mux
// stats and violations, the flags it sent, what the peer has not had acked,
// the agent's Output not yet consumed by smux and the client's open streams.
// A hang in a mux test then says which side lost what.
func (ms *muxSession) state() string {
	st := ms.r.stats
	ms.p.mu.Lock()
	unacked := make([]int64, 0, len(ms.p.unacked))
	for seq := range ms.p.unacked {
		unacked = append(unacked, seq)
	}
	slices.Sort(unacked)
	pending, flags, next, expected, ooo := len(ms.p.data), len(ms.p.flags), ms.p.nextSeq, ms.p.expected, len(ms.p.ooo)
	ms.p.mu.Unlock()
	streams := -1
	if ms.sess != nil {
		streams = ms.sess.NumStreams()
	}
	return fmt.Sprintf("agent: accepted %d, dials failed %d, buffered %d, violations %q; flags %d; "+
		"peer: next input seq %d, unacked %v, expected output seq %d, %d out of order, %d bytes not read by smux; "+
		"client streams open %d; running %v",
		st.MuxStreamsAccepted.Load(), st.MuxDialsFailed.Load(), st.MuxBuffered.Load(), ms.r.viol.all(), flags,
		next, unacked, expected, ooo, pending, streams, ms.running())
}

// running reports whether the agent's Run has not returned.
func (ms *muxSession) running() bool {
	select {
	case err := <-ms.r.done:
		ms.r.done <- err
		return false
	default:
		return true
	}
}

// echoServer echoes every connection, however many; newTarget hands its
// connections to a bounded channel, which 32 streams would fill.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

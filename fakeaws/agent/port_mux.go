package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Mux mode (docs/protocol.md 11.4, docs/fakeaws.md 4.3) is the real agent's
// MuxPortSession (agent/session/plugins/port/port_mux.go): an xtaci/smux
// server (v1.5.15, the agent's pin) with the library defaults, protocol
// version 1, keepalive off for clients above 1.2.331.0. The smux server runs
// over a connected unix socket in a private temporary directory, as the
// agent's runs over one in its session directory, so kernel buffering and
// blocking are the same: in-order Output payloads are written into the socket
// on the reader goroutine before they are acked (a blocked write delays the
// ack and stops input processing), and a pump sends what the server writes
// back as Output messages of at most 1024 bytes.

// muxKeepAliveOffAbove is the agent's muxKeepAliveDisabledAfterThisClientVersion:
// smux NOPs are stream data and would defeat the idle timeout, so newer
// clients, which send none, get no keepalive either.
const muxKeepAliveOffAbove = "1.2.331.0"

type muxPort struct {
	s   *session
	t   target
	cfg *smux.Config

	ready    atomic.Bool // IsConnectionAvailable: the socket and server are up
	agentEnd net.Conn    // the agent's end (its mgsConn): Output in, pump out
	sess     *smux.Session
	sniff    muxSniffer // reader goroutine only
	acct     *muxAccount

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // open target connections
	wg     sync.WaitGroup
	done   chan struct{}
}

func newMuxPort(s *session) *muxPort {
	cfg := smux.DefaultConfig()
	if compareVersions(s.clientVersion(), muxKeepAliveOffAbove) > 0 {
		cfg.KeepAliveDisabled = true
	}
	if s.cfg.muxTune != nil {
		s.cfg.muxTune(cfg)
	}
	props := s.cfg.Properties
	p := &muxPort{
		s:     s,
		t:     target{s: s, port: props[propPortNumber], host: props[propHost]},
		cfg:   cfg,
		acct:  newMuxAccount(s.stats),
		conns: map[net.Conn]struct{}{},
		done:  make(chan struct{}),
	}
	p.sniff = muxSniffer{violation: s.violation, acct: p.acct, clientVersion: s.clientVersion}
	return p
}

// start resolves the destination (refusals end the session, docs/protocol.md
// 12), then brings up the socket and the smux server (the agent's
// InitializeSession) and starts the pump and the accept loop (its WritePump).
func (p *muxPort) start() error {
	if err := p.t.resolve(); err != nil {
		return err
	}
	agentEnd, serverEnd, err := socketPair()
	if err != nil {
		return fmt.Errorf("Unable to start local server: %w", err)
	}
	sess, err := smux.Server(serverEnd, p.cfg)
	if err != nil {
		agentEnd.Close()
		serverEnd.Close()
		return fmt.Errorf("Unable to setup smux server: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		sess.Close()
		agentEnd.Close()
		return nil
	}
	p.agentEnd, p.sess = agentEnd, sess
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.pump()
	}()
	go func() {
		defer p.wg.Done()
		p.acceptLoop()
	}()
	p.ready.Store(true)
	return nil
}

// socketPair connects two ends of a unix stream socket through a listener in
// a fresh private directory (the agent listens on <session dir>/<fnv>_mux.sock).
// The socket file and directory are removed as soon as both ends exist.
func socketPair() (a, b net.Conn, err error) {
	base := os.TempDir()
	if len(base) > 64 && runtime.GOOS != "windows" {
		base = "/tmp" // a socket path has room for about 100 bytes
	}
	dir, err := os.MkdirTemp(base, "fakeaws-mux-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "mux.sock"))
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	// A unix connect completes against the listen backlog, so dialling
	// before accepting cannot deadlock.
	if a, err = net.Dial("unix", ln.Addr().String()); err != nil {
		return nil, nil, err
	}
	if b, err = ln.Accept(); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

func (p *muxPort) connected() bool { return p.ready.Load() && !p.isClosed() }

func (p *muxPort) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// handle is the agent's MuxPortSession.HandleStreamMessage: Output bytes go
// into the socket (the smux server's input) whatever their boundaries;
// TerminateSession cancels; every other flag is acked and ignored.
func (p *muxPort) handle(pt wire.PayloadType, payload []byte) bool {
	switch pt {
	case wire.PayloadOutput:
		if !p.ready.Load() {
			return false // IsConnectionAvailable false: not ready, no ack
		}
		p.sniff.feed(payload)
		if _, err := p.agentEnd.Write(payload); err != nil {
			// The agent returns the error (no ack). The socket only fails
			// once the session is going away; stop parsing so that the
			// retransmissions are not accounted twice.
			p.s.log.Warn("writing to the smux server failed", "err", err)
			p.sniff.broken = true
			return false
		}
		return true
	case wire.PayloadFlag:
		p.handleFlag(payload)
		return true
	case wire.PayloadSize:
		return true
	default:
		p.s.violation("warning", "unexpected-payload-type", fmt.Sprintf("input_stream_data of payload type %d", pt))
		return true
	}
}

func (p *muxPort) handleFlag(payload []byte) {
	f, ok := p.s.parseFlag(payload)
	if !ok {
		return
	}
	switch f {
	case wire.FlagTerminateSession:
		p.s.log.Info("TerminateSession flag received")
		p.s.end(nil)
	case wire.FlagDisconnectToPort:
		// The agent's mux mode ignores it: the client closes an smux
		// stream instead. A client that expects it to close something
		// is told so once.
		p.sniff.once("disconnect-to-port-in-mux", func() {
			p.s.violation("warning", "disconnect-to-port-in-mux",
				"DisconnectToPort in a mux session: the agent ignores it; close the smux stream instead")
		})
	case wire.FlagConnectToPortError:
		// The agent's own flag; ignored (and acked).
	}
}

// pump is the agent's transferDataToMgs: while publication is not paused,
// read at most 1024 bytes of what the smux server wrote and send them as one
// Output message, then sleep 1 ms (unless unpaced).
func (p *muxPort) pump() {
	buf := make([]byte, maxReadChunk)
	for {
		if !p.s.waitUnpaused(p.done) {
			return
		}
		n, err := p.agentEnd.Read(buf)
		if n > 0 {
			p.s.sendStream(wire.PayloadOutput, buf[:n])
			if !p.s.q.Unpaced {
				time.Sleep(p.s.q.PaceSleep)
			}
		}
		if err != nil {
			// A dead smux session is reported by the accept loop, which
			// knows why (keepalive, protocol error).
			if !p.isClosed() && !p.sess.IsClosed() {
				p.s.end(fmt.Errorf("Unable to read from connection: %w", err))
			}
			return
		}
	}
}

// acceptLoop is the agent's handleServerConnections: accept a stream, dial
// the destination synchronously (a slow dial delays every later stream),
// then copy both ways; a failed dial sends ConnectToPortError and closes only
// that stream. An accept error (the smux session is dead) ends the session.
func (p *muxPort) acceptLoop() {
	for {
		st, err := p.sess.AcceptStream()
		if err != nil {
			if !p.isClosed() {
				p.s.end(p.acceptError(err))
			}
			return
		}
		p.s.stats.MuxStreamsAccepted.Add(1)
		c, err := p.t.dial()
		if err != nil {
			p.s.log.Warn("Unable to dial connection to server", "stream", st.ID(), "err", err)
			p.s.stats.MuxDialsFailed.Add(1)
			var flag [4]byte
			binary.BigEndian.PutUint32(flag[:], uint32(wire.FlagConnectToPortError))
			p.s.sendStream(wire.PayloadFlag, flag[:])
			st.Close()
			p.acct.agentClosed(st.ID())
			continue
		}
		if !p.track(c) {
			c.Close()
			st.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.transfer(st, c)
		}()
	}
}

// acceptError names why the smux session died.
func (p *muxPort) acceptError(err error) error {
	if errors.Is(err, io.ErrClosedPipe) && !p.cfg.KeepAliveDisabled {
		return fmt.Errorf("smux session closed by its keepalive: no smux frame from the client within %v (client version %s is not above %s, so the agent's smux keepalive is on)",
			p.cfg.KeepAliveTimeout, p.s.clientVersion(), muxKeepAliveOffAbove)
	}
	return fmt.Errorf("smux: %w", err)
}

// track registers a target connection for close; false once closed.
func (p *muxPort) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// transfer is the agent's handleDataTransfer: two copies, each closing the
// other side completely when it ends (the agent never half-closes: a client
// FIN closes the target connection, and whatever the target answers after
// that is lost).
func (p *muxPort) transfer(st *smux.Stream, c net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		n, _ := io.Copy(st, c)
		p.s.stats.BytesFromTarget.Add(n)
		st.Close()
	}()
	go func() {
		defer wg.Done()
		// smux's WriteTo hands each received frame to the target and
		// returns its tokens after the write: count the same way.
		io.Copy(&acctWriter{w: c, sid: st.ID(), acct: p.acct, stats: p.s.stats}, st)
		c.Close()
	}()
	wg.Wait()
	p.acct.agentClosed(st.ID())
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// acctWriter counts the bytes the stream copy delivered to the target.
type acctWriter struct {
	w     io.Writer
	sid   uint32
	acct  *muxAccount
	stats *Stats
}

func (a *acctWriter) Write(b []byte) (int, error) {
	n, err := a.w.Write(b)
	// smux returns the whole frame's tokens whatever the write did.
	a.acct.read(a.sid, len(b))
	a.stats.BytesToTarget.Add(int64(n))
	return n, err
}

// close is the agent's Stop: the smux session, both socket ends and every
// target connection are closed, which ends the pump, the accept loop and the
// copies.
func (p *muxPort) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	sess, agentEnd := p.sess, p.agentEnd
	p.mu.Unlock()
	if sess != nil {
		sess.Close()
	}
	if agentEnd != nil {
		agentEnd.Close()
	}
	for _, c := range conns {
		c.Close()
	}
}

func (p *muxPort) wait() { p.wg.Wait() }

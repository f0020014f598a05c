package agent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Port plugin property names and values the agent reads (docs/protocol.md 2.2).
const (
	propPortNumber          = "portNumber"
	propHost                = "host"
	propType                = "type"
	typeLocalPortForwarding = "LocalPortForwarding"
	muxMinClientVersion     = "1.1.70"
	targetReadBuffer        = 64 << 10
)

// portSession is one mode of the Port plugin. The basic mode lives in this
// file; mux mode (an xtaci/smux v1 server) in port_mux.go.
type portSession interface {
	// start runs after HandshakeComplete was sent: it dials the target. An
	// error ends the session with that text.
	start() error
	// handle processes one in-order input message on the reader goroutine.
	// false means "not ready": the message is not acked.
	handle(pt wire.PayloadType, payload []byte) bool
	// connected reports whether an Output could be written right now
	// without a dial (the reader then defers the write to batch it).
	connected() bool
	// close stops the plugin: target connections are closed, pumps end.
	close()
	// wait returns once every goroutine of the plugin has exited.
	wait()
}

// newPortSession picks the Port plugin mode as the real agent does: mux mode
// for type LocalPortForwarding when the client is at least 1.1.70
// (docs/protocol.md 11.1), basic mode otherwise (port_mux.go for mux mode).
// An agent that reports a version without mux (3.0.196.0 and before: the
// plugin's TCPMultiplexingSupportedAfterThisAgentVersion) plays the old
// agent it claims to be and always runs basic mode, so that a client
// choosing its mode by the agent's version meets what it chose for.
func newPortSession(s *session) portSession {
	if s.cfg.Properties[propType] == typeLocalPortForwarding && clientSupportsMux(s.clientVersion()) &&
		agentHasMux(s.cfg.AgentVersion) {
		return newMuxPort(s)
	}
	return newBasicPort(s)
}

// lastAgentWithoutMux: agents after this version serve mux mode.
const lastAgentWithoutMux = "3.0.196.0"

// agentHasMux reports whether an agent of this version has mux mode.
func agentHasMux(agentVersion string) bool {
	return isDottedVersion(agentVersion) && compareVersions(agentVersion, lastAgentWithoutMux) > 0
}

// clientSupportsMux is the agent's mux gate on the client's version. Empty or
// garbage versions sort below 1.1.70.
func clientSupportsMux(clientVersion string) bool {
	return isDottedVersion(clientVersion) && compareVersions(clientVersion, muxMinClientVersion) >= 0
}

// target is the agent's view of where the Port plugin forwards to.
type target struct {
	s          *session
	port       string
	host       string
	addrs      []netip.Addr // resolved once, tried in order on every dial
	resolveErr error
}

// resolve applies docs/protocol.md section 12 before any dial: resolve the host
// and refuse the session if any address is on the deny list. Loopback is
// allowed. A failed resolution is not fatal here: every dial then fails with
// "missing address".
func (t *target) resolve() error {
	if t.port == "" {
		return errors.New("Port number is empty in session properties")
	}
	if t.host == "" {
		return nil
	}
	addrs, err := t.s.cfg.Resolve(t.s.ctx, t.host)
	if err != nil {
		t.resolveErr = err
		t.s.log.Warn("resolving target host failed", "host", t.host, "err", err)
		return nil
	}
	for _, a := range addrs {
		a = a.Unmap()
		if denied(t.s.cfg.DenyList, a) {
			return fmt.Errorf("Forwarding to IP address %s is forbidden", a)
		}
		t.addrs = append(t.addrs, a)
	}
	return nil
}

// denied reports whether a is on the deny list (zones and IPv4-mapped forms
// ignored).
func denied(list []netip.Addr, a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	return slices.ContainsFunc(list, func(d netip.Addr) bool { return d.Unmap().WithZone("") == a })
}

// dial connects to the target: DefaultHost without a host property,
// otherwise the resolved addresses in order; the first success wins and the
// first error is reported.
func (t *target) dial() (net.Conn, error) {
	if t.host == "" {
		return t.s.cfg.DialTarget(t.s.ctx, net.JoinHostPort(t.s.cfg.DefaultHost, t.port))
	}
	if t.resolveErr != nil || len(t.addrs) == 0 {
		return nil, errors.New("missing address")
	}
	var first error
	for _, a := range t.addrs {
		c, err := t.s.cfg.DialTarget(t.s.ctx, net.JoinHostPort(a.String(), t.port))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// targetConn is one TCP connection to the target. dropped marks a connection
// the agent closed itself (DisconnectToPort, shutdown), whose read error is
// not the end of the session.
type targetConn struct {
	net.Conn
	dropped atomic.Bool
}

// basicPort is the Port plugin's basic mode (docs/protocol.md 11.3): the data
// channel carries the raw bytes of a single TCP connection.
type basicPort struct {
	s   *session
	t   target
	lpf bool // type LocalPortForwarding: target EOF redials instead of ending

	mu     sync.Mutex
	conn   *targetConn // nil before the first dial and after a disconnect
	ready  bool        // the first dial succeeded; later gaps redial on Output
	closed bool
	wg     sync.WaitGroup
	done   chan struct{}
}

func newBasicPort(s *session) *basicPort {
	props := s.cfg.Properties
	return &basicPort{
		s:    s,
		t:    target{s: s, port: props[propPortNumber], host: props[propHost]},
		lpf:  props[propType] == typeLocalPortForwarding,
		done: make(chan struct{}),
	}
}

func (p *basicPort) start() error {
	if err := p.t.resolve(); err != nil {
		return err
	}
	c, err := p.t.dial()
	if err != nil {
		return fmt.Errorf("Unable to connect to specified port: %w", err)
	}
	p.attach(c)
	return nil
}

// attach makes c the current target connection and starts its pump.
func (p *basicPort) attach(c net.Conn) *targetConn {
	tc := &targetConn{Conn: c}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return nil
	}
	p.conn = tc
	p.ready = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.pump(tc)
	}()
	return tc
}

// detach closes tc on the agent's initiative; the next Output redials.
func (p *basicPort) detach(tc *targetConn) {
	p.mu.Lock()
	if p.conn == tc {
		p.conn = nil
	}
	p.mu.Unlock()
	tc.dropped.Store(true)
	tc.Close()
}

func (p *basicPort) connected() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn != nil && !p.closed
}

func (p *basicPort) handle(pt wire.PayloadType, payload []byte) bool {
	switch pt {
	case wire.PayloadOutput:
		return p.writeTarget(payload)
	case wire.PayloadFlag:
		p.handleFlag(payload)
		return true
	case wire.PayloadSize:
		return true // terminal size: meaningless to a Port session
	default:
		p.s.violation("warning", "unexpected-payload-type", fmt.Sprintf("input_stream_data of payload type %d", pt))
		return true
	}
}

// writeTarget writes one Output payload to the target. Before the first
// dial, or when the write fails, the message is "not ready" (no ack) and the
// client's retransmission brings it back.
func (p *basicPort) writeTarget(payload []byte) bool {
	p.mu.Lock()
	tc, ready, closed := p.conn, p.ready, p.closed
	p.mu.Unlock()
	if closed || !ready {
		return false
	}
	if tc == nil {
		// After DisconnectToPort (or a LocalPortForwarding EOF) the agent
		// redials on the next Output.
		c, err := p.t.dial()
		if err != nil {
			p.s.log.Warn("redialling the target failed", "err", err)
			return false
		}
		if tc = p.attach(c); tc == nil {
			return false
		}
	}
	if _, err := tc.Write(payload); err != nil {
		p.s.log.Warn("writing to the target failed", "err", err)
		return false
	}
	p.s.stats.BytesToTarget.Add(int64(len(payload)))
	return true
}

// parseFlag reads a client Flag payload for either Port mode: 4 bytes
// big-endian, a value from 1 to 3; anything else is recorded as
// malformed-flag and ignored (acked), as the agent's binary.Read does.
func (s *session) parseFlag(payload []byte) (wire.Flag, bool) {
	if len(payload) != 4 {
		s.violation("error", "malformed-flag", fmt.Sprintf("Flag payload of %d bytes, want 4", len(payload)))
		return 0, false
	}
	f := wire.Flag(binary.BigEndian.Uint32(payload))
	if f < wire.FlagDisconnectToPort || f > wire.FlagConnectToPortError {
		s.violation("error", "malformed-flag", fmt.Sprintf("Flag value %d outside 1..3", uint32(f)))
		return 0, false
	}
	return f, true
}

func (p *basicPort) handleFlag(payload []byte) {
	f, ok := p.s.parseFlag(payload)
	if !ok {
		return
	}
	switch f {
	case wire.FlagDisconnectToPort:
		p.mu.Lock()
		tc := p.conn
		p.mu.Unlock()
		if tc != nil {
			p.s.log.Info("DisconnectToPort: closing the target connection")
			p.detach(tc)
		}
	case wire.FlagTerminateSession:
		p.s.log.Info("TerminateSession flag received")
		p.s.end(nil)
	case wire.FlagConnectToPortError:
		// The agent's own flag; ignored (and acked) like any other.
	}
}

// pump is the agent's TCP-to-channel loop: read at most 1024 bytes, send one
// message, sleep (1 ms unless unpaced); it does not read while paused.
//
// The reads go through a buffer, so that a fast target costs one syscall per
// 64 KiB rather than per 1 KiB; each message still carries at most 1024
// bytes, whatever was available, as the real agent's read returns.
func (p *basicPort) pump(tc *targetConn) {
	r := bufio.NewReaderSize(tc, targetReadBuffer)
	buf := make([]byte, maxReadChunk)
	for {
		if !p.s.waitUnpaused(p.done) {
			return
		}
		n, err := r.Read(buf)
		if n > 0 {
			p.s.stats.BytesFromTarget.Add(int64(n))
			p.s.sendStream(wire.PayloadOutput, buf[:n])
			if !p.s.q.Unpaced {
				time.Sleep(p.s.q.PaceSleep)
			}
		}
		if err == nil {
			continue
		}
		if tc.dropped.Load() {
			return
		}
		if p.lpf {
			// Basic-mode port forwarding: close and redial on the next Output.
			p.s.log.Info("target connection ended; redialling on the next Output", "err", err)
			p.detach(tc)
			return
		}
		if errors.Is(err, io.EOF) {
			p.s.log.Info("target closed the connection; ending the session")
			p.s.end(nil)
		} else {
			p.s.end(fmt.Errorf("reading from port %s failed: %w", p.t.port, err))
		}
		return
	}
}

func (p *basicPort) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	tc := p.conn
	p.conn = nil
	p.mu.Unlock()
	if tc != nil {
		tc.dropped.Store(true)
		tc.Close()
	}
}

func (p *basicPort) wait() { p.wg.Wait() }

package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmproxy/ssmproxy/internal/testkit"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// These tests drive the Forwarder against an in-process stand-in for the
// agent's Port plugin: an smux v1 server (mux mode) or a raw relay (basic
// mode) on the far end of a pipe, dialling real TCP listeners. The e2e
// suite runs the same paths through bin/fakeaws and real sessions.

// pipeSession is a port session whose data channel is one end of a
// socket pair.
type pipeSession struct {
	net.Conn
	// writeDelay holds every Write this long after its bytes went out, as
	// a slow send path does (TestForwardRefusedStreamFINRace).
	writeDelay time.Duration
	mux        bool
	agent      string
	done       chan struct{}
	closeOnce  sync.Once
	mu         sync.Mutex
	sent       []wire.Flag
}

func (p *pipeSession) Close() error {
	p.closeOnce.Do(func() { close(p.done); p.Conn.Close() })
	return nil
}
func (p *pipeSession) Write(b []byte) (int, error) {
	n, err := p.Conn.Write(b)
	time.Sleep(p.writeDelay)
	return n, err
}
func (p *pipeSession) Done() <-chan struct{} { return p.done }
func (p *pipeSession) Err() error            { return nil }
func (p *pipeSession) Mux() bool             { return p.mux }
func (p *pipeSession) AgentVersion() string  { return p.agent }
func (p *pipeSession) Drain(time.Duration) bool {
	return true
}
func (p *pipeSession) SendFlag(_ context.Context, f wire.Flag) error {
	p.mu.Lock()
	p.sent = append(p.sent, f)
	p.mu.Unlock()
	return nil
}
func (p *pipeSession) flags() []wire.Flag {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]wire.Flag(nil), p.sent...)
}

// socketPair is a connected pair of unix sockets (kernel-buffered, as the
// real agent's mux socket).
func socketPair(t *testing.T) (net.Conn, net.Conn) { return testkit.ConnPair(t, "unix") }

// agentStandIn plays the agent's side of sessions: addrs maps a
// destination to the TCP address it dials.
type agentStandIn struct {
	t          *testing.T
	writeDelay time.Duration
	mux        bool
	addrs      map[Destination]string
	opens      atomic.Int64
	mu         sync.Mutex
	sess       []*pipeSession
}

func (a *agentStandIn) open(_ context.Context, dest Destination, onFlag func(wire.Flag)) (PortSession, error) {
	a.opens.Add(1)
	client, agentEnd := socketPair(a.t)
	ps := &pipeSession{Conn: client, writeDelay: a.writeDelay, mux: a.mux, agent: "3.3.1142.0", done: make(chan struct{})}
	if !a.mux {
		ps.agent = "3.0.100.0"
	}
	a.mu.Lock()
	a.sess = append(a.sess, ps)
	a.mu.Unlock()
	addr := a.addrs[dest]
	a.t.Cleanup(func() { agentEnd.Close() })
	if !a.mux {
		go func() {
			// Basic mode: the pipe carries one TCP connection's bytes.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				agentEnd.Close()
				return
			}
			go func() { _, _ = io.Copy(c, agentEnd); c.Close() }()
			_, _ = io.Copy(agentEnd, c)
		}()
		return ps, nil
	}
	cfg := smux.DefaultConfig()
	cfg.KeepAliveDisabled = true
	srv, err := smux.Server(agentEnd, cfg)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			st, err := srv.AcceptStream()
			if err != nil {
				return
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				onFlag(wire.FlagConnectToPortError)
				st.Close()
				continue
			}
			go func() { _, _ = io.Copy(c, st); c.Close() }()
			go func() { _, _ = io.Copy(st, c); st.Close() }()
		}
	}()
	return ps, nil
}

// echoServer answers each connection with what it sent, then closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// refusedAddr is a loopback port nobody listens on.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startForward(t *testing.T, a *agentStandIn, dest Destination) (*Forwarder, string, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	f, err := NewForwarder(a.open, ForwardOptions{Linger: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.Serve(ctx, ln, dest) }()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		f.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f, ln.Addr().String(), logs
}

// roundTrip sends n random bytes through addr and checks the echo.
func roundTrip(addr string, n int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		return errors.New("echo differs")
	}
	return nil
}

// TestForwardMuxConcurrent: 32 connections at once share one session and
// every byte comes back (docs/protocol.md 11.4).
func TestForwardMuxConcurrent(t *testing.T) {
	dest := Destination{Host: "db.internal", Port: 5432}
	a := &agentStandIn{t: t, mux: true, addrs: map[Destination]string{dest: echoServer(t)}}
	_, addr, _ := startForward(t, a, dest)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- roundTrip(addr, 256<<10)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := a.opens.Load(); n != 1 {
		t.Fatalf("%d sessions opened for one destination, want 1", n)
	}
}

// TestForwardConnectToPortError: a destination the instance cannot reach
// closes that connection with one log line; the listener goes on serving.
func TestForwardConnectToPortError(t *testing.T) {
	dest := Destination{Host: "down.internal", Port: 1}
	a := &agentStandIn{t: t, mux: true, addrs: map[Destination]string{dest: refusedAddr(t)}}
	_, addr, logs := startForward(t, a, dest)
	for i := range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		_, _ = c.Write([]byte("hello"))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 10)); err != io.EOF {
			t.Fatalf("connection %d: read %d, %v; want EOF", i, n, err)
		}
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(logs.String(), "ConnectToPortError") < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := strings.Count(logs.String(), "ConnectToPortError"); got != 3 {
		t.Fatalf("%d ConnectToPortError lines, want 3 (one per connection):\n%s", got, logs)
	}
	if n := a.opens.Load(); n != 1 {
		t.Fatalf("%d sessions, want 1: the error must not end the session", n)
	}
}

// TestForwardReplacesEndedSession: when the service ended the session
// (idle timeout), the next connection starts a new one.
func TestForwardReplacesEndedSession(t *testing.T) {
	dest := Destination{Port: 80}
	a := &agentStandIn{t: t, mux: true, addrs: map[Destination]string{dest: echoServer(t)}}
	_, addr, logs := startForward(t, a, dest)
	if err := roundTrip(addr, 1000); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	first := a.sess[0]
	a.mu.Unlock()
	first.Close()
	if err := roundTrip(addr, 1000); err != nil {
		t.Fatal(err)
	}
	if n := a.opens.Load(); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	if !strings.Contains(logs.String(), "starting a new one") {
		t.Fatalf("no line about the replaced session:\n%s", logs)
	}
}

// TestForwardBasicMode: an agent without smux gets one connection at a
// time, and DisconnectToPort after each (docs/protocol.md 11.3).
func TestForwardBasicMode(t *testing.T) {
	dest := Destination{Port: 7}
	a := &agentStandIn{t: t, mux: false, addrs: map[Destination]string{dest: echoServer(t)}}
	f, addr, _ := startForward(t, a, dest)
	if err := roundTrip(addr, 64<<10); err != nil {
		t.Fatal(err)
	}
	if f.Mux(dest) {
		t.Fatal("Mux reports true for an old agent")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		fl := a.sess[0].flags()
		a.mu.Unlock()
		if len(fl) == 1 && fl[0] == wire.FlagDisconnectToPort {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no DisconnectToPort after the connection closed")
}

// socksConnect performs a SOCKS5 CONNECT to host:port through addr.
func socksConnect(addr, host string, port int) (net.Conn, byte, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	req := []byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}
	req = append(req, host...)
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		return nil, 0, err
	}
	var resp [12]byte
	if _, err := io.ReadFull(c, resp[:12]); err != nil {
		return nil, 0, err
	}
	if resp[0] != 5 || resp[1] != 0 {
		return nil, 0, errors.New("greeting refused")
	}
	return c, resp[3], nil
}

// TestSOCKSPerDestinationSessions: each destination gets its own session,
// reused by later connections to it.
func TestSOCKSPerDestinationSessions(t *testing.T) {
	d1 := Destination{Host: "a.internal", Port: 80}
	d2 := Destination{Host: "b.internal", Port: 81}
	a := &agentStandIn{t: t, mux: true, addrs: map[Destination]string{d1: echoServer(t), d2: echoServer(t)}}
	f, err := NewForwarder(a.open, ForwardOptions{Linger: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go f.ServeSOCKS(context.Background(), ln)
	defer func() { ln.Close(); f.Close() }()
	for i, d := range []Destination{d1, d2, d1, d2} {
		c, code, err := socksConnect(ln.Addr().String(), d.Host, d.Port)
		if err != nil || code != 0 {
			t.Fatalf("connect %d to %s: code %d, %v", i, d, code, err)
		}
		msg := []byte("hello " + strconv.Itoa(i))
		_, _ = c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo %d: %q, %v", i, got, err)
		}
		c.Close()
	}
	if n := a.opens.Load(); n != 2 {
		t.Fatalf("%d sessions for 2 destinations, want 2", n)
	}
}

// TestSOCKSRefusesOtherCommands: BIND and UDP ASSOCIATE get "command not
// supported", and no session is started.
func TestSOCKSRefusesOtherCommands(t *testing.T) {
	a := &agentStandIn{t: t, mux: true}
	f, _ := NewForwarder(a.open, ForwardOptions{})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go f.ServeSOCKS(context.Background(), ln)
	defer func() { ln.Close(); f.Close() }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80})
	var resp [12]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		t.Fatal(err)
	}
	if resp[3] != socksCmdNotSupported {
		t.Fatalf("reply %d, want %d", resp[3], socksCmdNotSupported)
	}
	if a.opens.Load() != 0 {
		t.Fatal("a session was started for a refused command")
	}
}

// TestForwardRefusedStreamFINRace: smux v1.5.x registers a new stream only
// after its SYN is written, so when the send path returns late (a full
// window, a slow machine) the agent's FIN for a refused stream can arrive
// first and smux drops it; the connection then hangs for ever. The tunnel
// holds incoming bytes back while a stream is being opened (muxConn).
func TestForwardRefusedStreamFINRace(t *testing.T) {
	dest := Destination{Host: "down.internal", Port: 1}
	a := &agentStandIn{t: t, mux: true, writeDelay: 100 * time.Millisecond, addrs: map[Destination]string{dest: refusedAddr(t)}}
	_, addr, _ := startForward(t, a, dest)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("refused destination: read %d, %v; want EOF (the agent's FIN was lost)", n, err)
	}
}

package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// echoStream opens a stream, writes data while reading its echo, and
// returns the echo.
func echoStream(ms *muxSession, data []byte) ([]byte, error) {
	st, err := ms.openStream()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	werr := make(chan error, 1)
	go func() {
		_, err := st.Write(data)
		werr <- err
	}()
	got := make([]byte, len(data))
	st.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.ReadFull(st, got); err != nil {
		return got, fmt.Errorf("reading the echo: %w", err)
	}
	return got, <-werr
}

// TestMuxConcurrentStreams: 32 smux streams at once, each moving 256 KiB to
// a loopback echo server and back through the fake agent's smux server; every
// stream gets exactly its own bytes back (docs/fakeaws.md 4.3). The agent is
// unpaced to keep the test short: pacing is the basic pump's, tested there.
func TestMuxConcurrentStreams(t *testing.T) {
	ms := startMux(t, Config{Properties: map[string]string{"portNumber": echoServer(t)}, Quirks: Quirks{Unpaced: true}}, "1.2.804.0", nil)
	const streams, size = 32, 256 << 10
	var wg sync.WaitGroup
	errs := make([]error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := randomBytes(size, uint64(i+1))
			got, err := echoStream(ms, data)
			if err == nil && sha256.Sum256(got) != sha256.Sum256(data) {
				err = fmt.Errorf("echo differs (first difference at %d)", firstDiff(got, data))
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
	}
	st := ms.r.stats
	if n := st.MuxStreamsAccepted.Load(); n != streams {
		t.Errorf("MuxStreamsAccepted = %d, want %d", n, streams)
	}
	if n := st.BytesToTarget.Load(); n != streams*size {
		t.Errorf("BytesToTarget = %d, want %d", n, streams*size)
	}
	if v := ms.r.viol.all(); len(v) != 0 {
		t.Errorf("violations %v", v)
	}
	t.Logf("peak buffered inside the agent's smux: %d bytes", st.MuxBufferedPeak.Load())
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if !bytes.Equal(a, b) {
		return min(len(a), len(b))
	}
	return -1
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	return port
}

// expectStreamClosed opens a stream, writes to it and expects the agent to
// close it (EOF) after answering ConnectToPortError.
func expectStreamClosed(t *testing.T, ms *muxSession) {
	t.Helper()
	st, err := ms.openStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write([]byte("anyone?"))
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := st.Read(make([]byte, 16)); err != io.EOF {
		t.Fatalf("refused stream %d: read %d bytes, %v; want EOF\n%s", st.ID(), n, err, ms.state())
	}
}

// TestMuxRefusedDialIsPerStream: the agent dials the destination for every
// accepted stream; the second dial here is refused by the kernel (a closed
// port). That stream gets ConnectToPortError (a Flag message, 4 bytes big
// endian 3) and is closed; the streams before and after it work and the
// session stays.
func TestMuxRefusedDialIsPerStream(t *testing.T) {
	echo, closed := echoServer(t), closedPort(t)
	var dials atomic.Int32
	var d net.Dialer
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if dials.Add(1) == 2 {
			addr = net.JoinHostPort("127.0.0.1", closed)
		}
		return d.DialContext(ctx, "tcp", addr)
	}
	ms := startMux(t, Config{Properties: map[string]string{"portNumber": echo}, DialTarget: dial}, "1.2.804.0", nil)
	first, err := ms.openStream()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.Write([]byte("one"))
	readExactly(t, first, "one")
	expectStreamClosed(t, ms)
	flags := ms.waitFlags(t, 1)
	if len(flags) != 1 || !bytes.Equal(flags[0], []byte{0, 0, 0, 3}) {
		t.Fatalf("flags %x, want one ConnectToPortError", flags)
	}
	if got, err := echoStream(ms, []byte("three")); err != nil || string(got) != "three" {
		t.Fatalf("stream after the refusal: %q, %v", got, err)
	}
	first.Write([]byte("one again"))
	readExactly(t, first, "one again")
	st := ms.r.stats
	if a, f := st.MuxStreamsAccepted.Load(), st.MuxDialsFailed.Load(); a != 3 || f != 1 {
		t.Fatalf("streams accepted %d, dials failed %d; want 3 and 1", a, f)
	}
	if !ms.running() {
		t.Fatal("the session ended")
	}
}

// TestMuxRemoteHost: the ToRemoteHost document in mux mode (docs/protocol.md
// 12). A host resolving to a deny-listed address refuses the session before
// any stream; a host that does not resolve leaves the session up and answers
// every stream with ConnectToPortError ("missing address"); a resolving host
// is dialled per stream.
func TestMuxRemoteHost(t *testing.T) {
	t.Run("deny-listed", func(t *testing.T) {
		ms := startMuxPeer(t, Config{Properties: map[string]string{"portNumber": "80", "host": "metadata.internal"},
			Resolve: fixedResolver("169.254.169.254")}, "1.2.804.0")
		err := ms.r.wait(t, 10*time.Second)
		if err == nil || !strings.Contains(err.Error(), "Forwarding to IP address 169.254.169.254 is forbidden") {
			t.Fatalf("Run = %v", err)
		}
	})
	t.Run("missing-address", func(t *testing.T) {
		fail := func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("no such host") }
		ms := startMux(t, Config{Properties: map[string]string{"portNumber": "80", "host": "db.invalid"}, Resolve: fail}, "1.2.804.0", nil)
		expectStreamClosed(t, ms)
		expectStreamClosed(t, ms)
		if flags := ms.waitFlags(t, 2); len(flags) != 2 {
			t.Fatalf("flags %x, want two ConnectToPortError", flags)
		}
		if !ms.running() {
			t.Fatal("the session ended")
		}
	})
	t.Run("resolved", func(t *testing.T) {
		ms := startMux(t, Config{Properties: map[string]string{"portNumber": echoServer(t), "host": "db.internal"},
			Resolve: fixedResolver("127.0.0.1")}, "1.2.804.0", nil)
		if got, err := echoStream(ms, []byte("via host")); err != nil || string(got) != "via host" {
			t.Fatalf("echo: %q, %v", got, err)
		}
	})
}

// slowSink accepts one connection, reads size bytes at about rate bytes per
// second through a small receive buffer, and answers their SHA-256.
func slowSink(t *testing.T, size, rate int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		h := sha256.New()
		buf := make([]byte, 16<<10)
		tick := time.Duration(len(buf)) * time.Second / time.Duration(rate)
		for n := 0; n < size; {
			k, err := c.Read(buf[:min(len(buf), size-n)])
			h.Write(buf[:k])
			n += k
			if err != nil {
				return
			}
			select {
			case <-stop: // the test is over: do not drain kernel buffers
				return
			case <-time.After(tick * time.Duration(k) / time.Duration(len(buf))):
			}
		}
		c.Write(h.Sum(nil))
		io.Copy(io.Discard, c)
	}()
	t.Cleanup(func() { close(stop); ln.Close(); <-done })
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// smallBufferDial dials with a 16 KiB send buffer, so that a slow
// destination's backlog stays in the agent's smux rather than in the kernel.
func smallBufferDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	}
	return c, err
}

// TestMuxSlowDestination: a destination reading about 1 MiB/s while the
// client pushes 8 MiB into one stream. The agent's smux holds what the
// destination has not taken, up to its 4 MiB receive buffer; beyond that it
// stops reading the socket, the agent's writes into it block, and its acks
// wait (the back-pressure a real session gets). The session stays up, every
// byte arrives (the destination's SHA-256 matches), and the peak buffered
// inside the agent is reported: above zero and at most smux's 4 MiB plus
// one frame, the socket buffer and one 64 KiB Output batch (1 MiB slack).
// Kernel buffering toward the destination is kept small (16 KiB each way)
// so that smux, not TCP, holds the backlog. 64 KiB/s would take 128 s; at
// 1 MiB/s the test takes about 8 s.
func TestMuxSlowDestination(t *testing.T) {
	const size, rate = 8 << 20, 1 << 20
	port := slowSink(t, size, rate)
	ms := startMux(t, Config{Properties: map[string]string{"portNumber": port}, DialTarget: smallBufferDial}, "1.2.804.0", nil)
	st, err := ms.openStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	data := randomBytes(size, 42)
	start := time.Now()
	if _, err := st.Write(data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, sha256.Size)
	st.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.ReadFull(st, got); err != nil {
		t.Fatalf("reading the digest: %v (session running: %v)", err, ms.running())
	}
	if want := sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		t.Fatal("the destination's SHA-256 differs from what the client sent")
	}
	if !ms.running() {
		t.Fatal("the session ended")
	}
	peak := ms.r.stats.MuxBufferedPeak.Load()
	t.Logf("8 MiB through a 1 MiB/s destination in %v; peak buffered inside the agent's smux: %d bytes (%.2f MiB)",
		time.Since(start).Round(time.Millisecond), peak, float64(peak)/(1<<20))
	if peak <= 0 || peak > 5<<20 {
		t.Fatalf("peak buffered %d, want 0 < peak <= 5 MiB", peak)
	}
	if v := ms.r.viol.all(); len(v) != 0 {
		t.Fatalf("violations %v", v)
	}
}

// TestMuxShutdown: ending the session stops every goroutine of mux mode
// (accept loop, pump, stream copies, smux's own) and closes every target
// connection, whatever they are blocked on; the harness's leak check
// (checkNoLeaks, run by startAgent's cleanup) counts the fake's goroutines
// and smux's.
func TestMuxShutdown(t *testing.T) {
	t.Run("cancel-while-blocked", func(t *testing.T) {
		// Stream 1 fills the agent's smux through a 64 KiB/s destination,
		// so the reader blocks writing into the socket; stream 2's dial
		// hangs, so the accept loop blocks in it.
		sink := slowSink(t, 8<<20, 64<<10)
		var dials atomic.Int32
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			if dials.Add(1) == 2 {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return smallBufferDial(ctx, addr)
		}
		ms := startMux(t, Config{Properties: map[string]string{"portNumber": sink}, DialTarget: dial}, "1.2.804.0", nil)
		first, err := ms.openStream()
		if err != nil {
			t.Fatal(err)
		}
		go first.Write(randomBytes(6<<20, 7))
		if !ms.p.waitFor(20*time.Second, func() bool { return ms.r.stats.MuxBuffered.Load() > 3<<20 }) {
			t.Fatalf("the agent's smux never filled: %d bytes", ms.r.stats.MuxBuffered.Load())
		}
		if _, err := ms.openStream(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		ms.r.cancel()
		ms.r.wait(t, 5*time.Second)
	})
	t.Run("terminate-session-flag", func(t *testing.T) {
		ms := startMux(t, Config{Properties: map[string]string{"portNumber": echoServer(t)}}, "1.2.804.0", nil)
		for i := range 3 {
			st, err := ms.openStream()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			msg := fmt.Sprint("stream ", i)
			st.Write([]byte(msg))
			readExactly(t, st, msg)
		}
		var flag [4]byte
		binary.BigEndian.PutUint32(flag[:], uint32(wire.FlagTerminateSession))
		ms.p.sendMsg(wire.PayloadFlag, flag[:])
		if err := ms.r.wait(t, 5*time.Second); err != nil {
			t.Fatalf("Run = %v, want nil after TerminateSession", err)
		}
	})
}

// TestMuxBlockedWriteHoldsAcks: with a destination that reads nothing, the
// agent's smux fills (4 MiB), stops reading the socket, and the agent's
// write of the next Output blocks on the reader goroutine: it acks nothing
// more and processes no further input, not even a TerminateSession flag,
// exactly as the real agent (write, then ack). Once the destination reads,
// the backlog flows, the acks resume and the flag, in its place in the
// stream, ends the session.
func TestMuxBlockedWriteHoldsAcks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release, got := make(chan struct{}), make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		<-release
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	t.Cleanup(func() { ln.Close() })
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ms := startMux(t, Config{Properties: map[string]string{"portNumber": port}, DialTarget: smallBufferDial}, "1.2.804.0", nil)
	st, err := ms.openStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	go st.Write(randomBytes(8<<20, 3))
	if !ms.p.waitFor(20*time.Second, func() bool { return ms.r.stats.MuxBuffered.Load() >= 4<<20 }) {
		t.Fatalf("the agent's smux never filled: %d bytes", ms.r.stats.MuxBuffered.Load())
	}
	acked := func() (n int) {
		ms.p.mu.Lock()
		defer ms.p.mu.Unlock()
		return len(ms.p.acks)
	}
	time.Sleep(300 * time.Millisecond) // acks already on the wire arrive
	before := acked()
	var flag [4]byte
	binary.BigEndian.PutUint32(flag[:], uint32(wire.FlagTerminateSession))
	ms.p.sendOutOfWindow(wire.PayloadFlag, flag[:]) // the window is full
	time.Sleep(time.Second)
	if after := acked(); after != before {
		t.Fatalf("the agent acked %d more messages while its smux was full", after-before)
	}
	if !ms.running() {
		t.Fatal("the session ended while its input was blocked")
	}
	t.Logf("stalled with %d bytes buffered in the agent's smux, %d messages acked", ms.r.stats.MuxBuffered.Load(), before)
	close(release)
	if err := ms.r.wait(t, 30*time.Second); err != nil {
		t.Fatalf("Run = %v, want nil from the TerminateSession flag", err)
	}
	if acked() <= before {
		t.Fatal("no acks after the destination started reading")
	}
	if n := <-got; n <= 0 {
		t.Fatalf("the destination received %d bytes", n)
	}
}

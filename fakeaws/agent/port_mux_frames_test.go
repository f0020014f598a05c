package agent

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// smuxFrame builds one smux frame by hand: version, cmd, length (LE), stream
// id (LE), data.
func smuxFrame(ver, cmd byte, sid uint32, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	b[0], b[1] = ver, cmd
	binary.LittleEndian.PutUint16(b[2:], uint16(len(data)))
	binary.LittleEndian.PutUint32(b[4:], sid)
	return append(b, data...)
}

// TestMuxFrameBoundaries: Output boundaries mean nothing in mux mode. A SYN
// header split 3+5 over two messages and a PSH split mid-header and
// mid-data reach the agent's smux server as one byte stream: the stream is
// accepted, its bytes reach the target, nothing is recorded.
func TestMuxFrameBoundaries(t *testing.T) {
	tgt := newTarget(t, false)
	ms := startMuxPeer(t, Config{Properties: map[string]string{"portNumber": tgt.port()}}, "1.2.804.0")
	stream := append(smuxFrame(1, smuxCmdSYN, 1, nil), smuxFrame(1, smuxCmdPSH, 1, []byte("hello, target"))...)
	for _, cut := range [][2]int{{0, 3}, {3, 8}, {8, 12}, {12, 18}, {18, len(stream)}} {
		ms.p.sendMsg(1, stream[cut[0]:cut[1]]) // PayloadOutput
	}
	c := tgt.accept(t)
	readExactly(t, c, "hello, target")
	if v := ms.r.viol.all(); len(v) != 0 {
		t.Fatalf("violations %v", v)
	}
	if !ms.running() {
		t.Fatal("the session ended")
	}
}

// TestMuxFrameViolations: what the agent's smux server (xtaci/smux v1.5.15
// recvLoop) stops on ends the session with ErrInvalidProtocol and is
// recorded as an error; what it swallows silently is recorded once as a
// warning and the session goes on (docs/fakeaws.md 4.3).
func TestMuxFrameViolations(t *testing.T) {
	syn := smuxFrame(1, smuxCmdSYN, 1, nil)
	// A NOP whose length field says 8: smux reads no data after a NOP, so
	// the next 8 bytes (a SYN here) are parsed as a header and the stream
	// opens; the client meant them as NOP data.
	nop8 := smuxFrame(1, smuxCmdNOP, 0, nil)
	binary.LittleEndian.PutUint16(nop8[2:], 8)
	for _, c := range []struct {
		name  string
		bytes []byte
		code  string
		fatal bool
	}{
		{"version 2", smuxFrame(2, smuxCmdSYN, 1, nil), "smux-version-2", true},
		{"raw bytes", []byte("GET / HTTP/1.1\r\n\r\n"), "raw-bytes-into-mux", true},
		{"cmd 5 after a valid frame", append(append([]byte{}, syn...), smuxFrame(1, 5, 1, nil)...), "smux-invalid-frame", true},
		{"UPD in version 1", append(append([]byte{}, syn...), append(smuxFrame(1, smuxCmdUPD, 1, nil), make([]byte, 8)...)...), "smux-upd-in-v1", false},
		{"PSH for an unopened stream", smuxFrame(1, smuxCmdPSH, 7, []byte("lost")), "smux-data-for-unknown-stream", false},
		{"duplicate SYN", append(append([]byte{}, syn...), syn...), "smux-duplicate-syn", false},
		{"length on a NOP", append(nop8, syn...), "smux-length-on-control-frame", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ms := startMuxPeer(t, Config{Properties: map[string]string{"portNumber": echoServer(t)}}, "1.2.804.0")
			ms.p.write(c.bytes)
			if c.fatal {
				err := ms.r.wait(t, 10*time.Second)
				if err == nil || !strings.Contains(err.Error(), "invalid protocol") {
					t.Fatalf("Run = %v, want smux's invalid protocol", err)
				}
			} else {
				// Acked means written into the smux server.
				if !ms.p.waitFor(10*time.Second, func() bool { return len(ms.p.unacked) == 0 }) {
					t.Fatal("the frames were never acked")
				}
				time.Sleep(200 * time.Millisecond)
				if !ms.running() {
					t.Fatalf("the session ended: %v", ms.r.wait(t, time.Second))
				}
			}
			v := ms.r.viol.all()
			sev := "warning/"
			if c.fatal {
				sev = "error/"
			}
			if len(v) != 1 || v[0] != sev+c.code {
				t.Fatalf("violations %v, want exactly %s%s", v, sev, c.code)
			}
		})
	}
}

// TestMuxKeepAliveByClientVersion: the agent's smux keepalive is on for a
// client at or below 1.2.331.0 and off above it
// (muxKeepAliveDisabledAfterThisClientVersion in the agent's port.go). With
// it on, a client that sends no smux frame loses the session after the
// keepalive timeout; NOPs from the client keep it; with it off, an idle
// session stays. The test hook muxTune shortens smux's 10 s / 30 s timers to
// 100 ms / 500 ms so the matrix runs in seconds.
func TestMuxKeepAliveByClientVersion(t *testing.T) {
	short := func(c *smux.Config) {
		c.KeepAliveInterval, c.KeepAliveTimeout = 100*time.Millisecond, 500*time.Millisecond
	}
	for _, c := range []struct {
		version   string
		clientNOP bool
		survives  bool
	}{
		{"1.2.331.0", false, false},
		{"1.2.331.0", true, true},
		{"1.2.332.0", false, true},
	} {
		name := c.version
		if c.clientNOP {
			name += "/client-nops"
		}
		t.Run(name, func(t *testing.T) {
			port := echoServer(t)
			ms := startMux(t, Config{Properties: map[string]string{"portNumber": port}, muxTune: short}, c.version,
				func(sc *smux.Config) {
					if c.clientNOP {
						sc.KeepAliveDisabled = false
						short(sc)
					}
				})
			if !c.survives {
				err := ms.r.wait(t, 10*time.Second)
				if err == nil || !strings.Contains(err.Error(), "keepalive") {
					t.Fatalf("Run = %v, want the keepalive timeout", err)
				}
				return
			}
			time.Sleep(2 * time.Second) // four keepalive timeouts
			if !ms.running() {
				t.Fatalf("the session ended: %v", ms.r.wait(t, time.Second))
			}
			got, err := echoStream(ms, []byte("still there"))
			if err != nil || string(got) != "still there" {
				t.Fatalf("echo after idling: %q, %v", got, err)
			}
		})
	}
}

// TestMuxFlags: in mux mode the agent acts only on TerminateSession
// (TestMuxShutdown); DisconnectToPort is acked and ignored, recorded once as
// a warning because the client expected something to close; a malformed
// flag is recorded as in basic mode. Streams keep working.
func TestMuxFlags(t *testing.T) {
	ms := startMux(t, Config{Properties: map[string]string{"portNumber": echoServer(t)}}, "1.2.804.0", nil)
	st, err := ms.openStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write([]byte("before"))
	readExactly(t, st, "before")
	ms.p.sendMsg(wire.PayloadFlag, []byte{0, 0, 0, 1}) // DisconnectToPort
	ms.p.sendMsg(wire.PayloadFlag, []byte{0, 0, 0, 1})
	ms.p.sendMsg(wire.PayloadFlag, []byte{0, 1})
	st.Write([]byte("after"))
	readExactly(t, st, "after")
	if v := ms.r.viol.all(); len(v) != 2 || v[0] != "warning/disconnect-to-port-in-mux" || v[1] != "error/malformed-flag" {
		t.Fatalf("violations %v", v)
	}
	if !ms.running() {
		t.Fatal("the session ended")
	}
}

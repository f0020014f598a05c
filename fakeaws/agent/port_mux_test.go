package agent

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// handshakeAs completes the handshake on l answering as clientVersion.
func handshakeAs(t *testing.T, l *leg, clientVersion string) {
	t.Helper()
	req := recv(t, l, 10*time.Second)
	l.send(ackFrame(req))
	payload, _ := json.Marshal(wire.HandshakeResponse{ClientVersion: clientVersion,
		ProcessedClientActions: []wire.ProcessedClientAction{{ActionType: wire.ActionSessionType, ActionStatus: wire.ActionSuccess}}})
	_, b := inputFrame(0, wire.PayloadHandshakeResponse, payload)
	l.send(b)
	for {
		f := recv(t, l, 5*time.Second)
		if f.MessageType == wire.TypeOutputStreamData && f.PayloadType == wire.PayloadHandshakeComplete {
			l.send(ackFrame(f))
			return
		}
	}
}

// TestLocalPortForwardingModes: a port-forwarding document puts the agent in
// mux mode for clients from 1.1.70 on, where raw bytes break the session as
// they break a real smux server, reach no target, and are recorded; older
// clients get basic mode, where raw bytes are the stream (docs/protocol.md
// 11.1, docs/fakeaws.md 4.2).
func TestLocalPortForwardingModes(t *testing.T) {
	for _, v := range []string{"1.1.70", "1.2.804.0"} {
		t.Run("mux/raw-bytes/"+v, func(t *testing.T) { testRawBytesIntoMux(t, v) })
	}
	t.Run("mux/smux-frame", func(t *testing.T) {
		s := start(t, true, Config{Properties: map[string]string{"portNumber": "1", "type": "LocalPortForwarding"}})
		handshakeAs(t, s.l, "1.2.804.0")
		in, b := inputFrame(1, wire.PayloadOutput, []byte{1, 0, 0, 0, 3, 0, 0, 0}) // SYN of stream 3
		// Port 1 refuses: the stream gets ConnectToPortError, the session
		// stays. The message is resent until the smux server is up.
		resend := time.NewTicker(250 * time.Millisecond)
		defer resend.Stop()
		s.l.send(b)
		for {
			var f *wire.Frame
			select {
			case f = <-s.l.frames:
			case <-resend.C:
				s.l.send(b)
				continue
			case <-time.After(10 * time.Second):
				t.Fatal("no ConnectToPortError")
			}
			if f.MessageType == wire.TypeOutputStreamData && f.PayloadType == wire.PayloadFlag {
				if string(f.Payload) != "\x00\x00\x00\x03" {
					t.Fatalf("flag payload %x, want ConnectToPortError", f.Payload)
				}
				break
			}
			if f.MessageType == wire.TypeAcknowledge {
				if a := ackOf(t, f); a.AcknowledgedMessageSequenceNumber != in.SequenceNumber {
					t.Fatalf("ack %+v", a)
				}
			}
		}
		if s.r.viol.has("raw-bytes-into-mux") {
			t.Fatalf("an smux frame was taken for raw bytes")
		}
		if n := s.r.stats.MuxDialsFailed.Load(); n != 1 {
			t.Fatalf("MuxDialsFailed = %d", n)
		}
	})
	// Basic mode, whatever the document says: a client below 1.1.70, and
	// an agent from before mux mode existed (3.0.196.0 or older), which
	// serves basic mode to any client, as the official plugin expects of
	// it (it picks basic mode for agents up to 3.0.196.0).
	for _, c := range []struct{ name, agent, client string }{
		{"basic/old-agent", "3.0.100.0", "1.3.0.0"},
		{"basic/old-client", "", "1.1.69"},
		{"basic/old-agent-3.0.196.0", "3.0.196.0", "1.2.804.0"},
		{"basic/old-agent-2.3.722.0", "2.3.722.0", "1.2.804.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tgt := newTarget(t, false)
			s := start(t, true, Config{AgentVersion: c.agent, Properties: map[string]string{"portNumber": tgt.port(), "type": "LocalPortForwarding"}})
			handshakeAs(t, s.l, c.client)
			in, b := inputFrame(1, wire.PayloadOutput, []byte("raw"))
			sendUntilAcked(t, s.l, in, b)
			conn := <-tgt.conns
			readExactly(t, conn, "raw")
			if s.r.viol.has("raw-bytes-into-mux") {
				t.Fatal("basic mode recorded a mux violation")
			}
		})
	}
}

// testRawBytesIntoMux: raw bytes where the agent's smux server reads frames
// end the session with smux's ErrInvalidProtocol, reach no target, and are
// recorded as raw-bytes-into-mux.
func testRawBytesIntoMux(t *testing.T, clientVersion string) {
	tgt := newTarget(t, true)
	s := start(t, true, Config{Properties: map[string]string{"portNumber": tgt.port(), "type": "LocalPortForwarding"}})
	handshakeAs(t, s.l, clientVersion)
	in, b := inputFrame(1, wire.PayloadOutput, []byte("SSH-2.0-OpenSSH_9.2\r\n"))
	sendUntilAcked(t, s.l, in, b) // not ready until the smux server is up
	err := s.r.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "invalid protocol") {
		t.Fatalf("Run = %v, want the smux protocol error", err)
	}
	if !s.r.viol.has("raw-bytes-into-mux") {
		t.Fatalf("violations %v, want raw-bytes-into-mux", s.r.viol.all())
	}
	if n := s.r.stats.BytesToTarget.Load(); n != 0 {
		t.Fatalf("%d bytes reached a target", n)
	}
	select {
	case <-tgt.conns:
		t.Fatal("mux mode dialled the target for raw bytes")
	default:
	}
}

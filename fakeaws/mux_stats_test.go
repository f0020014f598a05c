package fakeaws

import (
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// TestMuxStatsExposed: port-forwarding sessions through the fake's MGS put
// their agent in mux mode; smux frames written by hand (a stream with data
// to an echo target, and a stream to a closed port) show up as streams
// accepted, a failed dial and a buffered peak in /_fake/stats, the session
// list and AgentStats (docs/fakeaws.md 4.3 and 8).
func TestMuxStatsExposed(t *testing.T) {
	echo := Listen(t, Echo) // first, so that its cleanup waits for the server's
	ts := StartTest(t, Options{})
	psh := append([]byte{1, 2, 5, 0, 1, 0, 0, 0}, "hello"...)
	ok := rawMuxSession(t, ts, echo, append([]byte{1, 0, 0, 0, 1, 0, 0, 0}, psh...))
	refused := rawMuxSession(t, ts, closedPort(t), []byte{1, 0, 0, 0, 1, 0, 0, 0})
	if !WaitFor(10*time.Second, func() bool { return ts.AgentStats(refused)["mux_dials_failed"] == 1 }) {
		t.Fatalf("agent stats of the refused session: %v", ts.AgentStats(refused))
	}
	if a := ts.AgentStats(ok); a["mux_streams_accepted"] != 1 || a["mux_dials_failed"] != 0 || a["mux_buffered_peak"] < 5 {
		t.Fatalf("agent stats of the echo session: %v", a)
	}
	st := ts.Stats()
	if st.MuxStreamsAccepted != 2 || st.MuxDialsFailed != 1 || st.MuxBufferedPeak < 5 {
		t.Fatalf("stats: streams %d, dials failed %d, peak %d", st.MuxStreamsAccepted, st.MuxDialsFailed, st.MuxBufferedPeak)
	}
	for _, si := range ts.SessionInfos() {
		if si.ID == refused && (si.MuxStreamsAccepted != 1 || si.MuxDialsFailed != 1) || si.ID == ok && si.MuxBufferedPeak < 5 {
			t.Fatalf("session info %+v", si)
		}
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// rawMuxSession starts an AWS-StartPortForwardingSession to port, plays the
// client's handshake as version 1.2.804.0 (mux mode) on a bare websocket and
// sends smux as one Output message, resent until the agent's smux server has
// accepted a stream (it refuses Output as not ready before that). It returns
// the session id.
func rawMuxSession(t *testing.T, ts *TestServer, port string, smux []byte) string {
	t.Helper()
	resp, ws := openRawLeg(t, ts, "AWS-StartPortForwardingSession", port, "1.2.804.0")
	encode := func(typ string, seq int64, flags uint64, pt wire.PayloadType, payload []byte) []byte {
		b, err := wire.Encode(&wire.Frame{MessageType: typ, SchemaVersion: 1, CreatedDate: uint64(time.Now().UnixMilli()),
			SequenceNumber: seq, Flags: flags, MessageID: uuid.New(), PayloadType: pt, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write := func(b []byte) {
		if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	send := func(typ string, seq int64, flags uint64, pt wire.PayloadType, payload []byte) {
		write(encode(typ, seq, flags, pt, payload))
	}
	// The client's side of the handshake: ack the request, answer it, and
	// wait for HandshakeComplete (data before it is a violation).
	for done := false; !done; {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		f, err := wire.DecodeHeader(b)
		if err != nil || f.MessageType != wire.TypeOutputStreamData {
			continue
		}
		send(wire.TypeAcknowledge, 0, wire.FlagsAck, wire.PayloadNone, wire.AppendAcknowledge(nil, wire.TypeOutputStreamData, f.MessageID, f.SequenceNumber))
		switch f.PayloadType {
		case wire.PayloadHandshakeRequest:
			hr, _ := json.Marshal(wire.HandshakeResponse{ClientVersion: "1.2.804.0",
				ProcessedClientActions: []wire.ProcessedClientAction{{ActionType: wire.ActionSessionType, ActionStatus: wire.ActionSuccess}}})
			send(wire.TypeInputStreamData, 0, 0, wire.PayloadHandshakeResponse, hr)
		case wire.PayloadHandshakeComplete:
			done = true
		}
	}
	ws.SetReadDeadline(time.Time{})
	go func() { // drain the client leg
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	data := encode(wire.TypeInputStreamData, 1, 0, wire.PayloadOutput, smux) // resent byte for byte
	if !WaitFor(10*time.Second, func() bool {
		write(data)
		time.Sleep(50 * time.Millisecond)
		return ts.AgentStats(resp.SessionID)["mux_streams_accepted"] >= 1
	}) {
		t.Fatalf("the agent's smux never accepted a stream: %v", ts.AgentStats(resp.SessionID))
	}
	return resp.SessionID
}

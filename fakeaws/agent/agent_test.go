package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// testSession bundles what most tests need.
// waitTerminating fails t unless the agent's next state is Terminating.
func (s *testSession) waitTerminating(t *testing.T) {
	t.Helper()
	select {
	case st := <-s.l.states:
		if st != "Terminating" {
			t.Fatalf("state %q", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Terminating state")
	}
}

type testSession struct {
	m   *mgs
	tgt *tcpTarget
	r   *runner
	l   *leg
}

func start(t testing.TB, echo bool, cfg Config) *testSession {
	t.Helper()
	m := newMGS(t)
	tgt := newTarget(t, echo)
	if cfg.Properties == nil {
		cfg.Properties = map[string]string{"portNumber": tgt.port()}
	}
	r := startAgent(t, m, cfg)
	return &testSession{m: m, tgt: tgt, r: r, l: m.nextLeg(t)}
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestHandshakeWireFormat(t *testing.T) {
	s := start(t, true, Config{Properties: map[string]string{"portNumber": "1"}})
	req := recv(t, s.l, 5*time.Second)
	if req.MessageType != wire.TypeOutputStreamData || req.SequenceNumber != 0 || req.Flags != 1 || req.PayloadType != 5 {
		t.Fatalf("HandshakeRequest header: %+v", req)
	}
	want := `{"AgentVersion":"3.3.1142.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"portNumber":"1"}}}]}`
	if string(req.Payload) != want {
		t.Fatalf("HandshakeRequest payload\n got %s\nwant %s", req.Payload, want)
	}
	// Unacked, the request is retransmitted byte for byte.
	again := recv(t, s.l, 5*time.Second)
	if again.MessageID != req.MessageID || again.CreatedDate != req.CreatedDate || again.SequenceNumber != 0 {
		t.Fatalf("retransmission differs: %+v vs %+v", again, req)
	}
	s.l.send(ackFrame(req))
	resp, b := inputFrame(0, wire.PayloadHandshakeResponse, handshakeResponse(wire.ActionSuccess))
	s.l.send(b)
	var ack *wire.Frame
	for ack = recv(t, s.l, 5*time.Second); ack.MessageType == wire.TypeOutputStreamData && ack.SequenceNumber == 0; ack = recv(t, s.l, 5*time.Second) {
	}
	wantAck := `{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"` + resp.MessageID.String() + `","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}`
	if ack.MessageType != wire.TypeAcknowledge || ack.Flags != 3 || ack.SequenceNumber != 0 || ack.PayloadType != 0 || string(ack.Payload) != wantAck {
		t.Fatalf("ack %+v payload %s", ack, ack.Payload)
	}
	done := recv(t, s.l, 5*time.Second)
	if done.SequenceNumber != 1 || done.Flags != 0 || done.PayloadType != 7 {
		t.Fatalf("HandshakeComplete header %+v", done)
	}
	var hc map[string]any
	if err := json.Unmarshal(done.Payload, &hc); err != nil || len(hc) != 2 || !strings.HasPrefix(string(done.Payload), `{"HandshakeTimeToComplete":`) {
		t.Fatalf("HandshakeComplete payload %s", done.Payload)
	}
	if v := s.r.viol.all(); len(v) != 0 {
		t.Fatalf("violations: %v", v)
	}
	// Target port 1 refuses: the run fails with the real text.
	s.l.send(ackFrame(done))
	err := s.r.wait(t, 10*time.Second)
	if err == nil || !strings.HasPrefix(err.Error(), "Unable to connect to specified port: ") {
		t.Fatalf("Run = %v", err)
	}
	s.waitTerminating(t)
}

func TestHandshakeQuirks(t *testing.T) {
	s := start(t, true, Config{AgentVersion: "3.1.1000.0", Quirks: Quirks{SessionTypeOverride: "Standard_Stream", ExtraAction: "Frobnicate"},
		Properties: map[string]string{"portNumber": "80", "type": "LocalPortForwarding", "localPortNumber": "0"}})
	req := recv(t, s.l, 5*time.Second)
	want := `{"AgentVersion":"3.1.1000.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":{"localPortNumber":"0","portNumber":"80","type":"LocalPortForwarding"}}},{"ActionType":"Frobnicate","ActionParameters":{}}]}`
	if string(req.Payload) != want {
		t.Fatalf("HandshakeRequest payload\n got %s\nwant %s", req.Payload, want)
	}
}

func TestHandshakeDelay(t *testing.T) {
	t0 := time.Now()
	s := start(t, true, Config{Quirks: Quirks{HandshakeDelay: 300 * time.Millisecond}})
	recv(t, s.l, 5*time.Second)
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Fatalf("HandshakeRequest after %v", d)
	}
}

func TestHandshakeFailedStatus(t *testing.T) {
	s := start(t, true, Config{})
	req := recv(t, s.l, 5*time.Second)
	s.l.send(ackFrame(req))
	_, b := inputFrame(0, wire.PayloadHandshakeResponse, handshakeResponse(wire.ActionFailed))
	s.l.send(b)
	err := s.r.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "SessionType failed on client with status 2") {
		t.Fatalf("Run = %v", err)
	}
}

// TestHandshakeAnyFailedAction: the real agent fails the handshake on any
// action not reported as status 1, not only SessionType: here the session
// type succeeded and an unknown action came back unsupported.
func TestHandshakeAnyFailedAction(t *testing.T) {
	s := start(t, true, Config{})
	req := recv(t, s.l, 5*time.Second)
	s.l.send(ackFrame(req))
	payload, _ := json.Marshal(wire.HandshakeResponse{ClientVersion: "1.2.804.0", ProcessedClientActions: []wire.ProcessedClientAction{
		{ActionType: wire.ActionSessionType, ActionStatus: wire.ActionSuccess},
		{ActionType: "SomethingNew", ActionStatus: wire.ActionUnsupported, Error: "unsupported"},
	}})
	_, b := inputFrame(0, wire.PayloadHandshakeResponse, payload)
	s.l.send(b)
	err := s.r.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "SomethingNew failed on client with status 3") {
		t.Fatalf("Run = %v", err)
	}
}

func TestHandshakeTimeoutAndLateResponse(t *testing.T) {
	s := start(t, true, Config{Quirks: Quirks{HandshakeTimeout: 300 * time.Millisecond}})
	req := recv(t, s.l, 5*time.Second)
	time.Sleep(600 * time.Millisecond)
	_, b := inputFrame(0, wire.PayloadHandshakeResponse, handshakeResponse(wire.ActionSuccess))
	s.l.send(b)
	// The late response is still acked, then recorded and dropped.
	deadline := time.After(5 * time.Second)
	for !s.r.viol.has("late-handshake-response") {
		select {
		case <-s.l.frames:
		case <-deadline:
			t.Fatalf("no late-handshake-response violation: %v", s.r.viol.all())
		}
	}
	s.l.send(ackFrame(req))
	err := s.r.wait(t, 10*time.Second)
	if err == nil || err.Error() != "Handshake timed out. Please ensure that you have the latest version of the session manager plugin." {
		t.Fatalf("Run = %v", err)
	}
}

func TestNoHandshake(t *testing.T) {
	s := start(t, true, Config{Quirks: Quirks{NoHandshake: true, HandshakeTimeout: 500 * time.Millisecond}})
	recvNone(t, s.l, 300*time.Millisecond)
	err := s.r.wait(t, 10*time.Second)
	if err != errHandshakeTimeout {
		t.Fatalf("Run = %v", err)
	}
}

func TestDataBeforeHandshakeComplete(t *testing.T) {
	s := start(t, false, Config{})
	req := recv(t, s.l, 5*time.Second)
	s.l.send(ackFrame(req))
	early, b := inputFrame(0, wire.PayloadOutput, []byte("too early"))
	s.l.send(b)
	expectAck(t, s.l, early)
	if !s.r.viol.has("data-before-handshake-complete") {
		t.Fatalf("violations %v", s.r.viol.all())
	}
	resp, b := inputFrame(1, wire.PayloadHandshakeResponse, handshakeResponse(wire.ActionSuccess))
	s.l.send(b)
	expectAck(t, s.l, resp)
	done := recv(t, s.l, 5*time.Second)
	if done.PayloadType != wire.PayloadHandshakeComplete {
		t.Fatalf("got pt %d", done.PayloadType)
	}
	s.l.send(ackFrame(done))
	c := s.tgt.accept(t)
	// Retransmit until the target is connected, as a client would.
	msg, b := inputFrame(2, wire.PayloadOutput, []byte("hello"))
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.ReadAtLeast(c, buf, 5)
		got <- buf[:n]
	}()
	for acked := false; !acked; {
		s.l.send(b)
		select {
		case f := <-s.l.frames:
			acked = ackOf(t, f).AcknowledgedMessageSequenceNumber == msg.SequenceNumber
		case <-time.After(300 * time.Millisecond):
		}
	}
	if g := <-got; string(g) != "hello" {
		t.Fatalf("target got %q; the early data must have been discarded", g)
	}
}

func testTransfer(t *testing.T, q Quirks, size int) {
	s := start(t, true, Config{Quirks: q})
	doHandshake(t, s.l)
	p := newDataPeer(t, s.m, s.l)
	data := randomBytes(size, uint64(size))
	go p.write(data)
	if !p.waitFor(60*time.Second, func() bool { return len(p.data) >= len(data) }) {
		t.Fatalf("echoed %d of %d bytes", len(p.received()), len(data))
	}
	if got := p.received(); !bytes.Equal(got, data) {
		t.Fatalf("echoed bytes differ (len %d vs %d)", len(got), len(data))
	}
	st := s.r.stats
	if st.BytesToTarget.Load() != int64(size) || st.BytesFromTarget.Load() != int64(size) {
		t.Fatalf("stats to %d from %d", st.BytesToTarget.Load(), st.BytesFromTarget.Load())
	}
	if v := s.r.viol.all(); len(v) != 0 {
		t.Fatalf("violations %v", v)
	}
}

func TestTransferPaced(t *testing.T)   { testTransfer(t, Quirks{}, 300<<10) }
func TestTransferUnpaced(t *testing.T) { testTransfer(t, Quirks{Unpaced: true}, 8<<20) }

func TestPayloadsAtMost1024(t *testing.T) {
	s := start(t, false, Config{Quirks: Quirks{Unpaced: true}})
	doHandshake(t, s.l)
	p := newDataPeer(t, s.m, s.l)
	c := s.tgt.accept(t)
	data := randomBytes(100000, 7)
	c.Write(data)
	if !p.waitFor(20*time.Second, func() bool { return len(p.data) >= len(data) }) {
		t.Fatal("data did not arrive")
	}
	if !bytes.Equal(p.received(), data) {
		t.Fatal("data differs")
	}
	n := s.r.stats.DataMessagesOut.Load() - 2
	if n < int64(len(data)/1024) {
		t.Fatalf("%d messages for %d bytes: payloads over 1024 bytes", n, len(data))
	}
}

func TestTargetEOFEndsSession(t *testing.T) {
	s := start(t, false, Config{})
	doHandshake(t, s.l)
	p := newDataPeer(t, s.m, s.l)
	c := s.tgt.accept(t)
	c.Write([]byte("last words"))
	c.Close()
	if err := s.r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if string(p.received()) != "last words" {
		t.Fatalf("received %q", p.received())
	}
	s.waitTerminating(t)
	select {
	case <-s.l.done: // the agent closed its leg
	case <-time.After(5 * time.Second):
		t.Fatal("leg not closed")
	}
}

func TestTerminateSessionFlag(t *testing.T) {
	s := start(t, false, Config{})
	doHandshake(t, s.l)
	p := newDataPeer(t, s.m, s.l)
	c := s.tgt.accept(t)
	p.sendMsg(wire.PayloadFlag, wire.EncodeFlag(wire.FlagTerminateSession))
	if err := s.r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run = %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("target read = %v, want EOF", err)
	}
	if st := <-s.l.states; st != "Terminating" {
		t.Fatalf("state %q", st)
	}
}

func TestChannelClosedEndsSession(t *testing.T) {
	s := start(t, false, Config{})
	doHandshake(t, s.l)
	s.tgt.accept(t)
	b, _ := json.Marshal(wire.ChannelClosed{MessageType: wire.TypeChannelClosed, SchemaVersion: 1, SessionID: testSessionID, Output: "bye now"})
	s.l.send(controlFrame(wire.TypeChannelClosed, b))
	if err := s.r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestDisconnectToPortRedials(t *testing.T) {
	s := start(t, false, Config{})
	doHandshake(t, s.l)
	p := newDataPeer(t, s.m, s.l)
	c1 := s.tgt.accept(t)
	p.write([]byte("one"))
	readExactly(t, c1, "one")
	p.sendMsg(wire.PayloadFlag, wire.EncodeFlag(wire.FlagDisconnectToPort))
	c1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c1.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("first target connection read = %v, want EOF", err)
	}
	p.write([]byte("two"))
	c2 := s.tgt.accept(t)
	readExactly(t, c2, "two")
	c2.Write([]byte("back"))
	if !p.waitFor(5*time.Second, func() bool { return string(p.data) == "back" }) {
		t.Fatalf("received %q", p.received())
	}
	select {
	case err := <-s.r.done:
		t.Fatalf("session ended: %v", err)
	default:
	}
}

func readExactly(t testing.TB, c io.Reader, want string) {
	t.Helper()
	if cc, ok := c.(interface{ SetReadDeadline(time.Time) error }); ok {
		cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
		t.Fatalf("target read %q, %v; want %q", buf, err, want)
	}
}

func TestMalformedFlags(t *testing.T) {
	s := start(t, false, Config{})
	doHandshake(t, s.l)
	p := newDataPeer(t, s.m, s.l)
	s.tgt.accept(t)
	a := p.sendMsg(wire.PayloadFlag, []byte{0, 0, 1})
	b := p.sendMsg(wire.PayloadFlag, wire.EncodeFlag(9))
	c := p.sendMsg(wire.PayloadSize, []byte(`{"cols":80,"rows":24}`))
	if !p.waitFor(5*time.Second, func() bool { return p.acks[a] > 0 && p.acks[b] > 0 && p.acks[c] > 0 }) {
		t.Fatal("flags and size not acked")
	}
	if !s.r.viol.has("malformed-flag") || len(s.r.viol.all()) != 2 {
		t.Fatalf("violations %v", s.r.viol.all())
	}
}

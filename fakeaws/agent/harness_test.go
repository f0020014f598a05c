package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// The harness plays MGS and the client in one: an httptest websocket server
// accepts the agent's legs, checks their opening frames, and lets the test
// exchange raw frames with the agent. Targets are real TCP listeners.

const testSessionID = "alice-0a1b2c3d4e5f67890"
const testInstanceID = "i-0123456789abcdef0"

// leg is one accepted agent connection.
type leg struct {
	ws     *websocket.Conn
	open   wire.OpenDataChannel
	frames chan *wire.Frame // every binary frame except agent_session_state
	states chan string      // agent_session_state after the opening one
	done   chan struct{}    // reader ended
	wmu    sync.Mutex
	noPong *atomic.Bool
}

func (l *leg) send(b []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.ws.WriteMessage(websocket.BinaryMessage, b)
}

func (l *leg) sendText(s string) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.ws.WriteMessage(websocket.TextMessage, []byte(s))
}

// bye closes the leg as MGS recycles it: close 1000 "Bye".
func (l *leg) bye() {
	l.wmu.Lock()
	_ = l.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "Bye"), time.Now().Add(time.Second))
	l.wmu.Unlock()
	select {
	case <-l.done:
	case <-time.After(2 * time.Second):
	}
	l.ws.Close()
}

// mgs is the fake relay plus CreateDataChannel.
type mgs struct {
	t          testing.TB
	srv        *httptest.Server
	legs       chan *leg
	mu         sync.Mutex
	issued     []string // tokens handed out by CreateDataChannel
	used       map[string]bool
	clientID   string
	terminated atomic.Bool // CreateDataChannel answers ErrSessionTerminated
	noPong     atomic.Bool
	creates    atomic.Int32
}

func newMGS(t testing.TB) *mgs {
	m := &mgs{t: t, legs: make(chan *leg, 16), used: map[string]bool{}}
	up := websocket.Upgrader{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/data-channel/"+testSessionID || r.URL.Query().Get("role") != "publish_subscribe" {
			t.Errorf("agent dialled %s", r.URL)
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		if l := m.accept(ws); l != nil {
			m.legs <- l
		}
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *mgs) createDataChannel(ctx context.Context) (string, string, error) {
	m.creates.Add(1)
	if m.terminated.Load() {
		return "", "", fmt.Errorf("CreateDataChannel: %w", ErrSessionTerminated)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	tok := fmt.Sprintf("agent-token-%d", len(m.issued)+1)
	m.issued = append(m.issued, tok)
	url := "ws" + strings.TrimPrefix(m.srv.URL, "http") + "/v1/data-channel/" + testSessionID + "?role=publish_subscribe&cell-number=abc"
	return url, tok, nil
}

// accept validates the agent's opening text frame and its Connected state.
func (m *mgs) accept(ws *websocket.Conn) *leg {
	t := m.t
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, b, err := ws.ReadMessage()
	if err != nil || mt != websocket.TextMessage {
		t.Errorf("opening frame: type %d err %v", mt, err)
		ws.Close()
		return nil
	}
	var open wire.OpenDataChannel
	if err := json.Unmarshal(b, &open); err != nil {
		t.Errorf("opening frame %s: %v", b, err)
	}
	var raw map[string]any
	_ = json.Unmarshal(b, &raw)
	if len(raw) != 5 {
		t.Errorf("opening frame has fields %v, want exactly 5", raw)
	}
	if open.MessageSchemaVersion != "1.0" || open.ClientInstanceID != testInstanceID {
		t.Errorf("opening frame %s", b)
	}
	if id, err := uuid.Parse(open.RequestID); err != nil || id.Version() != 4 {
		t.Errorf("RequestId %q is not a uuid4", open.RequestID)
	}
	if id, err := uuid.Parse(open.ClientID); err != nil || id.Version() != 4 {
		t.Errorf("ClientId %q is not a uuid4", open.ClientID)
	}
	m.mu.Lock()
	if len(m.issued) == 0 || open.TokenValue != m.issued[len(m.issued)-1] || m.used[open.TokenValue] {
		t.Errorf("token %q: issued %v, used %v", open.TokenValue, m.issued, m.used)
	}
	m.used[open.TokenValue] = true
	if m.clientID == "" {
		m.clientID = open.ClientID
	} else if m.clientID != open.ClientID {
		t.Errorf("ClientId changed across reconnects: %s then %s", m.clientID, open.ClientID)
	}
	m.mu.Unlock()

	mt, b, err = ws.ReadMessage()
	if err != nil || mt != websocket.BinaryMessage {
		t.Errorf("agent_session_state: type %d err %v", mt, err)
		ws.Close()
		return nil
	}
	if st := m.sessionState(b); st != "Connected" {
		t.Errorf("first agent_session_state is %q", st)
	}
	ws.SetReadDeadline(time.Time{})
	l := &leg{ws: ws, open: open, frames: make(chan *wire.Frame, 1<<16), states: make(chan string, 4), done: make(chan struct{}), noPong: &m.noPong}
	ws.SetPingHandler(func(data string) error {
		if l.noPong.Load() {
			return nil
		}
		l.wmu.Lock()
		defer l.wmu.Unlock()
		return l.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go l.read(t, m)
	return l
}

func (m *mgs) sessionState(b []byte) string {
	f, err := wire.Decode(b)
	if err != nil {
		m.t.Errorf("agent_session_state frame: %v", err)
		return ""
	}
	if f.MessageType != wire.TypeAgentSessionState || f.SequenceNumber != 0 {
		m.t.Errorf("want agent_session_state, got %s seq %d", f.MessageType, f.SequenceNumber)
	}
	var st wire.AgentSessionState
	if err := json.Unmarshal(f.Payload, &st); err != nil || st.SchemaVersion != 1 || st.SessionID != testSessionID {
		m.t.Errorf("agent_session_state payload %s: %v", f.Payload, err)
	}
	return st.SessionState
}

// read decodes every agent frame strictly (wire.Decode): the agent must emit
// frames the client's validation accepts.
func (l *leg) read(t testing.TB, m *mgs) {
	defer close(l.done)
	for {
		mt, b, err := l.ws.ReadMessage()
		if err != nil {
			return
		}
		if mt != websocket.BinaryMessage {
			t.Errorf("agent sent a non-binary message after opening: %q", b)
			continue
		}
		f, err := wire.Decode(b)
		if err != nil {
			t.Errorf("agent frame fails validation: %v", err)
			continue
		}
		if f.HeaderLength != wire.HeaderLength || f.SchemaVersion != 1 || len(f.Payload) == 0 {
			t.Errorf("agent frame header %+v", f)
		}
		if !strings.HasPrefix(string(b[4:36]), f.MessageType+" ") {
			t.Errorf("message type not space padded: %q", b[4:36])
		}
		if f.MessageType == wire.TypeAgentSessionState {
			l.states <- m.sessionState(b)
			continue
		}
		l.frames <- f
	}
}

// nextLeg waits for the agent's next connection.
func (m *mgs) nextLeg(t testing.TB) *leg {
	t.Helper()
	select {
	case l := <-m.legs:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not connect")
		return nil
	}
}

// frame builds a client frame.
func frame(typ string, seq int64, flags uint64, pt wire.PayloadType, payload []byte) (*wire.Frame, []byte) {
	f := &wire.Frame{MessageType: typ, SchemaVersion: 1, CreatedDate: uint64(time.Now().UnixMilli()),
		SequenceNumber: seq, Flags: flags, MessageID: uuid.New(), PayloadType: pt, Payload: payload}
	b, err := wire.Encode(f)
	if err != nil {
		panic(err)
	}
	return f, b
}

func inputFrame(seq int64, pt wire.PayloadType, payload []byte) (*wire.Frame, []byte) {
	return frame(wire.TypeInputStreamData, seq, 0, pt, payload)
}

func ackFrame(of *wire.Frame) []byte {
	p := wire.AppendAcknowledge(nil, wire.TypeOutputStreamData, of.MessageID, of.SequenceNumber)
	_, b := frame(wire.TypeAcknowledge, 0, wire.FlagsAck, wire.PayloadNone, p)
	return b
}

func controlFrame(typ string, payload []byte) []byte {
	_, b := frame(typ, 0, wire.FlagsAck, wire.PayloadNone, payload)
	return b
}

func handshakeResponse(status int) []byte {
	b, _ := json.Marshal(wire.HandshakeResponse{ClientVersion: "1.2.804.0",
		ProcessedClientActions: []wire.ProcessedClientAction{{ActionType: wire.ActionSessionType, ActionStatus: status}}})
	return b
}

// recv returns the next frame on l, failing the test after timeout.
func recv(t testing.TB, l *leg, timeout time.Duration) *wire.Frame {
	t.Helper()
	select {
	case f := <-l.frames:
		return f
	case <-time.After(timeout):
		t.Fatalf("no frame from the agent within %v", timeout)
		return nil
	}
}

// recvNone asserts that no frame arrives within d.
func recvNone(t testing.TB, l *leg, d time.Duration) {
	t.Helper()
	select {
	case f := <-l.frames:
		t.Fatalf("unexpected frame %s seq %d pt %d payload %q", f.MessageType, f.SequenceNumber, f.PayloadType, f.Payload)
	case <-time.After(d):
	}
}

// ackOf parses an agent acknowledge and checks its shape.
func ackOf(t testing.TB, f *wire.Frame) wire.Acknowledge {
	t.Helper()
	if f.MessageType != wire.TypeAcknowledge || f.SequenceNumber != 0 || f.Flags != 3 || f.PayloadType != 0 {
		t.Fatalf("want an acknowledge, got %s seq %d flags %d pt %d", f.MessageType, f.SequenceNumber, f.Flags, f.PayloadType)
	}
	a, err := wire.ParseAcknowledge(f.Payload)
	if err != nil || a.AcknowledgedMessageType != wire.TypeInputStreamData || !a.IsSequentialMessage {
		t.Fatalf("ack payload %s: %v", f.Payload, err)
	}
	return a
}

// expectAck waits for the ack of input message in.
func expectAck(t testing.TB, l *leg, in *wire.Frame) {
	t.Helper()
	f := recv(t, l, 5*time.Second)
	a := ackOf(t, f)
	if a.AcknowledgedMessageSequenceNumber != in.SequenceNumber || a.AcknowledgedMessageID != in.MessageID.String() {
		t.Fatalf("ack %+v, want seq %d id %s", a, in.SequenceNumber, in.MessageID)
	}
}

// violations records what the agent reports.
type violations struct {
	mu   sync.Mutex
	list []string // "severity/code"
}

func (v *violations) add(sev, code, detail string) {
	v.mu.Lock()
	v.list = append(v.list, sev+"/"+code)
	v.mu.Unlock()
}

func (v *violations) has(code string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.list {
		if strings.HasSuffix(s, "/"+code) {
			return true
		}
	}
	return false
}

func (v *violations) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.list...)
}

// runner runs the agent under test.
type runner struct {
	done   chan error
	cancel context.CancelFunc
	stats  *Stats
	viol   *violations
}

func startAgent(t testing.TB, m *mgs, cfg Config) *runner {
	t.Helper()
	r := &runner{done: make(chan error, 1), stats: new(Stats), viol: &violations{}}
	cfg.SessionID = testSessionID
	cfg.InstanceID = testInstanceID
	cfg.CreateDataChannel = m.createDataChannel
	cfg.Violation = r.viol.add
	cfg.Stats = r.stats
	if cfg.DefaultHost == "" {
		cfg.DefaultHost = "127.0.0.1"
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
		checkNoLeaks(t)
	})
	return r
}

// wait returns Run's result, failing the test if it takes longer than d.
func (r *runner) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // keep it for the cleanup
		return err
	case <-time.After(d):
		t.Fatalf("Run did not return within %v", d)
		return nil
	}
}

// checkNoLeaks fails if goroutines of this package are still running.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	var stacks string
	for range 100 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		leaked := false
		for _, g := range strings.Split(stacks, "\n\n") {
			// The fake's own goroutines, and smux's (every test closes its
			// client sessions before this check runs).
			if (strings.Contains(g, "fakeaws/agent.(*") || strings.Contains(g, "xtaci/smux.")) && !strings.Contains(g, "_test.go") {
				leaked = true
			}
		}
		if !leaked {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("leaked agent goroutines:\n%s", stacks)
}

// doHandshake performs the client side of the handshake on l, checking every
// agent frame against docs/protocol.md section 7.1, and returns the
// HandshakeRequest it received.
func doHandshake(t testing.TB, l *leg) wire.HandshakeRequest {
	t.Helper()
	req := recv(t, l, 10*time.Second)
	if req.MessageType != wire.TypeOutputStreamData || req.SequenceNumber != 0 || req.Flags != wire.FlagSYN || req.PayloadType != wire.PayloadHandshakeRequest {
		t.Fatalf("HandshakeRequest frame %s seq %d flags %d pt %d", req.MessageType, req.SequenceNumber, req.Flags, req.PayloadType)
	}
	var hr wire.HandshakeRequest
	if err := json.Unmarshal(req.Payload, &hr); err != nil {
		t.Fatal(err)
	}
	l.send(ackFrame(req))
	resp, b := inputFrame(0, wire.PayloadHandshakeResponse, handshakeResponse(wire.ActionSuccess))
	l.send(b)
	for {
		f := recv(t, l, 5*time.Second)
		if f.MessageType == wire.TypeOutputStreamData && f.SequenceNumber == 0 {
			continue // a retransmission of the request that crossed our ack
		}
		a := ackOf(t, f)
		if a.AcknowledgedMessageSequenceNumber != 0 || a.AcknowledgedMessageID != resp.MessageID.String() {
			t.Fatalf("ack of the HandshakeResponse: %+v", a)
		}
		break
	}
	done := recv(t, l, 5*time.Second)
	if done.MessageType != wire.TypeOutputStreamData || done.SequenceNumber != 1 || done.Flags != 0 || done.PayloadType != wire.PayloadHandshakeComplete {
		t.Fatalf("HandshakeComplete frame %s seq %d flags %d pt %d", done.MessageType, done.SequenceNumber, done.Flags, done.PayloadType)
	}
	var hc wire.HandshakeComplete
	if err := json.Unmarshal(done.Payload, &hc); err != nil || hc.HandshakeTimeToComplete <= 0 || hc.CustomerMessage != "" {
		t.Fatalf("HandshakeComplete payload %s: %v", done.Payload, err)
	}
	if !strings.Contains(string(done.Payload), `"CustomerMessage":""`) {
		t.Fatalf("HandshakeComplete payload %s", done.Payload)
	}
	l.send(ackFrame(done))
	return hr
}

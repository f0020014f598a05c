package fakeaws

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// The MGS variants of docs/fakeaws.md 4.1 as they look on the client leg.
// The client here is a bare websocket with no reliability layer, so the
// tests see exactly which frames MGS sends it; it never answers the
// handshake (the agent waits 15 s for that, longer than any test here).

// rawClient is a client leg that records every binary frame it receives.
type rawClient struct {
	t  *testing.T
	ts *TestServer
	id string
	ws *websocket.Conn

	mu     sync.Mutex
	frames []*wire.Frame
}

// openRawLeg starts a session of document doc to port and opens its client
// leg on a bare websocket (the opening frame sent, as clientVersion).
func openRawLeg(t *testing.T, ts *TestServer, doc, port, clientVersion string) (sessionResponse, *websocket.Conn) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"Target": DefaultInstance, "DocumentName": doc,
		"Parameters": map[string][]string{"portNumber": {port}}})
	out, aerr := ts.startSession(ts.User, body)
	if aerr != nil {
		t.Fatalf("StartSession: %s: %s", aerr.Type, aerr.Message)
	}
	resp := out.(sessionResponse)
	ws, _, err := websocket.DefaultDialer.Dial(resp.StreamURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	open, _ := json.Marshal(wire.OpenDataChannel{MessageSchemaVersion: "1.0", RequestID: uuid.NewString(),
		TokenValue: resp.TokenValue, ClientID: uuid.NewString(), ClientVersion: clientVersion})
	if err := ws.WriteMessage(websocket.TextMessage, open); err != nil {
		t.Fatal(err)
	}
	return resp, ws
}

// startRaw starts an SSH-document session to an echo target and attaches
// a raw client leg to it.
func startRaw(t *testing.T, ts *TestServer) *rawClient {
	t.Helper()
	resp, ws := openRawLeg(t, ts, "AWS-StartSSHSession", Listen(t, Echo), "1.2.707.0")
	c := &rawClient{t: t, ts: ts, id: resp.SessionID, ws: ws}
	go func() {
		for {
			mt, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if f, err := wire.DecodeHeader(b); err == nil && mt == websocket.BinaryMessage {
				c.mu.Lock()
				c.frames = append(c.frames, f)
				c.mu.Unlock()
			}
		}
	}()
	// Both legs up and the agent's HandshakeRequest received: the session
	// is in the state every variant starts from.
	if !WaitFor(5*time.Second, func() bool { return c.agentAttached() && len(c.ofType(0, wire.TypeOutputStreamData)) > 0 }) {
		t.Fatal("the agent leg never attached or never sent its HandshakeRequest")
	}
	return c
}

// ofType returns the frames of message type typ received from index from on.
func (c *rawClient) ofType(from int, typ ...string) []*wire.Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*wire.Frame
	for _, f := range c.frames[min(from, len(c.frames)):] {
		for _, t := range typ {
			if f.MessageType == t {
				out = append(out, f)
			}
		}
	}
	return out
}

func (c *rawClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

func (c *rawClient) agentAttached() bool {
	ss := c.ts.session(c.id)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.agent != nil
}

// dropAgentLeg closes the agent's leg and waits for the agent to come back
// (or, with the agent refused, for it to have tried at least once).
func (c *rawClient) dropAgentLeg() {
	c.t.Helper()
	before := c.ts.AgentStats(c.id)["reconnects"]
	if err := c.ts.CloseLeg(c.id, "agent", websocket.CloseNormalClosure, "Bye"); err != nil {
		c.t.Fatal(err)
	}
	if !WaitFor(5*time.Second, func() bool { return c.ts.AgentStats(c.id)["reconnects"] > before && c.agentAttached() }) {
		c.t.Fatalf("the agent never came back: %v", c.ts.AgentStats(c.id))
	}
}

// What the client leg receives when the agent's leg drops and returns,
// under each -mgs-publication value, and the header each
// -publication-headers value gives those frames. The zero Options must be
// the least forgiving: pause-only, minimal.
func TestPublicationOnTheWire(t *testing.T) {
	pause, start := wire.TypePausePublication, wire.TypeStartPublication
	cases := []struct {
		pub     Publication
		headers PublicationHeaders
		want    []string
	}{
		{PublicationAlways, HeadersFull, []string{pause, start}},
		{PublicationAlways, HeadersMinimal, []string{pause, start}},
		{PublicationPauseOnly, HeadersFull, []string{pause}},
		{PublicationNever, HeadersMinimal, nil},
		{"", "", []string{pause}}, // the zero value: pause-only, minimal
	}
	for _, tc := range cases {
		t.Run(defaultString(string(tc.pub), "zero-value")+"/"+string(tc.headers), func(t *testing.T) {
			ts := StartTest(t, Options{Publication: tc.pub, PublicationHeaders: tc.headers})
			c := startRaw(t, ts)
			from := c.count()
			c.dropAgentLeg()
			// Anything MGS sends on the agent's return is queued at
			// attach; give the writer time to flush it.
			time.Sleep(300 * time.Millisecond)
			var got []string
			for _, f := range c.ofType(from, pause, start) {
				got = append(got, f.MessageType)
				minimal := tc.headers != HeadersFull
				zeroDigest := f.PayloadDigest == [32]byte{}
				if minimal != (f.CreatedDate == 0) || minimal != zeroDigest {
					t.Errorf("%s under headers %q: CreatedDate %d, zero digest %v", f.MessageType, tc.headers, f.CreatedDate, zeroDigest)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("client leg received %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("client leg received %v, want %v", got, tc.want)
				}
			}
		})
	}
}

package ssm_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// scriptedPeer is a minimal Session Manager on loopback for tests that need
// a peer to do what neither the fake's agent nor MGS ever would (floods,
// oversize payloads, a second HandshakeRequest, a foreign StreamUrl): the
// three SSM API calls a session makes, answered as the SDK expects (JSON
// 1.1), and the data channel websocket, which the test drives frame by
// frame. It checks no signatures: the strict checks are fakeaws's job.
type scriptedPeer struct {
	t   testing.TB
	srv *httptest.Server
	// streamURL, if set, is the StreamUrl StartSession returns instead of
	// this server's own data channel URL.
	streamURL string
	// resumeURL, if set, is the StreamUrl ResumeSession returns.
	resumeURL  string
	legs       chan *peerLeg
	terminates atomic.Int32
}

const peerSessionID = "alice-0123456789abcdef0"

func newScriptedPeer(t testing.TB) *scriptedPeer {
	p := &scriptedPeer{t: t, legs: make(chan *peerLeg, 4)}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

// awsConfig points an SDK config at the peer, as an endpoint override does.
func (p *scriptedPeer) awsConfig() aws.Config {
	return aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(p.srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")}
}

func (p *scriptedPeer) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/v1/data-channel/") {
		p.serveDataChannel(w, r)
		return
	}
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AmazonSSM.")
	var out any
	switch op {
	case "StartSession", "ResumeSession":
		u := p.streamURL
		if op == "ResumeSession" && p.resumeURL != "" {
			u = p.resumeURL
		}
		if u == "" {
			u = "ws" + strings.TrimPrefix(p.srv.URL, "http") + "/v1/data-channel/" + peerSessionID + "?role=publish_subscribe"
		}
		out = map[string]string{"SessionId": peerSessionID, "TokenValue": "token-" + uuid.NewString(), "StreamUrl": u}
	case "TerminateSession":
		p.terminates.Add(1)
		out = map[string]string{"SessionId": peerSessionID}
	default:
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_, _ = w.Write(b)
}

func (p *scriptedPeer) serveDataChannel(w http.ResponseWriter, r *http.Request) {
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(1 << 20)
	if mt, _, err := ws.ReadMessage(); err != nil || mt != websocket.TextMessage {
		ws.Close()
		return
	}
	l := &peerLeg{t: p.t, ws: ws, acked: map[uuid.UUID]bool{}, inputs: make(chan *wire.Frame, 4096), done: make(chan struct{})}
	go l.read()
	p.t.Cleanup(func() { ws.Close(); <-l.done })
	p.legs <- l
}

// leg waits for the client's next data channel.
func (p *scriptedPeer) leg() *peerLeg {
	p.t.Helper()
	select {
	case l := <-p.legs:
		return l
	case <-time.After(10 * time.Second):
		p.t.Fatal("the client never opened the data channel")
		return nil
	}
}

// peerLeg is one data channel as the agent's side of it: the test sends
// output_stream_data with the numbers it chooses. Its reader remembers only
// which message ids were acked (so that a memory test measures the client,
// not the peer) and queues the client's data frames.
type peerLeg struct {
	t  testing.TB
	ws *websocket.Conn

	wmu sync.Mutex

	mu     sync.Mutex
	acked  map[uuid.UUID]bool
	inputs chan *wire.Frame // the client's input_stream_data, unacked unless the test acks
	done   chan struct{}
}

func (l *peerLeg) read() {
	defer close(l.done)
	for {
		_, b, err := l.ws.ReadMessage()
		if err != nil {
			return
		}
		f, err := wire.Decode(b)
		if err != nil {
			continue
		}
		switch f.MessageType {
		case wire.TypeAcknowledge:
			a, err := wire.ParseAcknowledge(f.Payload)
			if err != nil {
				continue
			}
			id, err := uuid.Parse(a.AcknowledgedMessageID)
			if err != nil {
				continue
			}
			l.mu.Lock()
			l.acked[id] = true
			l.mu.Unlock()
		case wire.TypeInputStreamData:
			select {
			case l.inputs <- f:
			default:
			}
		}
	}
}

// send writes one output_stream_data frame and returns its message id.
func (l *peerLeg) send(seq int64, pt wire.PayloadType, payload []byte) uuid.UUID {
	l.t.Helper()
	id := uuid.New()
	b, err := wire.Encode(&wire.Frame{MessageType: wire.TypeOutputStreamData, SchemaVersion: wire.SchemaVersion,
		CreatedDate: uint64(time.Now().UnixMilli()), SequenceNumber: seq, MessageID: id, PayloadType: pt, Payload: payload})
	if err != nil {
		l.t.Fatal(err)
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		l.t.Fatalf("peer send seq %d: %v", seq, err)
	}
	return id
}

// ack acknowledges one of the client's frames.
func (l *peerLeg) ack(f *wire.Frame) {
	l.t.Helper()
	b, err := wire.Encode(&wire.Frame{MessageType: wire.TypeAcknowledge, SchemaVersion: wire.SchemaVersion,
		CreatedDate: uint64(time.Now().UnixMilli()), Flags: wire.FlagsAck, MessageID: uuid.New(),
		Payload: wire.AppendAcknowledge(nil, f.MessageType, f.MessageID, f.SequenceNumber)})
	if err != nil {
		l.t.Fatal(err)
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		l.t.Fatalf("peer ack: %v", err)
	}
}

// wasAcked reports whether the client acked the message with this id.
func (l *peerLeg) wasAcked(id uuid.UUID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked[id]
}

// waitAcked waits for the client's ack of id.
func (l *peerLeg) waitAcked(id uuid.UUID, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l.wasAcked(id) {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return l.wasAcked(id)
}

// input waits for the client's next data frame.
func (l *peerLeg) input() *wire.Frame {
	l.t.Helper()
	select {
	case f := <-l.inputs:
		return f
	case <-time.After(10 * time.Second):
		l.t.Fatal("no data frame from the client")
		return nil
	}
}

// handshakeRequest is a Port session's HandshakeRequest, as the agent sends.
func handshakeRequest(t testing.TB) []byte {
	t.Helper()
	params, _ := json.Marshal(wire.SessionTypeRequest{SessionType: wire.SessionTypePort, Properties: map[string]string{"portNumber": "22"}})
	b, err := wire.MarshalPayload(wire.HandshakeRequest{AgentVersion: "3.3.0.0",
		RequestedClientActions: []wire.RequestedClientAction{{ActionType: wire.ActionSessionType, ActionParameters: params}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// handshake plays the agent's side of the handshake (docs/protocol.md 7.1):
// HandshakeRequest at seq 0, the client's response acked, HandshakeComplete
// at seq 1. The agent's next data is seq 2.
func (l *peerLeg) handshake() {
	l.t.Helper()
	l.send(0, wire.PayloadHandshakeRequest, handshakeRequest(l.t))
	f := l.input()
	if f.PayloadType != wire.PayloadHandshakeResponse || f.SequenceNumber != 0 {
		l.t.Fatalf("expected the HandshakeResponse at seq 0, got payload type %d seq %d", f.PayloadType, f.SequenceNumber)
	}
	l.ack(f)
	hc, _ := wire.MarshalPayload(wire.HandshakeComplete{})
	l.send(1, wire.PayloadHandshakeComplete, hc)
}

// startWithPeer starts a session against p, playing the handshake on the
// first leg, and returns the session and that leg.
func startWithPeer(t *testing.T, p *scriptedPeer, mod func(*ssm.Config)) (*ssm.Session, *peerLeg) {
	t.Helper()
	cfg := ssm.Config{Target: "i-0123456789abcdef0", Parameters: map[string][]string{"portNumber": {"22"}},
		AWS: p.awsConfig(), HandshakeTimeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	type result struct {
		s   *ssm.Session
		err error
	}
	res := make(chan result, 1)
	go func() {
		s, err := ssm.Start(ctx, cfg)
		res <- result{s, err}
	}()
	l := p.leg()
	l.handshake()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.s.Close() })
	return r.s, l
}

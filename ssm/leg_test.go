package ssm

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// The leg alone, over a real websocket to a small server on loopback: what
// it reads goes to its handler, what it writes comes from its outbox, its
// pings run on the injected clock, and it needs nothing of a Session.

// recorder is a legHandler that keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	frames  [][]byte
	dropped []int
}

func (r *recorder) handleFrame(b []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, append([]byte(nil), b...))
	_, err := wire.Decode(b)
	return err == nil
}

func (r *recorder) crossTraffic() int64 { return 0 }

func (r *recorder) dropMessage(mt, size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropped = append(r.dropped, mt)
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames), len(r.dropped)
}

// queue is a legOutbox holding acks and stream frames for the test.
type queue struct {
	mu     sync.Mutex
	acks   []ackRecord
	frames [][]byte
	kick   chan struct{}
}

func newQueue() *queue { return &queue{kick: make(chan struct{}, 1)} }

func (q *queue) put(ack *ackRecord, frame []byte) {
	q.mu.Lock()
	if ack != nil {
		q.acks = append(q.acks, *ack)
	}
	if frame != nil {
		q.frames = append(q.frames, frame)
	}
	q.mu.Unlock()
	signal(q.kick)
}

func (q *queue) wakeup() <-chan struct{} { return q.kick }
func (q *queue) takeAcks() []ackRecord {
	q.mu.Lock()
	defer q.mu.Unlock()
	a := q.acks
	q.acks = nil
	return a
}
func (q *queue) emitDue(_ time.Time, max int, emit func([]byte)) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(max, len(q.frames))
	for _, f := range q.frames[:n] {
		emit(f)
	}
	q.frames = q.frames[n:]
	return n
}
func (q *queue) nextDue() time.Time { return time.Time{} }

// peer is the server end: it checks the opening frame, then records what
// the leg sends and lets the test send.
type peer struct {
	mu     sync.Mutex
	got    []string // "binary:<len>", "ping:<data>", "close:<code>"
	conn   *websocket.Conn
	opened chan struct{}
}

func (p *peer) log(s string) {
	p.mu.Lock()
	p.got = append(p.got, s)
	p.mu.Unlock()
}

func (p *peer) seen(prefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, g := range p.got {
		if strings.HasPrefix(g, prefix) {
			n++
		}
	}
	return n
}

func startPeer(t *testing.T) (*peer, string) {
	t.Helper()
	p := &peer{opened: make(chan struct{})}
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mt, b, err := c.ReadMessage()
		var open wire.OpenDataChannel
		if err != nil || mt != websocket.TextMessage || json.Unmarshal(b, &open) != nil || open.TokenValue != "token-1" {
			t.Errorf("opening frame: type %d %q (%v)", mt, b, err)
			c.Close()
			return
		}
		c.SetPingHandler(func(data string) error {
			p.log("ping:" + data)
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		c.SetPongHandler(func(data string) error { p.log("pong:" + data); return nil })
		p.mu.Lock()
		p.conn = c
		p.mu.Unlock()
		close(p.opened)
		for {
			mt, b, err := c.ReadMessage()
			if err != nil {
				if ce, ok := err.(*websocket.CloseError); ok {
					p.log("close:" + itoa(ce.Code))
				}
				return
			}
			if mt != websocket.BinaryMessage {
				continue
			}
			// An ack is logged as what it acknowledges; decoding it
			// checks its digest and header.
			if f, err := wire.Decode(b); err == nil && f.MessageType == wire.TypeAcknowledge {
				if seq, ok := wire.ParseAckSequence(f.Payload); ok {
					p.log("ack:" + itoa(int(seq)))
					continue
				}
			}
			p.log("binary:" + itoa(len(b)))
		}
	}))
	t.Cleanup(srv.Close)
	return p, "ws" + strings.TrimPrefix(srv.URL, "http")
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func (p *peer) send(t *testing.T, mt int, b []byte) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.conn.WriteMessage(mt, b); err != nil {
		t.Fatal(err)
	}
}

// waitUntil fails t unless cond holds within 5 s (polled by the fake's
// own WaitFor).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !fakeaws.WaitFor(5*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func dialLeg(t *testing.T, url string, in legHandler, out legOutbox, clk clock.Clock, readTimeout time.Duration) *leg {
	t.Helper()
	ws, bc, err := dialChannel(context.Background(), url, "token-1", dialConfig{ClientID: "c", ClientVersion: DefaultClientVersion, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l := newLeg(ws, bc, in, out, legConfig{pingInterval: 20 * time.Second, readTimeout: readTimeout, clock: clk, log: slog.New(slog.DiscardHandler)})
	l.start()
	t.Cleanup(func() { l.close(false); _ = l.wait() })
	return l
}

func testFrame(t *testing.T, seq int64) []byte {
	t.Helper()
	b, err := wire.Encode(&wire.Frame{MessageType: wire.TypeOutputStreamData, SchemaVersion: wire.SchemaVersion, CreatedDate: 1,
		SequenceNumber: seq, PayloadType: wire.PayloadOutput, Payload: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLegTraffic: binary messages reach the handler (and count as valid
// frames when they decode), text messages are dropped through it; the
// outbox's acks are encoded and written (valid frames), then its due frames.
func TestLegTraffic(t *testing.T) {
	p, url := startPeer(t)
	in, out := &recorder{}, newQueue()
	l := dialLeg(t, url, in, out, clock.NewFake(time.Unix(0, 0)), time.Minute)
	<-p.opened

	p.send(t, websocket.BinaryMessage, testFrame(t, 0))
	p.send(t, websocket.BinaryMessage, []byte("not a frame"))
	p.send(t, websocket.TextMessage, []byte("{}"))
	waitUntil(t, "the handler to see 2 binary messages and 1 dropped", func() bool {
		f, d := in.counts()
		return f == 2 && d == 1
	})
	if n := l.validFrames.Load(); n != 1 {
		t.Fatalf("valid frames %d, want 1", n)
	}

	now := time.Now()
	out.put(&ackRecord{seq: 10, id: uuid.New(), at: now}, nil)
	out.put(nil, make([]byte, 20))
	out.put(&ackRecord{seq: 11, id: uuid.New(), at: now}, make([]byte, 21))
	waitUntil(t, "the peer to get 2 acks and 2 frames", func() bool { return p.seen("binary:") == 2 && p.seen("ack:") == 2 })
	p.mu.Lock()
	order := strings.Join(p.got, ",")
	p.mu.Unlock()
	if !strings.HasPrefix(order, "ack:10,") || !strings.Contains(order, "ack:11") ||
		strings.Index(order, "binary:20") > strings.Index(order, "binary:21") {
		t.Fatalf("peer saw %s", order)
	}
}

// TestLegPingOnClock: the leg pings when the injected clock says so, and
// answers the peer's pings.
func TestLegPingOnClock(t *testing.T) {
	p, url := startPeer(t)
	clk := clock.NewFake(time.Unix(0, 0))
	dialLeg(t, url, &recorder{}, newQueue(), clk, time.Minute)
	<-p.opened
	// The writer arms the ping and the retransmission timers.
	if !clk.WaitForTimers(2, 5*time.Second) {
		t.Fatal("the writer never armed its timers")
	}
	if p.seen("ping:") != 0 {
		t.Fatal("pinged before the interval")
	}
	now := time.Unix(0, 0)
	for i := 1; i <= 3; i++ {
		// The next ping is armed (the writer re-arms it after each ping).
		if !clk.WaitForNext(now.Add(20*time.Second), 5*time.Second) {
			t.Fatalf("ping %d was never armed", i)
		}
		clk.Advance(20 * time.Second)
		now = now.Add(20 * time.Second)
		waitUntil(t, "a ping", func() bool { return p.seen("ping:keepalive") == i })
	}
	p.mu.Lock()
	err := p.conn.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second))
	p.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the pong", func() bool { return p.seen("pong:are you there") == 1 })
}

// TestLegClose: a graceful close sends a normal close frame and the leg
// reports that ssmproxy closed it; a silent peer kills it by the read
// deadline (a half-open socket).
func TestLegClose(t *testing.T) {
	p, url := startPeer(t)
	l := dialLeg(t, url, &recorder{}, newQueue(), clock.NewFake(time.Unix(0, 0)), time.Minute)
	<-p.opened
	l.close(true)
	if err := l.wait(); err != errLegClosed {
		t.Fatalf("leg ended with %v, want errLegClosed", err)
	}
	waitUntil(t, "the close frame", func() bool { return p.seen("close:1000") == 1 })

	p2, url2 := startPeer(t)
	l2 := dialLeg(t, url2, &recorder{}, newQueue(), clock.NewFake(time.Unix(0, 0)), 300*time.Millisecond)
	<-p2.opened
	select {
	case <-l2.done:
	case <-time.After(5 * time.Second):
		t.Fatal("a silent peer did not end the leg")
	}
	if err := l2.wait(); err == nil || err == errLegClosed {
		t.Fatalf("leg ended with %v, want a read timeout", err)
	}
}

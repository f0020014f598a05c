package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/internal/wsframe"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

const (
	// writeQueueLimit bounds the frames waiting for the writer. A full queue
	// blocks the sender, as the real agent's synchronous websocket write does,
	// so a stalled leg back-pressures the target instead of growing memory.
	writeQueueLimit = 4096
	wsReadBuffer    = 64 << 10
	wsWriteBuffer   = 8 << 10
	batchBuffer     = 64 << 10
	dialTimeout     = 30 * time.Second
)

// controlWait bounds a control frame's write, and its wait for a batch
// being written. A variable so that a test can make it shorter than the
// ping interval.
var controlWait = 10 * time.Second

// batchConn is the net.Conn handed to gorilla. Once batching is on, writes
// land in a buffer that the link's writer flushes when its queue runs dry, so
// a burst of small websocket messages (acks, 1 KiB data) costs one syscall.
// The mutex makes gorilla's writes and the explicit flushes safe from any
// goroutine (gorilla itself serialises its writes).
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	bw       *bufio.Writer
	batching bool
	// beforeRead runs on the reader goroutine whenever gorilla's buffered
	// reader needs more bytes from the socket, i.e. when everything already
	// received has been handled; the session flushes deferred target writes
	// there. Set once before the reader starts.
	beforeRead func()
}

func (c *batchConn) Read(p []byte) (int, error) {
	if c.beforeRead != nil {
		c.beforeRead()
	}
	return c.Conn.Read(p)
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return c.Conn.Write(p)
	}
	return c.bw.Write(p)
}

func (c *batchConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching || c.bw.Buffered() == 0 {
		return nil
	}
	return c.bw.Flush()
}

func (c *batchConn) startBatching() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

// outFrame is one queued websocket message: a prebuilt frame, or an ack
// (ack set) that the writer encodes itself. flushed, if set, is closed once
// everything queued before it has been flushed to the socket.
type outFrame struct {
	b       []byte
	ack     bool
	ackID   uuid.UUID
	ackSeq  int64
	flushed chan struct{}
}

// link is one agent leg: a websocket connection with its writer and
// keepalive goroutines. Sequence numbers and buffers live in the session and
// survive links.
type link struct {
	s  *session
	ws *websocket.Conn
	bc *batchConn

	mu       sync.Mutex
	notEmpty sync.Cond
	notFull  sync.Cond
	queue    []outFrame
	closed   bool

	pong     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	// wmu (a one-slot semaphore) serializes the writer's batches with the
	// control frames other goroutines write through gorilla, as gorilla's
	// own lock did when it wrote every message: a control frame leaves its
	// deadline on the socket, which must not bound a batch, and a batch's
	// must not bound a control frame.
	wmu chan struct{}
}

// write queues f on the current link. With no link (reconnecting) it is
// dropped: stream data stays in the outgoing buffer and is retransmitted
// after the reconnect, and a lost ack is re-sent when the client
// retransmits.
func (s *session) write(f outFrame) {
	if l := s.link.Load(); l != nil {
		l.enqueue(f)
	}
}

func (l *link) enqueue(f outFrame) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.queue) >= writeQueueLimit && !l.closed {
		l.notFull.Wait()
	}
	if l.closed {
		return false
	}
	l.queue = append(l.queue, f)
	l.notEmpty.Signal()
	return true
}

// writeLoop is the only goroutine writing data messages to the websocket.
func (l *link) writeLoop() {
	var batch []outFrame
	var scratch []byte // ack encoding buffer, reused
	fw, conn := wsframe.NewClient(), l.ws.NetConn()
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.closed {
			l.notEmpty.Wait()
		}
		if l.closed {
			l.mu.Unlock()
			return
		}
		batch, l.queue = l.queue, batch[:0]
		l.notFull.Broadcast()
		l.mu.Unlock()

		for i := range batch {
			f := batch[i]
			batch[i] = outFrame{}
			b := f.b
			if f.ack {
				scratch = l.s.appendAck(scratch[:0], f.ackID, f.ackSeq)
				b = scratch
			}
			if b != nil {
				// Messages go out in batches (internal/wsframe), which
				// take turns with the control frames (wmu).
				fw.Binary(b)
				l.s.stats.FramesOut.Add(1)
				if fw.Pending() >= wsframe.FlushAt {
					if err := l.writeBatch(fw, conn, false); err != nil {
						l.fail("write", err)
						return
					}
				}
			}
			if f.flushed != nil {
				if err := l.flushAll(fw, conn); err != nil {
					l.fail("flush", err)
					return
				}
				close(f.flushed)
			}
		}
		l.mu.Lock()
		idle := len(l.queue) == 0
		l.mu.Unlock()
		if idle {
			if err := l.flushAll(fw, conn); err != nil {
				l.fail("flush", err)
				return
			}
		}
	}
}

// flushAll writes the writer's batch, then the connection's buffer.
func (l *link) flushAll(fw *wsframe.Writer, conn net.Conn) error {
	return l.writeBatch(fw, conn, true)
}

// writeBatch writes the writer's batch (and with all the connection's
// buffer) with no deadline, as gorilla wrote data messages for the agent:
// a client that reads slowly holds the agent's writes, it does not end
// the leg.
func (l *link) writeBatch(fw *wsframe.Writer, conn net.Conn, all bool) error {
	select {
	case l.wmu <- struct{}{}:
	case <-l.done:
		return errors.New("agent leg closed")
	}
	defer func() { <-l.wmu }()
	_ = conn.SetWriteDeadline(time.Time{})
	if err := fw.Flush(conn); err != nil {
		return err
	}
	if !all {
		return nil
	}
	return l.bc.Flush()
}

// flush waits until everything queued so far is on the socket, or the link
// is gone, or timeout passes.
func (l *link) flush(timeout time.Duration) {
	ch := make(chan struct{})
	if !l.enqueue(outFrame{flushed: ch}) {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-l.done:
	case <-t.C:
	}
}

// control writes a websocket control frame and pushes it out at once. It
// waits for a batch being written at most controlWait, as gorilla waited
// for a message being written.
func (l *link) control(messageType int, data []byte) {
	deadline := time.Now().Add(controlWait)
	t := time.NewTimer(controlWait)
	select {
	case l.wmu <- struct{}{}:
		t.Stop()
	case <-t.C:
		l.fail("control", errors.New("timed out waiting for a batch write"))
		return
	case <-l.done:
		t.Stop()
		return
	}
	defer func() { <-l.wmu }()
	if err := l.ws.WriteControl(messageType, data, deadline); err != nil {
		if !errors.Is(err, websocket.ErrCloseSent) {
			l.fail("control", err)
		}
		return
	}
	if err := l.bc.Flush(); err != nil {
		l.fail("flush", err)
	}
}

// fail tears the socket down after a write error so that the reader fails
// too and the connection loop decides what to do (reconnect or stop).
func (l *link) fail(op string, err error) {
	l.s.log.Debug("agent leg write failed", "op", op, "err", err)
	l.bc.Conn.Close()
}

// keepalive pings every PingInterval and enforces the agent's read deadline:
// PongWait after each pong, PingInterval+PongWait at first (docs/protocol.md
// 9.1). Expiry closes the socket; the reader's error then reconnects at once.
// It is a clock timer rather than SetReadDeadline so that a fake clock
// drives it too.
func (l *link) keepalive() {
	q := l.s.q
	ping := l.s.clk.NewTimer(q.PingInterval)
	defer ping.Stop()
	deadline := l.s.clk.NewTimer(q.PingInterval + q.PongWait)
	defer deadline.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-ping.C():
			l.control(websocket.PingMessage, []byte("keepalive"))
			ping.Reset(q.PingInterval)
		case <-l.pong:
			deadline.Reset(q.PongWait)
		case <-deadline.C():
			l.s.log.Info("agent leg read deadline exceeded; reconnecting")
			l.bc.Conn.Close()
			return
		}
	}
}

// shutdown closes the socket and stops the link's goroutines. Idempotent.
func (l *link) shutdown() {
	l.stopOnce.Do(func() {
		close(l.done)
		l.mu.Lock()
		l.closed = true
		l.notEmpty.Broadcast()
		l.notFull.Broadcast()
		l.mu.Unlock()
		l.bc.Conn.Close()
	})
	l.wg.Wait()
}

// connect makes one attempt to open the agent leg: CreateDataChannel for a
// fresh token, dial, opening frame, agent_session_state Connected.
func (s *session) connect(ctx context.Context) (*link, error) {
	url, token, err := s.cfg.CreateDataChannel(ctx)
	if err != nil {
		return nil, fmt.Errorf("create data channel: %w", err)
	}
	var bc *batchConn
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			bc = &batchConn{Conn: c, bw: bufio.NewWriterSize(c, batchBuffer)}
			return bc, nil
		},
		TLSClientConfig:  s.cfg.TLS,
		HandshakeTimeout: dialTimeout,
		ReadBufferSize:   wsReadBuffer,
		WriteBufferSize:  wsWriteBuffer,
	}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial agent leg: %w", err)
	}
	open := wire.OpenDataChannel{
		MessageSchemaVersion: "1.0",
		RequestID:            uuid.NewString(),
		TokenValue:           token,
		ClientID:             s.clientID,
		ClientInstanceID:     s.cfg.InstanceID,
	}
	if err := s.writeOpening(ws, open); err != nil {
		ws.Close()
		return nil, fmt.Errorf("open agent leg: %w", err)
	}
	bc.startBatching()
	bc.beforeRead = s.flushTarget
	l := &link{s: s, ws: ws, bc: bc, pong: make(chan struct{}, 1), done: make(chan struct{}), wmu: make(chan struct{}, 1)}
	l.notEmpty.L = &l.mu
	l.notFull.L = &l.mu
	ws.SetPongHandler(func(string) error {
		select {
		case l.pong <- struct{}{}:
		default:
		}
		return nil
	})
	ws.SetPingHandler(func(data string) error {
		l.control(websocket.PongMessage, []byte(data))
		return nil
	})
	ws.SetCloseHandler(func(code int, _ string) error {
		l.control(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""))
		return nil
	})
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.writeLoop() }()
	go func() { defer l.wg.Done(); l.keepalive() }()
	return l, nil
}

// writeOpening sends the agent's opening text frame, then its binary
// agent_session_state Connected, before any other traffic.
func (s *session) writeOpening(ws *websocket.Conn, open wire.OpenDataChannel) error {
	b, err := wire.MarshalPayload(open)
	if err != nil {
		return err
	}
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return err
	}
	state, err := s.sessionStateFrame("Connected")
	if err != nil {
		return err
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, state); err != nil {
		return err
	}
	s.stats.FramesOut.Add(1)
	return nil
}

// sessionStateFrame builds an agent_session_state frame (consumed by MGS).
func (s *session) sessionStateFrame(state string) ([]byte, error) {
	p, err := wire.MarshalPayload(wire.AgentSessionState{SchemaVersion: 1, SessionState: state, SessionID: s.cfg.SessionID})
	if err != nil {
		return nil, err
	}
	return s.encodeFrame(wire.TypeAgentSessionState, 0, 0, wire.PayloadNone, p), nil
}

// connectWithRetry opens the agent leg with the real agent's retry policy:
// up to 5 attempts, the first at once, then after 100-200 ms, doubling,
// capped at 5 s. ErrSessionTerminated is final.
func (s *session) connectWithRetry(ctx context.Context) (*link, error) {
	delay := reconnectInitialMin + time.Duration(rand.Int64N(int64(reconnectInitialMin)))
	var lastErr error
	for attempt := 1; ; attempt++ {
		l, err := s.connect(ctx)
		if err == nil {
			return l, nil
		}
		if errors.Is(err, ErrSessionTerminated) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		lastErr = err
		s.log.Warn("opening agent leg failed", "attempt", attempt, "err", err)
		if attempt == reconnectAttempts {
			return nil, fmt.Errorf("agent leg: %d attempts failed: %w", reconnectAttempts, lastErr)
		}
		t := s.clk.NewTimer(delay)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		delay = min(delay*2, reconnectMaxDelay)
	}
}

// connLoop owns the agent leg: it reads frames on the current link and, when
// the link fails, reconnects (the reconnect worker). It exits when the
// session is closing or reconnecting failed for good.
func (s *session) connLoop(l *link) {
	defer close(s.connDone)
	for {
		err := s.readLoop(l)
		l.shutdown()
		s.link.CompareAndSwap(l, nil)
		if s.closing.Load() || s.ctx.Err() != nil {
			return
		}
		s.log.Info("agent leg lost; reconnecting", "err", err)
		nl, err := s.connectWithRetry(s.ctx)
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("giving up on the agent leg", "err", err)
				s.end(fmt.Errorf("%w: %w", ErrGaveUp, err))
			}
			return
		}
		s.link.Store(nl)
		if s.closing.Load() {
			nl.shutdown()
			s.link.CompareAndSwap(nl, nil)
			return
		}
		s.stats.Reconnects.Add(1)
		s.setPaused(false) // a successful reconnect clears the pause
		l = nl
	}
}

// readLoop reads websocket messages and handles each synchronously. It
// returns when the connection fails.
func (s *session) readLoop(l *link) error {
	var errs int
	for {
		mt, r, err := l.ws.NextReader()
		if err != nil {
			// The real agent reconnects after 5 consecutive read errors.
			// Websocket read errors are permanent, so they come back to
			// back; a close frame counts the same way.
			if errs++; errs < readErrorsBeforeReconnect {
				continue
			}
			s.flushTarget()
			return err
		}
		errs = 0
		if mt != websocket.BinaryMessage {
			s.log.Warn("dropping non-binary websocket message", "type", mt)
			continue
		}
		// A message beyond the frame size bound is not kept: gorilla
		// skips the rest when the next message is requested.
		b, err := wire.ReadMessage(r, s.rbuf, wire.MaxFrameSize)
		s.rbuf = b[:0]
		if errors.Is(err, wire.ErrMessageTooLarge) {
			s.log.Warn("dropping oversized websocket message")
			continue
		}
		if err != nil {
			s.flushTarget()
			return err
		}
		s.handleFrame(b)
	}
}

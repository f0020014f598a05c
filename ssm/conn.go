package ssm

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// wsConn is one websocket leg of a session. The session outlives it: a
// reconnect replaces the wsConn, never the stream state.
type wsConn struct {
	s    *Session
	ws   *websocket.Conn
	bc   *batchConn
	done chan struct{} // closed when the leg is dead
	once sync.Once
	err  error
	quit chan bool // asks the writer to close the leg (true: with a close frame)
	wg   sync.WaitGroup
	// validFrames counts frames that decoded: a leg that carried one is
	// healthy, whatever ended it.
	validFrames atomic.Int64
}

func newWSConn(s *Session, ws *websocket.Conn, bc *batchConn) *wsConn {
	c := &wsConn{s: s, ws: ws, bc: bc, done: make(chan struct{}), quit: make(chan bool, 1)}
	// Route pongs we owe the server through the writer, which owns writes.
	ws.SetPingHandler(func(data string) error {
		c.extendDeadline()
		s.acks.pushControl(websocket.PongMessage, []byte(data))
		s.wake()
		return nil
	})
	ws.SetPongHandler(func(string) error {
		c.extendDeadline()
		return nil
	})
	// Do not echo close frames from the reader goroutine; the leg is
	// replaced anyway.
	ws.SetCloseHandler(func(code int, text string) error { return nil })
	return c
}

func (c *wsConn) start() {
	c.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
}

// dead records why the leg died, once.
func (c *wsConn) dead(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
		// Unblock a reader stuck in the socket and a writer stuck in a
		// flush: the leg is being replaced.
		_ = c.ws.UnderlyingConn().Close()
	})
}

// close asks the writer to end the leg, with a normal close frame if graceful.
func (c *wsConn) close(graceful bool) {
	select {
	case c.quit <- graceful:
	default:
	}
}

func (c *wsConn) wait() error {
	c.wg.Wait()
	_ = c.ws.Close()
	return c.err
}

func (c *wsConn) extendDeadline() {
	select {
	case <-c.done:
	default:
		_ = c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.ReadTimeout))
	}
}

func (c *wsConn) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, 0, 4096)
	for {
		c.extendDeadline()
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.dead(err)
			return
		}
		buf, err = wire.ReadMessage(r, buf, maxWebsocketMessage)
		if err != nil {
			c.dead(err)
			return
		}
		if mt != websocket.BinaryMessage {
			c.s.invalidFrames.Add(1)
			c.s.log.Debug("dropping a non-binary websocket message", "type", mt, "len", len(buf))
			continue
		}
		if c.s.handleFrame(buf) {
			c.validFrames.Add(1)
		}
		select {
		case <-c.done:
			return
		default:
		}
	}
}

func (c *wsConn) writeLoop() {
	defer c.wg.Done()
	s := c.s
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	retr := s.clk.NewTimer(time.Hour)
	defer retr.Stop()
	for {
		if err := c.writePending(); err != nil {
			c.dead(err)
			return
		}
		if next := s.send.nextDeadline(); !next.IsZero() {
			retr.Reset(max(next.Sub(s.clk.Now()), time.Millisecond))
		} else {
			retr.Reset(time.Hour)
		}
		select {
		case <-s.kick:
		case <-retr.C():
		case <-ping.C:
			if err := c.writeControl(websocket.PingMessage, []byte("keepalive")); err != nil {
				c.dead(err)
				return
			}
		case graceful := <-c.quit:
			_ = c.writePending()
			if graceful {
				_ = c.writeControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			}
			c.dead(errLegClosed)
			return
		case <-c.done:
			return
		}
	}
}

var errLegClosed = errors.New("leg closed by ssmproxy")

func (c *wsConn) writeControl(mt int, data []byte) error {
	deadline := time.Now().Add(defaultWriteTimeout)
	if err := c.ws.WriteControl(mt, data, deadline); err != nil {
		return err
	}
	return c.flush(deadline)
}

func (c *wsConn) flush(deadline time.Time) error {
	if c.bc == nil {
		return nil
	}
	_ = c.bc.SetWriteDeadline(deadline)
	return c.bc.Flush()
}

// writePending writes queued acks and control frames, then every stream
// message that is due, in batches, and flushes.
func (c *wsConn) writePending() error {
	s := c.s
	deadline := time.Now().Add(defaultWriteTimeout)
	_ = c.ws.SetWriteDeadline(deadline)
	wrote := false
	for {
		acks, controls := s.acks.take()
		for _, ctl := range controls {
			if err := c.ws.WriteControl(ctl.kind, ctl.data, deadline); err != nil {
				return err
			}
			wrote = true
		}
		for i, a := range acks {
			if err := c.ws.WriteMessage(websocket.BinaryMessage, a); err != nil {
				return err
			}
			// gorilla copied it: the frame can be reused.
			putAckBuf(a)
			acks[i] = nil
			wrote = true
		}
		frames := s.send.due(s.clk.Now(), writeBatchFrames)
		for _, f := range frames {
			if err := c.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
				return err
			}
			wrote = true
		}
		if len(acks) == 0 && len(controls) == 0 && len(frames) == 0 {
			break
		}
	}
	if wrote {
		return c.flush(deadline)
	}
	return nil
}

// ackQueue holds acks and control frames for the writer.
type ackQueue struct {
	mu       sync.Mutex
	acks     [][]byte
	controls []control
}

// control is a websocket control frame (a pong we owe) for the writer.
type control struct {
	kind int
	data []byte
}

func (q *ackQueue) push(frame []byte) {
	q.mu.Lock()
	q.acks = append(q.acks, frame)
	q.mu.Unlock()
}

func (q *ackQueue) pushControl(kind int, data []byte) {
	q.mu.Lock()
	q.controls = append(q.controls, control{kind: kind, data: data})
	q.mu.Unlock()
}

func (q *ackQueue) take() ([][]byte, []control) {
	q.mu.Lock()
	defer q.mu.Unlock()
	a, c := q.acks, q.controls
	q.acks, q.controls = nil, nil
	return a, c
}

func (q *ackQueue) clear() {
	q.mu.Lock()
	q.acks, q.controls = nil, nil
	q.mu.Unlock()
}

// handleFrame dispatches one binary message from the websocket reader. It
// reports whether the message was a valid frame.
func (s *Session) handleFrame(b []byte) bool {
	f, err := wire.Decode(b)
	if err != nil {
		// Dropped without an ack: the agent resends (protocol.md 4.4).
		s.invalidFrames.Add(1)
		s.log.Debug("dropping invalid frame", "err", err)
		return false
	}
	switch f.MessageType {
	case wire.TypeOutputStreamData:
		s.send.setPaused(false)
		s.handleStreamData(f)
	case wire.TypeAcknowledge:
		s.send.setPaused(false)
		seq, ok := wire.ParseAckSequence(f.Payload)
		if !ok {
			s.invalidFrames.Add(1)
			s.log.Debug("dropping malformed acknowledge")
			return false
		}
		s.send.ack(seq)
	case wire.TypeChannelClosed:
		var cc wire.ChannelClosed
		_ = json.Unmarshal(f.Payload, &cc)
		s.mu.Lock()
		s.peerClosed = true
		s.closeReason = cc.Output
		refusal := s.refusal
		s.mu.Unlock()
		s.log.Info("channel closed by the service", "output", cc.Output)
		s.finish(refusal)
	case wire.TypePausePublication:
		s.log.Debug("pause_publication")
		s.send.setPaused(true)
	case wire.TypeStartPublication:
		s.log.Debug("start_publication")
		s.send.setPaused(false)
		s.wake()
	default:
		s.log.Debug("dropping frame of unknown type", "type", f.MessageType)
	}
	return true
}

func (s *Session) handleStreamData(f *wire.Frame) {
	handshakeType := f.PayloadType == wire.PayloadHandshakeRequest || f.PayloadType == wire.PayloadHandshakeComplete ||
		f.PayloadType == wire.PayloadEncChallengeRequest
	v := s.recv.receive(f.SequenceNumber, f.PayloadType, f.Payload)
	if v == verdictDrop {
		return
	}
	ack, err := s.ackFrame(f.SequenceNumber, f.MessageID)
	if err != nil {
		return
	}
	s.acks.push(ack)
	s.recent.record(f.SequenceNumber, f.MessageID, s.clk.Now())
	s.wake()
	if handshakeType {
		// The ack for a handshake message goes out before we act on it.
		s.mu.Lock()
		req := s.pendingHS
		s.pendingHS = nil
		s.mu.Unlock()
		if req != nil {
			s.handleHandshakeRequest(req)
		}
	}
}

// ackBufs recycles ack frames: one is built for every message received,
// and each is garbage as soon as the writer has copied it.
var ackBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func putAckBuf(b []byte) {
	if cap(b) == 512 {
		ackBufs.Put(&b)
	}
}

// ackFrame builds the acknowledge for an output_stream_data message.
func (s *Session) ackFrame(seq int64, id uuid.UUID) ([]byte, error) {
	var payload [256]byte
	p := wire.AppendAcknowledge(payload[:0], wire.TypeOutputStreamData, id, seq)
	buf := *ackBufs.Get().(*[]byte)
	buf = buf[:wire.FrameHeaderSize+len(p)]
	err := wire.EncodeInto(buf, &wire.Frame{
		MessageType:   wire.TypeAcknowledge,
		SchemaVersion: wire.SchemaVersion,
		CreatedDate:   uint64(s.clk.Now().UnixMilli()),
		Flags:         wire.FlagsAck,
		MessageID:     uuid.New(),
		Payload:       p,
	})
	if err != nil {
		putAckBuf(buf)
		return nil, err
	}
	return buf, nil
}

// reackWindow: after a reconnect, acks sent this shortly before are sent
// again. Acks in flight when a leg dies are lost; the agent resends only the
// oldest unacked message, one per tick, so each lost ack would otherwise
// cost a full resend cycle in sequence (minutes after a busy drop).
const (
	reackWindow = 3 * time.Second
	recentAcks  = 8192
)

type ackRecord struct {
	seq int64
	id  uuid.UUID
	at  time.Time
}

// recentAckRing remembers the last acks sent.
type recentAckRing struct {
	mu   sync.Mutex
	ring [recentAcks]ackRecord
	next int
	n    int
}

func (r *recentAckRing) record(seq int64, id uuid.UUID, at time.Time) {
	r.mu.Lock()
	r.ring[r.next] = ackRecord{seq: seq, id: id, at: at}
	r.next = (r.next + 1) % recentAcks
	r.n = min(r.n+1, recentAcks)
	r.mu.Unlock()
}

// since returns the distinct records newer than t, oldest first.
func (r *recentAckRing) since(t time.Time) []ackRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[int64]bool)
	var out []ackRecord
	for i := 0; i < r.n; i++ {
		rec := r.ring[(r.next-r.n+i+recentAcks)%recentAcks]
		if rec.at.After(t) && !seen[rec.seq] {
			seen[rec.seq] = true
			out = append(out, rec)
		}
	}
	return out
}

// reackRecent queues acks for everything acked shortly before the last leg
// died (however long the resume took).
func (s *Session) reackRecent() int {
	from := s.legDied
	if from.IsZero() {
		from = s.clk.Now()
	}
	recs := s.recent.since(from.Add(-reackWindow))
	for _, rec := range recs {
		if ack, err := s.ackFrame(rec.seq, rec.id); err == nil {
			s.acks.push(ack)
		}
	}
	return len(recs)
}

// deliver is the receiver's in-order callback.
func (s *Session) deliver(pt wire.PayloadType, p []byte) bool {
	switch pt {
	case wire.PayloadOutput:
		select {
		case <-s.ready:
		default:
			// Output before HandshakeComplete: agents too old to handshake.
			// Not ready: no ack.
			return false
		}
		return s.deliv.push(p)
	case wire.PayloadHandshakeRequest:
		var req wire.HandshakeRequest
		if err := json.Unmarshal(p, &req); err != nil {
			s.log.Warn("malformed HandshakeRequest", "err", err)
			s.fail(&HandshakeRefusedError{SessionID: s.info.SessionID, What: "malformed handshake request: " + err.Error()})
			return true
		}
		s.mu.Lock()
		s.pendingHS = &req
		s.mu.Unlock()
	case wire.PayloadHandshakeComplete:
		s.handleHandshakeComplete(p)
	case wire.PayloadEncChallengeRequest:
		s.fail(&HandshakeRefusedError{SessionID: s.info.SessionID, What: "the agent requested a KMS challenge, which ssmproxy does not implement"})
	case wire.PayloadFlag:
		fl, _ := wire.ParseFlag(p)
		s.log.Info("flag from the agent", "flag", fl.String())
	case wire.PayloadStdErr, wire.PayloadError:
		s.log.Info("agent error output", "text", string(bytes.TrimSpace(p)))
	default:
		s.log.Debug("ignoring stream payload", "payloadType", pt)
	}
	return true
}

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// closeWait bounds how long the agent waits for MGS to answer its close
// frame before dropping the socket.
const closeWait = time.Second

// session is one run of the agent. Ownership of its goroutines:
//   - connLoop (reader + reconnect worker) is waited for through connDone;
//   - resendLoop and pluginRun through wg;
//   - each link's writer and keepalive by link.shutdown;
//   - the port pumps by the port session's wait.
type session struct {
	cfg      Config
	q        Quirks
	clk      clock.Clock
	log      *slog.Logger
	stats    *Stats
	ids      *idGen
	clientID string

	ctx    context.Context // cancelled when the session shuts down
	cancel context.CancelFunc
	wg     sync.WaitGroup

	link     atomic.Pointer[link] // nil while the leg is down
	connDone chan struct{}
	closing  atomic.Bool // set once the agent closes its leg: no more reconnects

	endOnce sync.Once
	ended   chan struct{}
	result  error

	pauseMu sync.Mutex
	paused  atomic.Bool
	resumed chan struct{} // closed when the current pause clears

	out     *outBuffer
	sendMu  sync.Mutex
	nextSeq int64 // guarded by sendMu

	// Reader-goroutine state: the receive side of the stream.
	expected int64
	inBuf    map[int64]inMsg
	rbuf     []byte
	tbuf     []byte        // deferred Output bytes for the target
	tacks    []deferredAck // their acks

	hs         handshake
	hsPending  []byte // reader-owned: a HandshakeResponse awaiting its ack
	hsComplete atomic.Bool

	portMu      sync.Mutex
	portStopped bool
	port        atomic.Pointer[portBox]
}

// portBox lets the active port session be published atomically to the reader.
type portBox struct{ portSession }

func newSession(cfg Config) *session {
	return &session{
		cfg:      cfg,
		q:        cfg.Quirks,
		clk:      cfg.Clock,
		log:      cfg.Log.With("session", cfg.SessionID),
		stats:    cfg.Stats,
		ids:      newIDGen(),
		clientID: uuid.NewString(),
		connDone: make(chan struct{}),
		ended:    make(chan struct{}),
		out:      newOutBuffer(cfg.Quirks.OutgoingBufferCap),
		inBuf:    make(map[int64]inMsg),
		rbuf:     make([]byte, 0, 4096),
		hs:       handshake{resp: make(chan []byte, 1)},
	}
}

// end records the session's outcome; the first call wins.
func (s *session) end(err error) {
	s.endOnce.Do(func() {
		s.result = err
		close(s.ended)
	})
}

func (s *session) violation(severity, code, detail string) {
	s.log.Warn("client protocol violation", "severity", severity, "code", code, "detail", detail)
	s.cfg.Violation(severity, code, detail)
}

func (s *session) run(parent context.Context) error {
	s.ctx, s.cancel = context.WithCancel(parent)
	defer s.cancel()

	l, err := s.connectWithRetry(s.ctx)
	if err != nil {
		return err
	}
	s.link.Store(l)
	go s.connLoop(l)
	s.wg.Go(s.resendLoop)
	s.wg.Go(s.pluginRun)

	select {
	case <-s.ended:
	case <-parent.Done():
		s.end(parent.Err())
	}
	s.shutdown(parent.Err() != nil)
	return s.result
}

// shutdown ends the session. Like the real agent it stops the plugin, drains
// the outgoing buffer for up to 2 s, tells MGS it is Terminating and closes
// its leg normally. abrupt (the caller's context is gone) skips the goodbye.
func (s *session) shutdown(abrupt bool) {
	s.portMu.Lock()
	s.portStopped = true
	s.portMu.Unlock()
	if p := s.port.Load(); p != nil {
		p.close()
	}
	if !abrupt {
		s.drain()
		s.closing.Store(true)
		s.goodbye()
	}
	s.closing.Store(true)
	s.cancel()
	if l := s.link.Load(); l != nil {
		l.shutdown()
	}
	<-s.connDone
	s.wg.Wait()
	if p := s.port.Load(); p != nil {
		p.wait()
	}
}

// drain waits until the client has acked everything, for up to 2 s, or until
// the leg is gone for good.
func (s *session) drain() {
	if s.out.len() == 0 {
		return
	}
	deadline := s.clk.NewTimer(drainTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for s.out.len() > 0 {
		select {
		case <-deadline.C():
			s.log.Info("outgoing buffer not drained", "unacked", s.out.len())
			return
		case <-s.connDone:
			return
		case <-s.ctx.Done():
			return
		case <-poll.C:
		}
	}
}

// goodbye sends agent_session_state Terminating and a normal close, then
// gives MGS a moment to answer the close before the socket is dropped. A leg
// that stopped reading could block the writes; a watchdog then drops the
// socket, which unblocks them.
func (s *session) goodbye() {
	l := s.link.Load()
	if l == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if frame, err := s.sessionStateFrame("Terminating"); err == nil && frame != nil {
			l.enqueue(outFrame{b: frame})
		}
		l.flush(closeWait)
		l.control(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	}()
	t := time.NewTimer(2 * closeWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		l.shutdown()
		<-done
		return
	case <-s.ctx.Done():
		l.shutdown()
		<-done
		return
	}
	select { // MGS answers the close; the reader then sees it and stops
	case <-s.connDone:
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// pluginRun is the session plugin: handshake, then the Port plugin.
func (s *session) pluginRun() {
	if err := s.performHandshake(); err != nil {
		s.end(err)
		return
	}
}

// handleFrame parses one binary frame the way the real agent does and
// dispatches it. The real agent checks only the bounds, HeaderLength != 0, a
// non-empty MessageType and a non-zero CreatedDate (for every message type),
// not the digest; invalid
// frames are dropped without an ack.
func (s *session) handleFrame(b []byte) {
	s.stats.FramesIn.Add(1)
	f, err := wire.DecodeHeader(b)
	if err != nil {
		s.log.Warn("dropping invalid frame", "err", err)
		return
	}
	if f.MessageType == "" {
		s.log.Warn("dropping frame without message type")
		return
	}
	publication := f.MessageType == wire.TypePausePublication || f.MessageType == wire.TypeStartPublication
	// The real agent's AgentMessage.Validate (agent/session/contracts/
	// agentmessage.go, called first thing by the data channel's incoming
	// handler) refuses a zero CreatedDate for every type, publication frames
	// included: minimal-header pause/start frames never reach its pause
	// logic (docs/fakeaws.md 4.1).
	if f.CreatedDate == 0 {
		s.log.Warn("dropping frame with zero CreatedDate", "type", f.MessageType)
		return
	}
	if s.q.CheckDigest && !publication {
		if err := f.Validate(); err != nil {
			if errors.Is(err, wire.ErrPayloadDigest) {
				s.stats.DigestFailures.Add(1)
			}
			s.log.Warn("dropping frame that fails validation", "type", f.MessageType, "err", err)
			return
		}
	}
	switch f.MessageType {
	case wire.TypeInputStreamData:
		s.handleInput(f)
	case wire.TypeAcknowledge:
		s.handleAck(f)
	case wire.TypePausePublication:
		s.log.Info("pause_publication")
		s.setPaused(true)
	case wire.TypeStartPublication:
		s.log.Info("start_publication")
		s.setPaused(false)
	case wire.TypeChannelClosed:
		var cc wire.ChannelClosed
		_ = json.Unmarshal(f.Payload, &cc) // only for the log; Output is informational
		s.log.Info("channel_closed", "output", cc.Output)
		s.end(nil)
	default:
		s.log.Warn("dropping frame of unknown message type", "type", f.MessageType)
	}
}

package ssm

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/internal/coalesce"
	"github.com/ssmproxy/ssmproxy/internal/wsframe"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// A leg is one websocket of a session: the socket, its opening frame
// (sent by dialChannel), pings, the read deadline and batched writes. The
// session outlives it: a reconnect replaces the leg, never the stream
// state. The leg knows the session only through two narrow interfaces
// (docs/architecture.md, "Inside ssm"): it hands every binary message to a
// legHandler and takes what to write from a legOutbox. Nothing of the
// stream, the acks or the handshake lives here.

// legHandler receives what a leg reads.
type legHandler interface {
	// handleFrame takes one binary message. It reports whether the message
	// was a valid frame; a leg that carried one has proved healthy.
	handleFrame(b []byte) bool
	// dropMessage notes a websocket message that is not binary (the data
	// channel carries only binary frames).
	dropMessage(messageType, size int)
	// crossTraffic is a count that changes only when stream data has
	// moved both ways (read coalescing, internal/coalesce).
	crossTraffic() int64
}

// legOutbox is where a leg takes what to write, in this order: the
// session's acks, then stream messages that are due.
type legOutbox interface {
	// wakeup is signalled whenever something new is queued.
	wakeup() <-chan struct{}
	// takeAcks returns the queued acks, which the leg encodes; the slice
	// is the leg's until its next call.
	takeAcks() []ackRecord
	// emitDue hands emit up to max stream frames to send now (new or
	// retransmitted) and returns how many. emit must not keep a frame.
	emitDue(now time.Time, max int, emit func([]byte)) int
	// nextDue is when the next stream frame comes due; zero if none.
	nextDue() time.Time
}

// legConfig are the timings of a leg. Pings run on the injected clock (a
// test steps them), the read deadline on the wall clock (the kernel times
// the socket): a test that freezes a fake clock with a ping interval below
// a third of its wall-clock run sees idle legs die of the read deadline.
type legConfig struct {
	pingInterval time.Duration
	// readTimeout: a leg that has read nothing (not even a pong) this long
	// is dead, which catches half-open sockets.
	readTimeout time.Duration
	clock       clock.Clock
	log         *slog.Logger
	tracer      Tracer
	// coalesce moderates the socket reads while the agent's output
	// trickles in one direction (internal/coalesce).
	coalesce coalesce.Config
}

// errLegClosed is why a leg that ssmproxy itself closed ended.
var errLegClosed = errors.New("leg closed by ssmproxy")

type leg struct {
	ws   *websocket.Conn
	bc   *batchConn
	fw   *wsframe.Writer // the writer goroutine's, with acks
	acks *ackEncoder
	// seen shows the tracer every frame written, before masking; nil
	// without a tracer.
	seen func([]byte)
	in   legHandler
	out  legOutbox
	cfg  legConfig

	// pongs we owe the server, written by the writer, which owns writes.
	pongMu sync.Mutex
	pongs  [][]byte
	pongCh chan struct{}

	done chan struct{} // closed when the leg is dead
	once sync.Once
	err  error
	quit chan bool // asks the writer to close the leg (true: with a close frame)
	// closing: we are closing the leg, so whatever ends it (our close
	// frame, the peer's echo of it) is errLegClosed.
	closing atomic.Bool
	wg      sync.WaitGroup
	// validFrames counts frames that decoded: a leg that carried one is
	// healthy, whatever ended it.
	validFrames atomic.Int64
}

func newLeg(ws *websocket.Conn, bc *batchConn, in legHandler, out legOutbox, cfg legConfig) *leg {
	l := &leg{ws: ws, bc: bc, fw: wsframe.NewClient(), acks: newAckEncoder(), in: in, out: out, cfg: cfg,
		pongCh: make(chan struct{}, 1), done: make(chan struct{}), quit: make(chan bool, 1)}
	if cfg.tracer != nil {
		l.seen = func(b []byte) { cfg.tracer.Frame(true, b) }
	}
	if bc != nil && cfg.coalesce.Interval > 0 {
		bc.setReads(coalesce.New(cfg.coalesce, in.crossTraffic), cfg.coalesce.Small)
	}
	if bc != nil {
		bc.readTimeout = cfg.readTimeout
	}
	ws.SetPingHandler(func(data string) error {
		l.extendDeadline()
		l.pongMu.Lock()
		l.pongs = append(l.pongs, []byte(data))
		l.pongMu.Unlock()
		signal(l.pongCh)
		return nil
	})
	ws.SetPongHandler(func(string) error {
		l.extendDeadline()
		return nil
	})
	// Do not echo close frames from the reader goroutine; the leg is
	// replaced anyway.
	ws.SetCloseHandler(func(code int, text string) error { return nil })
	return l
}

// start runs the reader and the writer.
func (l *leg) start() {
	l.wg.Add(2)
	go l.readLoop()
	go l.writeLoop()
}

// dead records why the leg died, once.
func (l *leg) dead(err error) {
	l.once.Do(func() {
		if l.closing.Load() {
			err = errLegClosed
		}
		l.err = err
		close(l.done)
		// Unblock a reader stuck in the socket and a writer stuck in a
		// flush: the leg is being replaced.
		_ = l.ws.UnderlyingConn().Close()
	})
}

// close asks the writer to end the leg, with a normal close frame if graceful.
func (l *leg) close(graceful bool) {
	select {
	case l.quit <- graceful:
	default:
	}
}

// wait blocks until the leg is dead and both loops have stopped, and
// returns why it died.
func (l *leg) wait() error {
	l.wg.Wait()
	_ = l.ws.Close()
	return l.err
}

// extendDeadline pushes the read deadline out. Socket deadlines are wall
// clock by nature: the kernel, not our clock, times the socket.
func (l *leg) extendDeadline() {
	select {
	case <-l.done:
	default:
		_ = l.ws.SetReadDeadline(time.Now().Add(l.cfg.readTimeout))
	}
}

func (l *leg) readLoop() {
	defer l.wg.Done()
	buf := make([]byte, 0, 4096)
	for {
		if l.bc == nil || l.bc.readTimeout <= 0 {
			// Otherwise the batchConn sets the deadline per socket read.
			l.extendDeadline()
		}
		mt, r, err := l.ws.NextReader()
		if err != nil {
			l.dead(err)
			return
		}
		buf, err = wire.ReadMessage(r, buf, maxWebsocketMessage)
		if err != nil {
			l.dead(err)
			return
		}
		if mt != websocket.BinaryMessage {
			l.in.dropMessage(mt, len(buf))
			continue
		}
		if l.cfg.tracer != nil {
			l.cfg.tracer.Frame(false, buf)
		}
		if l.in.handleFrame(buf) {
			l.validFrames.Add(1)
		}
		select {
		case <-l.done:
			return
		default:
		}
	}
}

func (l *leg) writeLoop() {
	defer l.wg.Done()
	clk := l.cfg.clock
	ping := clk.NewTimer(l.cfg.pingInterval)
	defer ping.Stop()
	retr := clk.NewTimer(time.Hour)
	defer retr.Stop()
	for {
		if err := l.writePending(); err != nil {
			l.dead(err)
			return
		}
		if next := l.out.nextDue(); !next.IsZero() {
			retr.Reset(max(next.Sub(clk.Now()), time.Millisecond))
		} else {
			retr.Reset(time.Hour)
		}
		select {
		case <-l.out.wakeup():
		case <-l.pongCh:
		case <-retr.C():
		case <-ping.C():
			if err := l.writeControl(websocket.PingMessage, []byte("keepalive")); err != nil {
				l.dead(err)
				return
			}
			ping.Reset(l.cfg.pingInterval)
		case graceful := <-l.quit:
			l.closing.Store(true)
			_ = l.writePending()
			if graceful {
				_ = l.writeControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			}
			l.dead(errLegClosed)
			return
		case <-l.done:
			return
		}
	}
}

func (l *leg) writeControl(mt int, data []byte) error {
	deadline := time.Now().Add(defaultWriteTimeout)
	if err := l.ws.WriteControl(mt, data, deadline); err != nil {
		return err
	}
	return l.flush(deadline)
}

func (l *leg) flush(deadline time.Time) error {
	if l.bc == nil {
		return nil
	}
	_ = l.bc.SetWriteDeadline(deadline)
	return l.bc.Flush()
}

// emit adds one stream frame to the batch (legOutbox.emitDue).
func (l *leg) emit(f []byte) {
	l.fw.Binary(f)
	if l.seen != nil {
		l.seen(f)
	}
}

// flushFrames writes the batch of websocket messages to conn once it holds at
// least min bytes.
func (l *leg) flushFrames(conn net.Conn, min int) error {
	if l.fw.Pending() < min {
		return nil
	}
	return l.fw.Flush(conn)
}

func (l *leg) takePongs() [][]byte {
	l.pongMu.Lock()
	defer l.pongMu.Unlock()
	p := l.pongs
	l.pongs = nil
	return p
}

// writePending writes the pongs owed, the queued acks, then every stream
// message that is due, in batches, and flushes. Acks and stream frames go
// through a wsframe.Writer, one connection write per batch; pongs through
// gorilla, after the batch has been written (internal/wsframe).
func (l *leg) writePending() error {
	deadline := time.Now().Add(defaultWriteTimeout)
	_ = l.ws.SetWriteDeadline(deadline)
	conn := l.ws.NetConn()
	_ = conn.SetWriteDeadline(deadline)
	wrote := false
	for {
		pongs := l.takePongs()
		for _, p := range pongs {
			if err := l.ws.WriteControl(websocket.PongMessage, p, deadline); err != nil {
				return err
			}
			wrote = true
		}
		acks := l.out.takeAcks()
		for _, a := range acks {
			l.acks.encode(l.fw, a, l.seen)
			if err := l.flushFrames(conn, wsframe.FlushAt); err != nil {
				return err
			}
		}
		// Copied into the batch under the sender's lock (a frame's storage
		// is recycled once acked); written after it, never while holding
		// it.
		frames := l.out.emitDue(l.cfg.clock.Now(), writeBatchFrames, l.emit)
		if err := l.flushFrames(conn, 1); err != nil {
			return err
		}
		wrote = wrote || len(acks) > 0 || frames > 0
		if len(pongs) == 0 && len(acks) == 0 && frames == 0 {
			break
		}
	}
	if wrote {
		return l.flush(deadline)
	}
	return nil
}

package fakeaws

import (
	"encoding/base64"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/internal/wsframe"
)

func encodeStd(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// flushConn lets the MGS relay coalesce many small websocket messages into
// few syscalls, like a real gateway's buffered writer. Accepted connections
// are wrapped before the HTTP server sees them; buffering starts only after
// the websocket upgrade, so the HTTP exchange goes straight through.
type flushConn struct {
	net.Conn
	mu        sync.Mutex
	buf       []byte
	buffering bool
}

func (c *flushConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.buffering || (len(c.buf) == 0 && len(p) >= 16<<10) {
		// Nothing buffered to keep in order, and a write this large is a
		// batch already.
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= 256<<10 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *flushConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *flushConn) flushLocked() error {
	// Keep the buffer's storage: re-slicing it forward would give away its
	// capacity and reallocate on every batch.
	buf := c.buf
	c.buf = c.buf[:0]
	for len(buf) > 0 {
		k, err := c.Conn.Write(buf)
		if err != nil {
			return err
		}
		buf = buf[k:]
	}
	return nil
}

type flushListener struct{ net.Listener }

func (l flushListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &flushConn{Conn: c}, nil
}

// legQueueLimit bounds the bytes queued toward one leg. A full queue blocks
// the relay goroutine feeding it, so TCP back-pressure crosses the relay as
// it would through a real gateway.
const legQueueLimit = 4 << 20

// outMessage is one websocket message queued toward a leg.
type outMessage struct {
	kind int // websocket message type
	data []byte
}

// leg is one websocket endpoint of a session (the client's or the agent's).
// Its writer goroutine is the only one that writes to the connection.
type leg struct {
	kind string // "client" or "agent"
	ws   *websocket.Conn
	fc   *flushConn
	fw   *wsframe.Writer // the writer goroutine's

	mu       sync.Mutex
	cond     *sync.Cond
	q        []outMessage
	qBytes   int
	closing  bool
	closeMsg []byte // close frame to send last; nil: none
	abrupt   bool   // drop TCP without a close frame
	done     chan struct{}
	once     sync.Once
	opened   time.Time
}

func newLeg(kind string, ws *websocket.Conn) *leg {
	l := &leg{kind: kind, ws: ws, fw: wsframe.NewServer(), done: make(chan struct{}), opened: time.Now()}
	l.cond = sync.NewCond(&l.mu)
	if fc, ok := ws.NetConn().(*flushConn); ok {
		l.fc = fc
		fc.mu.Lock()
		fc.buffering = true
		fc.mu.Unlock()
	}
	return l
}

var errLegGone = errors.New("leg closed")

// send queues a binary message, blocking while the queue is over its limit.
func (l *leg) send(data []byte) error {
	return l.enqueue(websocket.BinaryMessage, data, true)
}

func (l *leg) enqueue(kind int, data []byte, block bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for block && l.qBytes > legQueueLimit && !l.closing {
		l.cond.Wait()
	}
	if l.closing {
		return errLegGone
	}
	l.q = append(l.q, outMessage{kind: kind, data: data})
	l.qBytes += len(data)
	l.cond.Broadcast()
	return nil
}

// close ends the leg after the queued messages, with a close frame (code,
// text) or, when abrupt, by dropping TCP without one.
func (l *leg) close(code int, text string, abrupt bool) {
	l.mu.Lock()
	if !l.closing {
		l.closing = true
		l.abrupt = abrupt
		if !abrupt && code != 0 {
			l.closeMsg = websocket.FormatCloseMessage(code, text)
		}
		l.cond.Broadcast()
	}
	l.mu.Unlock()
}

// writer drains the queue into the socket, flushing when it runs dry.
func (l *leg) writer() {
	defer l.finish()
	for {
		l.mu.Lock()
		for len(l.q) == 0 && !l.closing {
			l.cond.Wait()
		}
		q := l.q
		l.q = nil
		l.qBytes = 0
		closing, abrupt, closeMsg := l.closing, l.abrupt, l.closeMsg
		l.cond.Broadcast()
		l.mu.Unlock()
		if abrupt {
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		_ = l.ws.SetWriteDeadline(deadline)
		conn := l.ws.NetConn()
		_ = conn.SetWriteDeadline(deadline)
		for _, m := range q {
			var err error
			switch {
			case m.kind == websocket.BinaryMessage:
				// Binary messages go out in batches (internal/wsframe);
				// anything gorilla writes waits until the batch is out.
				l.fw.Binary(m.data)
				if l.fw.Pending() >= wsframe.FlushAt {
					err = l.fw.Flush(conn)
				}
			case m.kind == websocket.PongMessage || m.kind == websocket.PingMessage:
				if err = l.fw.Flush(conn); err == nil {
					err = l.ws.WriteControl(m.kind, m.data, deadline)
				}
			default:
				if err = l.fw.Flush(conn); err == nil {
					err = l.ws.WriteMessage(m.kind, m.data)
				}
			}
			if err != nil {
				return
			}
		}
		if err := l.fw.Flush(conn); err != nil {
			return
		}
		if closing && closeMsg != nil {
			_ = l.ws.WriteControl(websocket.CloseMessage, closeMsg, deadline)
		}
		if l.fc != nil {
			if err := l.fc.flush(); err != nil {
				return
			}
		}
		if closing {
			if closeMsg != nil {
				// Give the peer a moment to read the close frame before TCP
				// goes away.
				time.Sleep(20 * time.Millisecond)
			}
			return
		}
	}
}

func (l *leg) finish() {
	l.once.Do(func() {
		l.mu.Lock()
		l.closing = true
		l.q = nil
		l.cond.Broadcast()
		l.mu.Unlock()
		_ = l.ws.NetConn().Close()
		close(l.done)
	})
}

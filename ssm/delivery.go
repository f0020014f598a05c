package ssm

import (
	"io"
	"sync"
	"time"
)

// DefaultDeliveryBuffer is the size of the queue between the websocket reader
// and Session.Read.
const DefaultDeliveryBuffer = 1 << 20

// delivery is a bounded byte ring between the websocket reader (push) and
// Session.Read. A full ring makes push wait for a bounded time; if the
// consumer does not make room by then the message is refused, which the
// receiver turns into "not ready" (no ack, the agent resends).
type delivery struct {
	mu       sync.Mutex
	buf      []byte
	r, n     int // read offset and length
	closed   bool
	err      error         // returned by Read after the ring drains; io.EOF for a normal end
	notEmpty chan struct{} // signalled when data arrives or the ring closes
	notFull  chan struct{} // signalled when Read makes room
	done     chan struct{} // closed by close
	total    int64
}

func newDelivery(size int) *delivery {
	if size <= 0 {
		size = DefaultDeliveryBuffer
	}
	return &delivery{buf: make([]byte, size), notEmpty: make(chan struct{}, 1), notFull: make(chan struct{}, 1), done: make(chan struct{})}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// push copies p into the ring, waiting up to stall for room. It reports
// whether p was taken. p is never split: all of it or nothing.
func (d *delivery) push(p []byte, stall time.Duration) bool {
	if len(p) > len(d.buf) {
		return false
	}
	var timer *time.Timer
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			// Nobody reads any more; accept so the stream keeps moving.
			return true
		}
		if len(d.buf)-d.n >= len(p) {
			w := (d.r + d.n) % len(d.buf)
			c := copy(d.buf[w:], p)
			copy(d.buf, p[c:])
			d.n += len(p)
			d.total += int64(len(p))
			d.mu.Unlock()
			signal(d.notEmpty)
			return true
		}
		d.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(stall)
			defer timer.Stop()
		}
		select {
		case <-d.notFull:
		case <-d.done:
		case <-timer.C:
			return false
		}
	}
}

// Read implements io.Reader semantics for the session.
func (d *delivery) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		d.mu.Lock()
		if d.n > 0 {
			k := min(len(p), d.n)
			c := copy(p[:k], d.buf[d.r:min(d.r+k, len(d.buf))])
			copy(p[c:k], d.buf[:k-c])
			d.r = (d.r + k) % len(d.buf)
			d.n -= k
			d.mu.Unlock()
			signal(d.notFull)
			return k, nil
		}
		if d.closed {
			err := d.err
			d.mu.Unlock()
			return 0, err
		}
		d.mu.Unlock()
		select {
		case <-d.notEmpty:
		case <-d.done:
		}
	}
}

// WriteTo writes everything that arrives to w until the ring is closed and
// drained, straight from the ring's memory: one write per contiguous run
// that is buffered at that moment, so a fast stream costs few syscalls and
// no extra copy. It returns the ring's end error, except io.EOF (nil).
func (d *delivery) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		d.mu.Lock()
		if d.n == 0 {
			if d.closed {
				err := d.err
				d.mu.Unlock()
				if err == io.EOF {
					err = nil
				}
				return total, err
			}
			d.mu.Unlock()
			select {
			case <-d.notEmpty:
			case <-d.done:
			}
			continue
		}
		// The region [r, r+k) stays ours until r advances: push only writes
		// into free space.
		k := min(d.n, len(d.buf)-d.r)
		chunk := d.buf[d.r : d.r+k]
		d.mu.Unlock()
		n, err := w.Write(chunk)
		d.mu.Lock()
		d.r = (d.r + n) % len(d.buf)
		d.n -= n
		d.mu.Unlock()
		signal(d.notFull)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// close ends the ring: Read drains what is buffered, then returns err
// (io.EOF for a normal end).
func (d *delivery) close(err error) {
	if err == nil {
		err = io.EOF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		d.err = err
		close(d.done)
	}
}

func (d *delivery) buffered() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

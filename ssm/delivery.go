package ssm

import (
	"io"
	"sync"
	"sync/atomic"
)

// DefaultDeliveryBuffer is the size of the queue between the websocket reader
// and Session.Read.
const DefaultDeliveryBuffer = 1 << 20

// delivery is a bounded byte ring between the websocket reader (push) and
// Session.Read. push never blocks the reader: a full ring refuses the
// message, which the receiver holds (acked) or, when its buffer is full too,
// leaves unacked for the agent to resend. Read and WriteTo signal room, on
// which the session drains what the receiver holds.
type delivery struct {
	mu       sync.Mutex
	buf      []byte
	r, n     int // read offset and length
	closed   bool
	err      error         // returned by Read after the ring drains; io.EOF for a normal end
	notEmpty chan struct{} // signalled when data arrives or the ring closes
	done     chan struct{} // closed by close
	room     chan struct{} // signalled when a reader made room (for the drainer)
	wantRoom atomic.Bool   // a push was refused: signal room on the next read
	total    int64
}

func newDelivery(size int) *delivery {
	if size <= 0 {
		size = DefaultDeliveryBuffer
	}
	return &delivery{buf: make([]byte, size), notEmpty: make(chan struct{}, 1), done: make(chan struct{}),
		room: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// push copies p into the ring if it fits whole, and reports whether it did.
// It never blocks.
func (d *delivery) push(p []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		// Nobody reads any more; accept so the stream keeps moving.
		return true
	}
	if len(d.buf)-d.n < len(p) {
		d.wantRoom.Store(true)
		return false
	}
	w := (d.r + d.n) % len(d.buf)
	c := copy(d.buf[w:], p)
	copy(d.buf, p[c:])
	d.n += len(p)
	d.total += int64(len(p))
	signal(d.notEmpty)
	return true
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
			d.madeRoom()
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
		d.madeRoom()
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// madeRoom wakes the drainer, but only when a push was refused since the
// last wake: waking it for every read would cost a context switch per
// message at the agent's 1 KiB-per-millisecond pace.
func (d *delivery) madeRoom() {
	if d.wantRoom.Swap(false) {
		signal(d.room)
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

// received is how many bytes were ever pushed.
func (d *delivery) received() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total
}

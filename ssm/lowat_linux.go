//go:build linux

package ssm

import (
	"io"
	"net"
	"os"
	"syscall"
)

// lowWater keeps a trickling socket from waking the process once per
// message (docs/bench.md, "Read coalescing"). While the leg's reads are
// coalesced, the reader sleeps between reads, but the kernel still reports
// every arriving segment to Go's poller, whose thread then wakes for
// nothing: at the agent's pace that is a wakeup per millisecond. Raising
// SO_RCVLOWAT to the size of a large read silences those reports; the
// reader's next read after its sleep takes what came regardless (a
// non-blocking read returns whatever is queued). Before the reader ever
// waits for the socket (a read found nothing), the mark goes back to one
// byte and the read is tried again, so a lone message is never held back.
type lowWater struct {
	conn   net.Conn
	rc     syscall.RawConn
	mark   int
	raised bool
}

// newLowWater returns nil for a connection whose socket it cannot reach.
func newLowWater(c net.Conn, mark int) *lowWater {
	tc, ok := c.(*net.TCPConn)
	if !ok || mark <= 1 {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &lowWater{conn: c, rc: rc, mark: mark}
}

// raise sets the mark while the reads are coalesced; lowering is read's.
func (w *lowWater) raise() {
	if w == nil || w.raised {
		return
	}
	_ = w.rc.Control(func(fd uintptr) {
		if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, w.mark) == nil {
			w.raised = true
		}
	})
}

// read is net.Conn's Read through the raw socket, lowering the mark
// before it waits.
func (w *lowWater) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno error
	err := w.rc.Read(func(fd uintptr) bool {
		n, errno = readNoEINTR(int(fd), p)
		if errno == syscall.EAGAIN && w.raised {
			// Nothing queued and we are about to wait: a message below
			// the mark must wake us.
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, 1) == nil {
				w.raised = false
			}
			n, errno = readNoEINTR(int(fd), p)
		}
		return errno != syscall.EAGAIN
	})
	if err == nil && errno != nil {
		err = os.NewSyscallError("read", errno)
	}
	if n < 0 {
		n = 0
	}
	if err != nil {
		return n, &net.OpError{Op: "read", Net: "tcp", Source: w.conn.LocalAddr(), Addr: w.conn.RemoteAddr(), Err: err}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func readNoEINTR(fd int, p []byte) (int, error) {
	for {
		n, err := syscall.Read(fd, p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

//go:build linux

package ssm

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/coalesce"
	"github.com/ssmproxy/ssmproxy/internal/testkit"
)

// TestLowWaterNeverHoldsALoneMessage: while reads are coalesced the socket's
// low-water mark is raised (no wakeup per arriving segment); a read that
// finds nothing must lower it before waiting, or a lone small message would
// sit in the socket until 16 KiB more arrived.
func TestLowWaterNeverHoldsALoneMessage(t *testing.T) {
	c, peer := testkit.ConnPair(t, "tcp")

	bc := &batchConn{Conn: c}
	bc.setReads(coalesce.New(coalesce.Config{Interval: 2 * time.Millisecond, Streak: 2, Small: 16 << 10}, nil), 16<<10)
	if bc.lw == nil {
		t.Fatal("no low-water control on a TCP connection")
	}
	buf := make([]byte, 64<<10)
	// A trickle: small messages, each read as it comes.
	for i := 0; i < 5; i++ {
		if _, err := peer.Write([]byte("trickle")); err != nil {
			t.Fatal(err)
		}
		if _, err := bc.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	if !bc.lw.raised || lowWaterMark(t, c) != 16<<10 {
		t.Fatalf("mark not raised while trickling (raised %v, SO_RCVLOWAT %d)", bc.lw.raised, lowWaterMark(t, c))
	}
	// The stream pauses; the reader waits; then one lone message.
	got := make(chan string, 1)
	go func() {
		n, err := bc.Read(buf)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := peer.Write([]byte("lone")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "lone" {
			t.Fatalf("read %q, want the lone message", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a lone message below the low-water mark was held back")
	}
	// The peer closing is still io.EOF through the raw reads.
	peer.Close()
	if n, err := bc.Read(buf); n != 0 || err == nil || err.Error() != "EOF" {
		t.Fatalf("after the peer closed: %d, %v", n, err)
	}
}

func lowWaterMark(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v
}

package agent

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

type tcpTarget struct {
	ln    net.Listener
	conns chan net.Conn
}

// newTarget listens on 127.0.0.1:0 and hands accepted connections to the
// test, or echoes them when echo is set.
func newTarget(t testing.TB, echo bool) *tcpTarget {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tt := &tcpTarget{ln: ln, conns: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if echo {
				wg.Add(1)
				go func() { defer wg.Done(); io.Copy(c, c); c.Close() }()
			}
			tt.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-tt.conns:
				c.Close()
				continue
			default:
			}
			break
		}
		wg.Wait()
	})
	return tt
}

func (tt *tcpTarget) port() string {
	return fmt.Sprint(tt.ln.Addr().(*net.TCPAddr).Port)
}

func (tt *tcpTarget) accept(t testing.TB) net.Conn {
	t.Helper()
	select {
	case c := <-tt.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not connect to the target")
		return nil
	}
}

package proxy

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/xtaci/smux"
)

// ViaStream is one connection through a port session, as a Stream for
// Stdio: `connect --via` carries ssh's stdin/stdout to a host that has no
// agent, through an instance that has one (…ToRemoteHost). In mux mode it
// is one smux stream; with an agent too old for smux the session's raw
// bytes are the connection (docs/protocol.md 11.3).
type ViaStream struct {
	sess PortSession
	mux  *smux.Session
	st   *smux.Stream

	done     chan struct{}
	doneOnce sync.Once
	closed   sync.Once
}

// OpenViaStream opens the connection's stream on sess.
func OpenViaStream(sess PortSession) (*ViaStream, error) {
	v := &ViaStream{sess: sess, done: make(chan struct{})}
	if sess.Mux() {
		m, gate, err := newMuxClient(sess)
		if err != nil {
			return nil, err
		}
		st, err := openStream(m, gate)
		if err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("opening the smux stream: %w", err)
		}
		v.mux, v.st = m, st
	}
	go func() {
		<-sess.Done()
		v.end()
	}()
	return v, nil
}

func (v *ViaStream) end() { v.doneOnce.Do(func() { close(v.done) }) }

// Read returns the destination's bytes; io.EOF when it closed the
// connection (the agent's FIN, or its ConnectToPortError).
func (v *ViaStream) Read(p []byte) (int, error) {
	if v.st == nil {
		return v.sess.Read(p)
	}
	n, err := v.st.Read(p)
	if err != nil {
		v.end()
		if errors.Is(err, io.ErrClosedPipe) {
			err = io.EOF
		}
	}
	return n, err
}

func (v *ViaStream) Write(p []byte) (int, error) {
	if v.st == nil {
		return v.sess.Write(p)
	}
	return v.st.Write(p)
}

// Drain waits until the session acknowledged everything written.
func (v *ViaStream) Drain(timeout time.Duration) bool { return v.sess.Drain(timeout) }

// Close closes the stream, then ends the session (TerminateSession).
func (v *ViaStream) Close() error {
	v.closed.Do(func() {
		if v.st != nil {
			_ = v.st.Close()
			_ = v.mux.Close()
		}
		_ = v.sess.Close()
		v.end()
	})
	return nil
}

// Done is closed when the connection or the session ended.
func (v *ViaStream) Done() <-chan struct{} { return v.done }

// Err is why the session failed, nil for a normal end.
func (v *ViaStream) Err() error { return v.sess.Err() }

package agent

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/xtaci/smux"
)

// echoStream opens a stream, writes data while reading its echo, and
// returns the echo.
func echoStream(sess *smux.Session, data []byte) ([]byte, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	werr := make(chan error, 1)
	go func() {
		_, err := st.Write(data)
		werr <- err
	}()
	got := make([]byte, len(data))
	st.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.ReadFull(st, got); err != nil {
		return got, fmt.Errorf("reading the echo: %w", err)
	}
	return got, <-werr
}

// TestMuxConcurrentStreams: 32 smux streams at once, each moving 256 KiB to
// a loopback echo server and back through the fake agent's smux server; every
// stream gets exactly its own bytes back (docs/fakeaws.md 4.3). The agent is
// unpaced to keep the test short: pacing is the basic pump's, tested there.
func TestMuxConcurrentStreams(t *testing.T) {
	ms := startMux(t, Config{Properties: map[string]string{"portNumber": echoServer(t)}, Quirks: Quirks{Unpaced: true}}, "1.2.804.0", nil)
	const streams, size = 32, 256 << 10
	var wg sync.WaitGroup
	errs := make([]error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := randomBytes(size, uint64(i+1))
			got, err := echoStream(ms.sess, data)
			if err == nil && sha256.Sum256(got) != sha256.Sum256(data) {
				err = fmt.Errorf("echo differs (first difference at %d)", firstDiff(got, data))
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
	}
	st := ms.r.stats
	if n := st.MuxStreamsAccepted.Load(); n != streams {
		t.Errorf("MuxStreamsAccepted = %d, want %d", n, streams)
	}
	if n := st.BytesToTarget.Load(); n != streams*size {
		t.Errorf("BytesToTarget = %d, want %d", n, streams*size)
	}
	if v := ms.r.viol.all(); len(v) != 0 {
		t.Errorf("violations %v", v)
	}
	t.Logf("peak buffered inside the agent's smux: %d bytes", st.MuxBufferedPeak.Load())
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if !bytes.Equal(a, b) {
		return min(len(a), len(b))
	}
	return -1
}

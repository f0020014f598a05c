package ssm_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestHostilePeerFloodStaysBounded: a peer on a real websocket floods the
// client with out-of-order messages of the largest accepted size, oversize
// payloads and numbers far beyond the window. What the client holds stays
// within its configured bound (docs/protocol.md 8.6), measured as heap
// growth after garbage collection, and the stream still delivers once the
// gap is filled.
func TestHostilePeerFloodStaysBounded(t *testing.T) {
	const limit = 2 << 20
	p := newScriptedPeer(t)
	s, l := startWithPeer(t, p, func(c *ssm.Config) { c.MaxOutOfOrderBytes = limit })
	base := heapInUse()

	// The agent's next message is seq 2; the flood leaves that gap open.
	// Oversize payloads first, then the largest accepted size at the same
	// numbers and beyond, as many as the message bound allows.
	oversize := bytes.Repeat([]byte{'O'}, 200<<10)
	for seq := int64(3); seq < 3+256; seq++ {
		l.send(seq, wire.PayloadOutput, oversize)
	}
	full := bytes.Repeat([]byte{'F'}, ssm.MaxStreamPayload)
	for seq := int64(3); seq < 3+ssm.DefaultMaxOutOfOrder; seq++ {
		l.send(seq, wire.PayloadOutput, full)
	}
	for i := int64(1); i <= 64; i++ {
		l.send(1_000_000*i, wire.PayloadOutput, full)
	}
	// A duplicate of an old message is always re-acked: once its ack is
	// back, the client has processed everything sent before it.
	marker := l.send(1, wire.PayloadHandshakeComplete, []byte("{}"))
	if !l.waitAcked(marker, 30*time.Second) {
		t.Fatalf("the client never re-acked the marker: %+v", s.Stats().Receiver)
	}
	after := heapInUse()
	growth := int64(after) - int64(base)
	st := s.Stats().Receiver
	t.Logf("heap growth under the flood: %+.1f MiB (limit %d MiB); receiver %+v", float64(growth)/(1<<20), limit>>20, st)
	if bound := int64(limit + 4<<20); growth > bound {
		t.Fatalf("heap grew by %d bytes under the flood, bound %d", growth, bound)
	}
	if st.BufferedBytes > limit || st.Oversize == 0 || st.TooFarAhead == 0 || st.Full == 0 {
		t.Fatalf("receiver stats: %+v", st)
	}

	// The stream is intact: fill the gap, and what was held is delivered in
	// order, the held 16 KiB messages behind it.
	l.send(2, wire.PayloadOutput, []byte("gap"))
	got := make([]byte, 3+int(st.Buffered)*ssm.MaxStreamPayload)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(s, got); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("held data never delivered: %+v", s.Stats().Receiver)
	}
	if string(got[:3]) != "gap" || got[3] != 'F' || got[len(got)-1] != 'F' {
		t.Fatalf("delivered %q…%q", got[:4], got[len(got)-1:])
	}
}

// TestRepeatedHandshakeRequestNeverBlocksReader: a HandshakeRequest at a
// new sequence number after the handshake is acked and ignored
// (docs/protocol.md 7.1). It must never block the websocket reader: here
// the client's send window is full (the peer acks none of its data), so
// answering it the way the first one was answered would wait for window
// space that only the reader could bring.
func TestRepeatedHandshakeRequestNeverBlocksReader(t *testing.T) {
	p := newScriptedPeer(t)
	// The peer never acks the data: Close need not wait for it long.
	s, l := startWithPeer(t, p, func(c *ssm.Config) { c.DrainTimeout = 100 * time.Millisecond })
	go func() { _, _ = s.Write(make([]byte, 256<<10)) }()
	// Wait until the window is full: the initial window is 64 messages.
	for i := 0; i < ssm.DefaultInitialWindow; i++ {
		l.input()
	}
	again := l.send(2, wire.PayloadHandshakeRequest, handshakeRequest(t))
	l.send(3, wire.PayloadOutput, []byte("after"))
	got := make([]byte, 5)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(s, got); done <- err }()
	select {
	case err := <-done:
		if err != nil || string(got) != "after" {
			t.Fatalf("read %q, %v", got, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("data after a second HandshakeRequest never arrived: %+v", s.Stats().Receiver)
	}
	if !l.waitAcked(again, 5*time.Second) {
		t.Fatal("the second HandshakeRequest was not acked")
	}
	if err := s.Err(); err != nil {
		t.Fatalf("session failed: %v", err)
	}
}

// TestStartRefusesForeignStreamURL: a StartSession answer whose StreamUrl
// points the token at another host is refused with a StreamURLError,
// nothing is dialled, and the session is terminated (docs/protocol.md 3.1).
// The same holds for a ResumeSession answer.
func TestStartRefusesForeignStreamURL(t *testing.T) {
	p := newScriptedPeer(t)
	p.streamURL = "wss://ssmmessages.us-east-1.amazonaws.com.evil.example/v1/data-channel/" + peerSessionID
	_, err := ssm.Start(context.Background(), ssm.Config{Target: "i-0123456789abcdef0", AWS: p.awsConfig(),
		Parameters: map[string][]string{"portNumber": {"22"}}})
	var se *ssm.StreamURLError
	if !errors.As(err, &se) || se.SessionID != peerSessionID {
		t.Fatalf("Start: %v, want a StreamURLError for the session", err)
	}
	if n := p.terminates.Load(); n != 1 {
		t.Fatalf("TerminateSession calls: %d, want 1", n)
	}
	select {
	case <-p.legs:
		t.Fatal("the foreign StreamUrl was dialled")
	default:
	}

	// On resume: the first leg is ours, the resumed one would be foreign.
	p = newScriptedPeer(t)
	p.resumeURL = "wss://evil.example/v1/data-channel/" + peerSessionID
	s, l := startWithPeer(t, p, nil)
	l.ws.Close()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end on a foreign resume StreamUrl")
	}
	if !errors.As(s.Err(), &se) {
		t.Fatalf("session error %v, want a StreamURLError", s.Err())
	}
	s.Close()
	if n := p.terminates.Load(); n != 1 {
		t.Fatalf("TerminateSession calls after the refused resume: %d, want 1", n)
	}
}

package ssm_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// publicationFrame is a pause_publication or start_publication frame as MGS
// sends it, for injection into the client's leg.
func publicationFrame(t *testing.T, kind string) []byte {
	t.Helper()
	b, err := wire.Encode(&wire.Frame{MessageType: kind, SchemaVersion: wire.SchemaVersion,
		CreatedDate: uint64(time.Now().UnixMilli()), MessageID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Pause is a hint, never a gate (docs/protocol.md 8.8): MGS pauses the
// client and never sends start_publication. An idle session's next
// keystroke (nothing unacked) still reaches the agent within one probe
// interval, and its echo comes back.
func TestPauseWithoutStartPublication(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := mustStart(t, ts, port, nil)
	echoTransfer(t, s, 4<<10, nil)
	if !fakeaws.WaitFor(5*time.Second, func() bool { return s.Stats().Sender.Unacked == 0 }) {
		t.Fatalf("the warm-up echo stayed unacked: %+v", s.Stats().Sender)
	}

	if err := ts.Inject(s.ID(), "client", publicationFrame(t, wire.TypePausePublication), false); err != nil {
		t.Fatal(err)
	}
	if !fakeaws.WaitFor(5*time.Second, func() bool { return s.Stats().Sender.Paused }) {
		t.Fatal("the injected pause_publication did not pause the sender")
	}

	key := []byte("keystroke\n")
	sent := time.Now()
	if _, err := s.Write(key); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(key))
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(s, got); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * ssm.PausedProbeInterval):
		t.Fatalf("the keystroke waited more than two probe intervals for a start_publication that never came: %+v", s.Stats().Sender)
	}
	t.Logf("keystroke echoed %v after the write, under a pause with no start_publication (probe interval %v)",
		time.Since(sent).Round(time.Millisecond), ssm.PausedProbeInterval)
	if !bytes.Equal(got, key) {
		t.Fatalf("echo %q, want %q", got, key)
	}
	if st := s.Stats().Sender; st.Probes != 1 || st.Paused {
		t.Fatalf("probes %d paused %v: want the keystroke sent as the one probe, and the echo to clear the pause", st.Probes, st.Paused)
	}
}

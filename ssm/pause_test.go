package ssm_test

import (
	"bytes"
	"errors"
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

// The agent goes silent (the real agent, out of reconnect attempts, just
// stops) while MGS keeps the client's leg up and answers its pings: with
// data unacked, the session ends with NoProgressError after the
// no-progress timeout, and terminates the session (docs/protocol.md 9.4).
func TestNoProgressWhenAgentSilent(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	// Deliberate: the client gives up on data the agent never acked.
	ts.AllowViolations["terminate-with-unacked-data"] = true
	port := fakeaws.Listen(t, fakeaws.Echo)
	const timeout = 2 * time.Second
	s := mustStart(t, ts, port, func(c *ssm.Config) {
		c.PingInterval = 200 * time.Millisecond
		c.NoProgressTimeout = timeout
	})
	echoTransfer(t, s, 4<<10, nil)
	// Nothing from the agent reaches the client any more.
	ts.AddFaults(t, &fakeaws.FaultRule{Direction: "agent_to_client", Action: fakeaws.ActionDrop})
	written := time.Now()
	if _, err := s.Write([]byte("anyone there?")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * timeout):
		t.Fatalf("the session did not notice the silent agent: %+v", s.Stats())
	}
	took := time.Since(written)
	var np *ssm.NoProgressError
	if err := s.Err(); !errors.As(err, &np) || np.Unacked != 1 || np.Silence < timeout {
		t.Fatalf("session ended with %v, want NoProgressError with 1 unacked message after %v", err, timeout)
	}
	t.Logf("ended %v after the write: %v", took.Round(time.Millisecond), s.Err())
	if took < timeout {
		t.Fatalf("ended after %v, before the %v timeout", took, timeout)
	}
	if st := s.Stats(); st.Reconnects != 0 {
		t.Fatalf("%d reconnects: the leg must have stayed up (MGS answers pings)", st.Reconnects)
	}
	// The fake counts the call once it has answered it, which may be after
	// the channel_closed it sent ended the session.
	fakeaws.WaitFor(5*time.Second, func() bool { return ts.Stats().API["TerminateSession"]["200"] > 0 })
	if n := ts.Stats().API["TerminateSession"]["200"]; n != 1 {
		t.Fatalf("TerminateSession calls %d, want 1 (API %v)", n, ts.Stats().API["TerminateSession"])
	}
}

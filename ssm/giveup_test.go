package ssm_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/ssm"
)

// TestAgentGivesUp: the agent's leg is closed and every reconnect of it
// refused, so the agent runs out of attempts (5, about 2.5 s). Under the
// silent variant (the real agent just stops, MGS says nothing: the default)
// the client must notice on its own, with unacked data and no agent traffic,
// and end with NoProgressError (exit 7); under channel-closed it ends with
// the service's close (docs/fakeaws.md 4.1, docs/protocol.md 9.4).
func TestAgentGivesUp(t *testing.T) {
	for _, v := range []fakeaws.AgentGiveUp{fakeaws.GiveUpSilent, fakeaws.GiveUpChannelClosed} {
		t.Run(string(v), func(t *testing.T) {
			ts := fakeaws.StartTest(t, fakeaws.Options{AgentGiveUp: v})
			// Deliberate: the client gives up on data the agent never acked.
			ts.AllowViolations["terminate-with-unacked-data"] = true
			port := fakeaws.Listen(t, fakeaws.Echo)
			const timeout = 4 * time.Second
			s := mustStart(t, ts, port, func(c *ssm.Config) {
				c.PingInterval = 200 * time.Millisecond
				c.NoProgressTimeout = timeout
			})
			echoTransfer(t, s, 4<<10, nil)
			if err := ts.RefuseAgentLegs(s.ID(), true); err != nil {
				t.Fatal(err)
			}
			if err := ts.CloseLeg(s.ID(), "agent", 1000, "Bye"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write([]byte("anyone there?")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-s.Done():
			case <-time.After(30 * time.Second):
				t.Fatalf("the session did not end: %+v", s.Stats())
			}
			var np *ssm.NoProgressError
			gotNP := errors.As(s.Err(), &np)
			t.Logf("%s: session ended with %v", v, s.Err())
			if v == fakeaws.GiveUpSilent && !gotNP {
				t.Fatalf("silent agent: ended with %v, want NoProgressError", s.Err())
			}
			if v == fakeaws.GiveUpChannelClosed && gotNP {
				t.Fatalf("channel-closed: ended with %v, want the service's close", s.Err())
			}
		})
	}
}

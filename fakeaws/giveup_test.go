package fakeaws

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Once the agent runs out of reconnect attempts (its CreateDataChannel is
// refused), the client leg hears nothing under -agent-giveup silent and
// one channel_closed under channel-closed. The zero value is silent.
func TestAgentGiveUpOnTheWire(t *testing.T) {
	for _, giveUp := range []AgentGiveUp{"", GiveUpChannelClosed} {
		t.Run(defaultString(string(giveUp), "zero-value"), func(t *testing.T) {
			ts := StartTest(t, Options{AgentGiveUp: giveUp})
			// This client never acks: the HandshakeRequest stays unacked
			// when the session ends.
			ts.AllowViolations["missing-ack"] = true
			c := startRaw(t, ts)
			ss := ts.session(c.id)
			if err := ts.RefuseAgentLegs(c.id, true); err != nil {
				t.Fatal(err)
			}
			if err := ts.CloseLeg(c.id, "agent", websocket.CloseNormalClosure, "Bye"); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ss.agentDone: // 5 attempts, backoff up to 5 s
			case <-time.After(20 * time.Second):
				t.Fatal("the agent never gave up")
			}
			time.Sleep(500 * time.Millisecond)
			closed := len(c.ofType(0, wire.TypeChannelClosed))
			ss.mu.Lock()
			state := ss.state
			ss.mu.Unlock()
			t.Logf("channel_closed frames %d, session %s", closed, state)
			if giveUp == GiveUpChannelClosed {
				if closed != 1 || state < stateTerminating {
					t.Fatalf("channel-closed: client received %d channel_closed, session %s", closed, state)
				}
				return
			}
			if closed != 0 || state >= stateTerminating {
				t.Fatalf("silent: client received %d channel_closed, session %s", closed, state)
			}
			// The client's leg still answers: MGS kept it open.
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
				t.Fatalf("silent: the client leg is gone: %v", err)
			}
		})
	}
}

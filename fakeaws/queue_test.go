package fakeaws

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// A frame the client sends while the agent's leg is away is dropped by
// default and, with -queue-while-absent, delivered when the agent returns.
// The frame is the client's ack of the HandshakeRequest, the only ack this
// client ever sends, so the agent's acks_in tells whether it arrived.
func TestQueueWhileAbsentOnTheWire(t *testing.T) {
	for _, queue := range []bool{false, true} {
		t.Run(map[bool]string{false: "dropped", true: "queued"}[queue], func(t *testing.T) {
			ts := StartTest(t, Options{QueueWhileAbsent: queue})
			c := startRaw(t, ts)
			req := c.ofType(0, wire.TypeOutputStreamData)[0]
			if err := ts.RefuseAgentLegs(c.id, true); err != nil {
				t.Fatal(err)
			}
			if err := ts.CloseLeg(c.id, "agent", websocket.CloseNormalClosure, "Bye"); err != nil {
				t.Fatal(err)
			}
			ack, err := wire.Encode(&wire.Frame{MessageType: wire.TypeAcknowledge, SchemaVersion: 1,
				CreatedDate: uint64(time.Now().UnixMilli()), Flags: wire.FlagsAck, MessageID: uuid.New(),
				Payload: wire.AppendAcknowledge(nil, wire.TypeOutputStreamData, req.MessageID, 0)})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.ws.WriteMessage(websocket.BinaryMessage, ack); err != nil {
				t.Fatal(err)
			}
			if !WaitFor(2*time.Second, func() bool { return ts.Stats().DroppedAbsent > 0 || ts.session(c.id).heldCount() > 0 }) {
				t.Fatal("MGS neither dropped nor held the frame")
			}
			if err := ts.RefuseAgentLegs(c.id, false); err != nil {
				t.Fatal(err)
			}
			if !WaitFor(10*time.Second, c.agentAttached) {
				t.Fatalf("the agent never came back: %v", ts.AgentStats(c.id))
			}
			time.Sleep(300 * time.Millisecond)
			acks, dropped := ts.AgentStats(c.id)["acks_in"], ts.Stats().DroppedAbsent
			t.Logf("agent acks_in %d, dropped_peer_absent %d", acks, dropped)
			if queue && (acks != 1 || dropped != 0) {
				t.Fatalf("queued: the agent received %d acks, MGS dropped %d frames; want 1 and 0", acks, dropped)
			}
			if !queue && (acks != 0 || dropped == 0) {
				t.Fatalf("dropped: the agent received %d acks, MGS dropped %d frames; want 0 and at least 1", acks, dropped)
			}
		})
	}
}

// heldCount is the number of frames held for absent legs.
func (ss *session) heldCount() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.held) + len(ss.heldAgent)
}

package fakeaws

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestClosingHandshakeIsNotMissingTerminate: a client that answers MGS's
// own close 1000 with a close frame (gorilla does it by default, and so
// does the official plugin) completes the closing handshake; it has not
// ended its session, so no missing-terminate. A client that closes first
// still draws the warning (docs/fakeaws.md section 7, section 10).
func TestClosingHandshakeIsNotMissingTerminate(t *testing.T) {
	has := func(ts *TestServer) bool {
		for _, v := range ts.Violations("warning") {
			if v.Code == "missing-terminate" {
				return true
			}
		}
		return false
	}
	closedOnce := func(ts *TestServer) bool {
		st := ts.Stats()
		return st.Websocket["client"] != nil && st.Websocket["client"].Closes == 1
	}
	t.Run("server-closes", func(t *testing.T) {
		ts := StartTest(t, Options{})
		c := startRaw(t, ts)
		if err := ts.CloseLeg(c.id, "client", websocket.CloseNormalClosure, "Bye"); err != nil {
			t.Fatal(err)
		}
		if !WaitFor(5*time.Second, func() bool { return closedOnce(ts) }) {
			t.Fatal("the client leg did not close")
		}
		if has(ts) {
			t.Fatal("the client's answer to MGS's close was taken for a missing TerminateSession")
		}
	})
	t.Run("client-closes", func(t *testing.T) {
		ts := StartTest(t, Options{})
		c := startRaw(t, ts)
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if !WaitFor(5*time.Second, func() bool { return closedOnce(ts) && has(ts) }) {
			t.Fatal("a client closing its leg normally without TerminateSession drew no missing-terminate")
		}
	})
}

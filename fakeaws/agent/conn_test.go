package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

func TestReconnectAfterBye(t *testing.T) {
	s, c := established(t, true, Config{})
	p := newDataPeer(t, s.m, s.l)
	p.write([]byte("before "))
	if !p.waitFor(5*time.Second, func() bool { return string(p.data) == "before " }) {
		t.Fatalf("received %q", p.received())
	}
	_ = c
	old := s.l
	old.bye()
	// Data written while the agent leg is down is retransmitted afterwards.
	p.write([]byte("during "))
	if !p.waitFor(10*time.Second, func() bool { return p.l != old }) {
		t.Fatal("agent did not reconnect")
	}
	if n := s.m.creates.Load(); n != 2 {
		t.Fatalf("CreateDataChannel called %d times", n)
	}
	nl := p.leg()
	if nl.open.TokenValue != "agent-token-2" || nl.open.RequestID == old.open.RequestID || nl.open.ClientID != old.open.ClientID {
		t.Fatalf("reconnect opening %+v after %+v", nl.open, old.open)
	}
	p.write([]byte("after"))
	if !p.waitFor(15*time.Second, func() bool { return string(p.data) == "before during after" }) {
		t.Fatalf("received %q", p.received())
	}
	if n := s.r.stats.Reconnects.Load(); n != 1 {
		t.Fatalf("Reconnects = %d", n)
	}
	// Sequence numbers continued: the reassembly would have stalled on a reset.
	p.mu.Lock()
	if p.expected < 4 {
		t.Errorf("next expected output seq %d", p.expected)
	}
	p.mu.Unlock()
	if v := s.r.viol.all(); len(v) != 0 {
		t.Fatalf("violations %v", v)
	}
}

func TestSessionTerminatedIsFinal(t *testing.T) {
	s, _ := established(t, false, Config{})
	s.m.terminated.Store(true)
	s.l.bye()
	err := s.r.wait(t, 10*time.Second)
	if !errors.Is(err, ErrSessionTerminated) {
		t.Fatalf("Run = %v", err)
	}
	if n := s.m.creates.Load(); n != 2 {
		t.Fatalf("CreateDataChannel called %d times; the terminated answer is final", n)
	}
}

func TestReconnectBudgetExhausted(t *testing.T) {
	s, _ := established(t, false, Config{})
	s.m.srv.Listener.Close() // new dials are refused
	s.l.ws.Close()           // and the current leg drops (1006)
	err := s.r.wait(t, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "5 attempts failed") {
		t.Fatalf("Run = %v", err)
	}
	if n := s.m.creates.Load(); n != 6 {
		t.Fatalf("CreateDataChannel called %d times, want 1 + 5", n)
	}
}

func TestPongDeadlineReconnects(t *testing.T) {
	q := Quirks{PingInterval: 100 * time.Millisecond, PongWait: 500 * time.Millisecond}
	t.Run("pongs", func(t *testing.T) {
		s := start(t, true, Config{Quirks: q})
		time.Sleep(time.Second)
		if n := s.m.creates.Load(); n != 1 {
			t.Fatalf("reconnected %d times although MGS answers pings", n-1)
		}
	})
	t.Run("noPongs", func(t *testing.T) {
		m := newMGS(t)
		m.noPong.Store(true)
		tgt := newTarget(t, true)
		startAgent(t, m, Config{Quirks: q, Properties: map[string]string{"portNumber": tgt.port()}})
		first := m.nextLeg(t)
		second := m.nextLeg(t) // reconnected after PingInterval+PongWait
		if second.open.TokenValue == first.open.TokenValue {
			t.Fatal("token reused")
		}
	})
}

func TestContextCancelReturnsPromptly(t *testing.T) {
	m := newMGS(t)
	tgt := newTarget(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{SessionID: testSessionID, InstanceID: testInstanceID, DefaultHost: "127.0.0.1",
			Properties: map[string]string{"portNumber": tgt.port()}, CreateDataChannel: m.createDataChannel,
			Quirks: Quirks{Unpaced: true}})
	}()
	l := m.nextLeg(t)
	doHandshake(t, l)
	p := newDataPeer(t, m, l)
	go p.write(randomBytes(4<<20, 1)) // keep data flowing both ways
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("Run took %v to return", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	p.close()
	checkNoLeaks(t)
}

func TestAckedHandshakeRequestIsNotResent(t *testing.T) {
	s := start(t, true, Config{})
	req := recv(t, s.l, 5*time.Second)
	s.l.send(ackFrame(req))
	for {
		select {
		case f := <-s.l.frames:
			if f.MessageType == wire.TypeOutputStreamData && f.MessageID == req.MessageID {
				continue // a resend that crossed the ack
			}
			t.Fatalf("unexpected %s", f.MessageType)
		case <-time.After(700 * time.Millisecond):
			return
		}
	}
}

// The protocol timers follow Config.Clock: the default 15 s handshake timeout
// passes in no time on a fake clock.
func TestFakeClockDrivesHandshakeTimeout(t *testing.T) {
	fake := clock.NewFake(time.Now())
	m := newMGS(t)
	r := startAgent(t, m, Config{Clock: fake, Quirks: Quirks{NoHandshake: true}, Properties: map[string]string{"portNumber": "22"}})
	m.nextLeg(t)
	// resend tick, ping, read deadline, handshake timeout
	if !fake.WaitForTimers(4, 5*time.Second) {
		t.Fatalf("only %d timers armed", fake.Waiters())
	}
	fake.Advance(14 * time.Second)
	select {
	case err := <-r.done:
		t.Fatalf("Run returned before 15 s: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	fake.Advance(time.Second)
	if err := r.wait(t, 5*time.Second); err != errHandshakeTimeout {
		t.Fatalf("Run = %v", err)
	}
}

// TestDataAfterPingKeepsLeg: a keepalive ping leaves its write deadline
// (controlWait) on the socket; data the writer sends later must not
// inherit it. When the batches were first written past gorilla, data sent
// more than controlWait after a ping failed and the leg reconnected, about
// a minute into every busy session with the default timers.
func TestDataAfterPingKeepsLeg(t *testing.T) {
	old := controlWait
	controlWait = 100 * time.Millisecond
	t.Cleanup(func() { controlWait = old })
	s, _ := established(t, true, Config{Quirks: Quirks{PingInterval: 300 * time.Millisecond, PongWait: 5 * time.Second}})
	p := newDataPeer(t, s.m, s.l)
	want := ""
	for i := 0; i < 3; i++ {
		// Each write comes 200 ms or more after a ping's deadline passed.
		time.Sleep(450 * time.Millisecond)
		chunk := strings.Repeat(string(rune('a'+i)), 10)
		want += chunk
		p.write([]byte(chunk))
		if !p.waitFor(5*time.Second, func() bool { return string(p.data) == want }) {
			t.Fatalf("round %d: received %q", i, p.received())
		}
	}
	if n := s.m.creates.Load(); n != 1 {
		t.Fatalf("CreateDataChannel called %d times: the leg was lost", n)
	}
}

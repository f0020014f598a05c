package ssm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

func newTestSender(t *testing.T, cfg StreamConfig) (*sender, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	return newSender(cfg, clk, wire.TypeInputStreamData), clk
}

func seqOf(t *testing.T, b []byte) int64 {
	t.Helper()
	f, err := wire.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return f.SequenceNumber
}

func seqs(t *testing.T, frames [][]byte) []int64 {
	var out []int64
	for _, f := range frames {
		out = append(out, seqOf(t, f))
	}
	return out
}

func TestSenderSequencesAndSelectiveAcks(t *testing.T) {
	s, clk := newTestSender(t, StreamConfig{InitialWindow: 8})
	for i := 0; i < 5; i++ {
		if err := s.enqueue(context.Background(), wire.PayloadOutput, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := seqs(t, s.due(clk.Now(), 100))
	if len(got) != 5 || got[0] != 0 || got[4] != 4 {
		t.Fatalf("first transmission %v", got)
	}
	if again := s.due(clk.Now(), 100); len(again) != 0 {
		t.Fatalf("resent before the RTO: %v", seqs(t, again))
	}
	// Selective: acking 3 leaves 0,1,2,4 outstanding.
	if !s.ack(3) || s.ack(3) || s.ack(99) {
		t.Fatal("ack bookkeeping wrong")
	}
	if n, _ := s.pending(); n != 4 {
		t.Fatalf("pending %d", n)
	}
	// After the RTO every expired message is resent, oldest first, not
	// just the head.
	clk.Advance(initialRTO)
	got = seqs(t, s.due(clk.Now(), 100))
	if len(got) != 4 || got[0] != 0 || got[1] != 1 || got[2] != 2 || got[3] != 4 {
		t.Fatalf("retransmitted %v, want [0 1 2 4]", got)
	}
	// Karn: the resent messages back off their own timers (2 × RTO).
	clk.Advance(initialRTO)
	if again := s.due(clk.Now(), 100); len(again) != 0 {
		t.Fatalf("backed-off messages resent after one RTO: %v", seqs(t, again))
	}
	clk.Advance(initialRTO)
	if got := s.due(clk.Now(), 100); len(got) != 4 {
		t.Fatalf("after the backoff: %v", seqs(t, got))
	}
}

func TestSenderRetransmissionsAreByteIdentical(t *testing.T) {
	s, clk := newTestSender(t, StreamConfig{})
	_ = s.enqueue(context.Background(), wire.PayloadOutput, []byte("hello"))
	first := append([]byte(nil), s.due(clk.Now(), 10)[0]...)
	clk.Advance(time.Second)
	again := s.due(clk.Now(), 10)
	if len(again) != 1 || string(again[0]) != string(first) {
		t.Fatal("retransmission differs from the original bytes")
	}
}

func TestSenderWindowBlocksAndNeverEvicts(t *testing.T) {
	s, clk := newTestSender(t, StreamConfig{InitialWindow: 4, MinWindow: 4, MaxWindow: 4})
	for i := 0; i < 4; i++ {
		_ = s.enqueue(context.Background(), wire.PayloadOutput, []byte{1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.enqueue(ctx, wire.PayloadOutput, []byte{1}); err != context.DeadlineExceeded {
		t.Fatalf("a full window must block the writer, got %v", err)
	}
	s.due(clk.Now(), 10)
	done := make(chan error, 1)
	go func() { done <- s.enqueue(context.Background(), wire.PayloadOutput, []byte{2}) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("enqueue did not wait for an ack")
	default:
	}
	s.ack(2) // any ack opens the window by one
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, _ := s.pending(); n != 4 {
		t.Fatalf("pending %d, want 4 (nothing evicted)", n)
	}
	if err := s.enqueue(context.Background(), wire.PayloadOutput, nil); err == nil {
		t.Fatal("an empty payload must be refused")
	}
}

// TestSenderSeal: once sealed (the session is closing), Output is refused,
// also for a writer already waiting for window room, while the
// TerminateSession flag still goes out after everything sent before.
func TestSenderSeal(t *testing.T) {
	s, clk := newTestSender(t, StreamConfig{InitialWindow: 2, MinWindow: 2, MaxWindow: 2})
	for i := 0; i < 2; i++ {
		if err := s.enqueue(context.Background(), wire.PayloadOutput, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	waiting := make(chan error, 1)
	go func() { waiting <- s.enqueue(context.Background(), wire.PayloadOutput, []byte{2}) }()
	s.seal()
	select {
	case err := <-waiting:
		if !errors.Is(err, errSealed) {
			t.Fatalf("the waiting writer got %v, want errSealed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting writer was not released by seal")
	}
	if err := s.enqueue(context.Background(), wire.PayloadOutput, []byte{3}); !errors.Is(err, errSealed) {
		t.Fatalf("Output after seal: %v, want errSealed", err)
	}
	s.due(clk.Now(), 10)
	s.ack(0)
	s.ack(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.enqueue(ctx, wire.PayloadFlag, wire.EncodeFlag(wire.FlagTerminateSession)); err != nil {
		t.Fatalf("the flag after seal: %v", err)
	}
	if n, _ := s.pending(); n != 1 {
		t.Fatalf("pending %d, want only the flag", n)
	}
}

func TestSenderByteWindow(t *testing.T) {
	s, _ := newTestSender(t, StreamConfig{MaxWindowBytes: 2048})
	big := make([]byte, 1024)
	_ = s.enqueue(context.Background(), wire.PayloadOutput, big)
	_ = s.enqueue(context.Background(), wire.PayloadOutput, big)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := s.enqueue(ctx, wire.PayloadOutput, []byte{1}); err != context.DeadlineExceeded {
		t.Fatalf("byte window not enforced: %v", err)
	}
}

func TestRTOEstimator(t *testing.T) {
	s, clk := newTestSender(t, StreamConfig{MinRTO: time.Millisecond, MaxRTO: time.Second})
	// Steady 50 ms samples converge SRTT toward 50 ms.
	for i := 0; i < 50; i++ {
		_ = s.enqueue(context.Background(), wire.PayloadOutput, []byte{1})
		s.due(clk.Now(), 10)
		clk.Advance(50 * time.Millisecond)
		s.ack(int64(i))
	}
	st := s.stats()
	if st.SRTT < 45*time.Millisecond || st.SRTT > 55*time.Millisecond {
		t.Fatalf("SRTT %v", st.SRTT)
	}
	if st.RTO < st.SRTT+clockGranularity || st.RTO > 80*time.Millisecond {
		t.Fatalf("RTO %v for SRTT %v", st.RTO, st.SRTT)
	}
	// Karn: a retransmitted message gives no sample, however late its ack.
	_ = s.enqueue(context.Background(), wire.PayloadOutput, []byte{1})
	s.due(clk.Now(), 10)
	clk.Advance(time.Second)
	s.due(clk.Now(), 10) // retransmission
	clk.Advance(900 * time.Millisecond)
	s.ack(50)
	if after := s.stats(); after.SRTT != st.SRTT {
		t.Fatalf("a retransmitted message changed SRTT: %v -> %v", st.SRTT, after.SRTT)
	}
}

func TestWindowShrinksOnTimeoutAndGrows(t *testing.T) {
	s, clk := newTestSender(t, StreamConfig{InitialWindow: 64, MinWindow: 16, MaxWindow: 256})
	for i := 0; i < 64; i++ {
		_ = s.enqueue(context.Background(), wire.PayloadOutput, []byte{1})
	}
	s.due(clk.Now(), 100)
	clk.Advance(time.Second)
	s.due(clk.Now(), 100)
	if w := s.stats().Window; w != 32 {
		t.Fatalf("window after a timeout %d, want 32", w)
	}
	for i := int64(0); i < 64; i++ {
		s.ack(i)
	}
	if w := s.stats().Window; w <= 32 {
		t.Fatalf("window did not grow on acks: %d", w)
	}
}

// Pause is a hint, never a gate (docs/protocol.md 8.8): while paused the
// sender sends one probe per interval, the oldest unacked message if there
// is one, otherwise the next new message, and drops nothing.
func TestPauseIsAHint(t *testing.T) {
	s, clk := newTestSender(t, StreamConfig{})
	ctx := context.Background()

	// Paused with nothing in flight: a new message (a keystroke) waits at
	// most one probe interval, without any start_publication.
	s.setPaused(true)
	_ = s.enqueue(ctx, wire.PayloadOutput, []byte{0})
	if got := s.due(clk.Now(), 10); len(got) != 0 {
		t.Fatalf("sent %v at once while paused", seqs(t, got))
	}
	if next := s.nextDeadline(); !next.Equal(clk.Now().Add(pausedProbeInterval)) {
		t.Fatalf("next deadline %v, want one probe interval from the pause", next.Sub(clk.Now()))
	}
	clk.Advance(pausedProbeInterval - time.Millisecond)
	if got := s.due(clk.Now(), 10); len(got) != 0 {
		t.Fatalf("probed %v before the interval", seqs(t, got))
	}
	clk.Advance(time.Millisecond)
	if got := seqs(t, s.due(clk.Now(), 10)); len(got) != 1 || got[0] != 0 {
		t.Fatalf("probe %v, want the new message [0]", got)
	}

	// With a message in flight the probe is the oldest unacked one, one
	// frame per interval however much is queued.
	for i := 1; i <= 3; i++ {
		_ = s.enqueue(ctx, wire.PayloadOutput, []byte{byte(i)})
	}
	clk.Advance(pausedProbeInterval / 3)
	if got := s.due(clk.Now(), 10); len(got) != 0 {
		t.Fatalf("sent %v within the interval", seqs(t, got))
	}
	clk.Advance(pausedProbeInterval)
	if got := seqs(t, s.due(clk.Now(), 10)); len(got) != 1 || got[0] != 0 {
		t.Fatalf("probe %v, want the oldest unacked [0]", got)
	}
	s.ack(0)
	clk.Advance(pausedProbeInterval)
	if got := seqs(t, s.due(clk.Now(), 10)); len(got) != 1 || got[0] != 1 {
		t.Fatalf("probe %v after the ack, want the next new message [1]", got)
	}
	if st := s.stats(); st.Probes != 3 || st.Unacked != 3 {
		t.Fatalf("probes %d unacked %d, want 3 and 3 (nothing dropped)", st.Probes, st.Unacked)
	}

	// The pause clears: everything left goes out.
	s.setPaused(false)
	if got := seqs(t, s.due(clk.Now(), 10)); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Fatalf("after unpause %v, want the queued [2 3]", got)
	}
	s.retransmitAll()
	if got := seqs(t, s.due(clk.Now(), 10)); len(got) != 3 {
		t.Fatalf("retransmitAll: %v", got)
	}
}

func TestReceiverRules(t *testing.T) {
	var delivered []byte
	ready := true
	r := newReceiver(receiverLimits{messages: 3}, func(pt wire.PayloadType, p []byte) bool {
		if !ready {
			return false
		}
		delivered = append(delivered, p...)
		return true
	})
	steps := []struct {
		seq  int64
		want verdict
	}{
		{0, verdictAck},       // in order
		{2, verdictAck},       // ahead: buffered and acked at once
		{2, verdictDuplicate}, // repeat of a buffered one: re-acked, stored once
		{3, verdictAck},
		{5, verdictAck},       // buffer now full (3)
		{6, verdictDrop},      // buffer full: no ack
		{0, verdictDuplicate}, // old duplicate: re-acked
		{1, verdictAck},       // fills the gap, drains 2 and 3
	}
	for i, st := range steps {
		if got := r.receive(st.seq, wire.PayloadOutput, []byte{byte('a' + st.seq)}); got != st.want {
			t.Fatalf("step %d seq %d: verdict %v, want %v", i, st.seq, got, st.want)
		}
	}
	if string(delivered) != "abcd" || r.stats().Buffered != 1 {
		t.Fatalf("delivered %q, buffered %d (2 must have been stored once)", delivered, r.stats().Buffered)
	}
	// The session is not ready (local reader slow): the in-order message is
	// held and acked while there is room, and drain delivers it later.
	ready = false
	if got := r.receive(4, wire.PayloadOutput, []byte("e")); got != verdictAck {
		t.Fatalf("not ready with room: %v, want it held and acked", got)
	}
	if got := r.receive(4, wire.PayloadOutput, []byte("e")); got != verdictDuplicate {
		t.Fatalf("resend of a held message: %v", got)
	}
	if got := r.receive(6, wire.PayloadOutput, []byte("g")); got != verdictAck {
		t.Fatalf("out of order with room: %v", got)
	}
	if got := r.receive(7, wire.PayloadOutput, []byte("h")); got != verdictDrop {
		t.Fatal("held buffer full: no ack")
	}
	ready = true
	r.drain()
	if string(delivered) != "abcdefg" || r.stats().Expected != 7 {
		t.Fatalf("after drain: %q expected %d", delivered, r.stats().Expected)
	}
	// Not ready with a full buffer means no ack.
	r2 := newReceiver(receiverLimits{messages: 1}, func(wire.PayloadType, []byte) bool { return false })
	r2.receive(1, wire.PayloadOutput, []byte("x"))
	if got := r2.receive(0, wire.PayloadOutput, []byte("y")); got != verdictDrop {
		t.Fatalf("not ready, no room: %v", got)
	}
}

func TestCheckStreamURL(t *testing.T) {
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/x?role=publish_subscribe", true},
		{"ws://127.0.0.1:1234/v1/data-channel/x", true},
		{"ws://[::1]:1234/v1/data-channel/x", true},
		{"ws://localhost:1234/v1/data-channel/x", true},
		{"ws://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/x", false},
		{"ws://10.0.0.1/v1/data-channel/x", false},
		{"https://example.com/", false},
	} {
		_, err := checkStreamURL(c.url)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.url, err)
		}
	}
}

func TestSenderSpanBound(t *testing.T) {
	s, clk := newTestSender(t, StreamConfig{InitialWindow: 4, MinWindow: 4, MaxWindow: 4, MaxSpan: 6})
	for i := 0; i < 4; i++ {
		_ = s.enqueue(context.Background(), wire.PayloadOutput, []byte{1})
	}
	s.due(clk.Now(), 10)
	// Acks for 1..3 leave 0 stuck: the window has room, the span does not
	// let sequence numbers run further than 6 past it.
	s.ack(1)
	s.ack(2)
	s.ack(3)
	_ = s.enqueue(context.Background(), wire.PayloadOutput, []byte{1})
	_ = s.enqueue(context.Background(), wire.PayloadOutput, []byte{1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := s.enqueue(ctx, wire.PayloadOutput, []byte{1}); err != context.DeadlineExceeded {
		t.Fatalf("span not bounded: %v", err)
	}
	s.ack(0)
	if err := s.enqueue(context.Background(), wire.PayloadOutput, []byte{1}); err != nil {
		t.Fatal(err)
	}
}

// TestSenderWakesWriterForABatch: a writer waiting for a full window is
// woken once there is room for a batch (a quarter of the window, at most
// 32), not by every ack: woken per ack it wrote one message per wakeup.
// Once everything is acked it is woken whatever the room.
func TestSenderWakesWriterForABatch(t *testing.T) {
	for _, c := range []struct {
		window, wakeAfter int
	}{{64, 16}, {256, 32}, {4, 1}} {
		s, clk := newTestSender(t, StreamConfig{InitialWindow: c.window, MinWindow: c.window, MaxWindow: c.window})
		for i := 0; i < c.window; i++ {
			if err := s.enqueue(context.Background(), wire.PayloadOutput, make([]byte, 1024)); err != nil {
				t.Fatal(err)
			}
		}
		s.due(clk.Now(), c.window)
		done := make(chan error, 1)
		go func() { done <- s.enqueue(context.Background(), wire.PayloadOutput, []byte("x")) }()
		waitUntil(t, "the writer to wait for the window", s.hasWaiter)
		for seq := 0; seq < c.wakeAfter-1; seq++ {
			s.ack(int64(seq))
		}
		select {
		case err := <-done:
			t.Fatalf("window %d: writer went on after %d acks (%v), want %d", c.window, c.wakeAfter-1, err, c.wakeAfter)
		case <-time.After(20 * time.Millisecond):
		}
		s.ack(int64(c.wakeAfter - 1))
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("window %d: writer still waiting after %d acks", c.window, c.wakeAfter)
		}
	}
	// A window too small for a batch of its bytes: the last ack wakes.
	s, clk := newTestSender(t, StreamConfig{InitialWindow: 2, MinWindow: 2, MaxWindow: 2, MaxWindowBytes: 2048})
	for i := 0; i < 2; i++ {
		if err := s.enqueue(context.Background(), wire.PayloadOutput, make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	s.due(clk.Now(), 2)
	done := make(chan error, 1)
	go func() { done <- s.enqueue(context.Background(), wire.PayloadOutput, []byte("x")) }()
	waitUntil(t, "the writer to wait for the window", s.hasWaiter)
	s.ack(0)
	s.ack(1)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writer still waiting with everything acked")
	}
}

func (s *sender) hasWaiter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

// due is emitDue collecting copies of the frames, for the tests.
func (s *sender) due(now time.Time, max int) [][]byte {
	var out [][]byte
	s.emitDue(now, max, func(f []byte) { out = append(out, append([]byte(nil), f...)) })
	return out
}

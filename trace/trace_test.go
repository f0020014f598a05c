package trace

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

func frame(t *testing.T, typ string, seq int64, pt wire.PayloadType, payload []byte) []byte {
	t.Helper()
	b, err := wire.Encode(&wire.Frame{MessageType: typ, SchemaVersion: 1, CreatedDate: 1, SequenceNumber: seq,
		MessageID: uuid.New(), PayloadType: pt, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRecorderAndSummary: a recorded session on a fake clock reads back
// with its retransmission, duplicate, lost leg and resume, its stall and
// what preceded it; the payload never reaches the file; error text is
// cleaned of URL queries.
func TestRecorderAndSummary(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	var buf bytes.Buffer
	r := NewRecorder(&buf, "test", clk)
	s := r.Session()
	secret := []byte("SECRET-PAYLOAD-BYTES")
	s.Event("session-start", "session", "alice-1", "target", "i-1")
	s.Frame(true, frame(t, "input_stream_data", 0, wire.PayloadOutput, secret))
	clk.Advance(100 * time.Millisecond)
	s.Frame(false, frame(t, "acknowledge", 0, wire.PayloadOutput, wire.AppendAcknowledge(nil, "input_stream_data", uuid.New(), 0)))
	s.Frame(true, frame(t, "input_stream_data", 1, wire.PayloadOutput, secret))
	s.Frame(false, frame(t, "output_stream_data", 0, wire.PayloadOutput, secret))
	clk.Advance(3 * time.Second) // seq 1 waits: a stall
	s.Event("leg-lost", "reason", "read tcp: wss://ssmmessages.example/v1/data-channel/x?role=publish&token=SECRET-TOKEN: reset")
	s.Frame(true, frame(t, "input_stream_data", 1, wire.PayloadOutput, secret)) // retransmission
	clk.Advance(500 * time.Millisecond)
	s.Event("resume-call", "attempt", 1, "err", nil)
	s.Event("resumed", "attempt", 1, "after", 500*time.Millisecond)
	s.Frame(false, frame(t, "output_stream_data", 0, wire.PayloadOutput, secret)) // duplicate
	s.Frame(false, frame(t, "acknowledge", 0, wire.PayloadOutput, wire.AppendAcknowledge(nil, "input_stream_data", uuid.New(), 1)))
	s.Event("session-end", "err", nil)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, bad := range []string{"SECRET-PAYLOAD", "SECRET-TOKEN", "token="} {
		if strings.Contains(text, bad) {
			t.Errorf("trace holds %q:\n%s", bad, text)
		}
	}
	sum, err := Summarize(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Retransmits != 1 || sum.DuplicatesIn != 1 || len(sum.LegsLost) != 1 || sum.LegsLost[0].Repaired != 500*time.Millisecond ||
		sum.BytesOut != int64(len(secret))*2 || sum.BytesIn != int64(len(secret)) || sum.ResumeCalls != 1 {
		t.Fatalf("summary %+v", sum)
	}
	if sum.Stall != 3500*time.Millisecond || sum.StallAt != 100*time.Millisecond || len(sum.StallBefore) == 0 ||
		!strings.Contains(sum.StallBefore[len(sum.StallBefore)-1], "output_stream_data seq 0") {
		t.Fatalf("stall %s at %s after %q", sum.Stall, sum.StallAt, sum.StallBefore)
	}
	if sum.End != "closed normally" || sum.Version != "test" {
		t.Fatalf("end %q version %q", sum.End, sum.Version)
	}
}

// TestRecorderNeverBlocks: a writer that never returns costs the session
// nothing: events beyond the queue are counted as dropped.
func TestRecorderNeverBlocks(t *testing.T) {
	block := make(chan struct{})
	r := NewRecorder(blockingWriter{block}, "test", nil)
	s := r.Session()
	f := frame(t, "output_stream_data", 1, wire.PayloadOutput, []byte("x"))
	done := make(chan struct{})
	go func() {
		for i := 0; i < 3*queueLen; i++ {
			s.Frame(false, f)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Frame blocked on a stuck writer")
	}
	r.mu.Lock()
	dropped := r.dropped
	r.mu.Unlock()
	if dropped < queueLen {
		t.Fatalf("dropped %d, want at least %d", dropped, queueLen)
	}
	close(block)
	_ = r.Close()
}

type blockingWriter struct{ c chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) { <-w.c; return len(p), nil }

// TestSummarizeDamaged: garbage and a cut-off last line are listed, not
// fatal; an overlong line is bounded; no events at all is an error.
func TestSummarizeDamaged(t *testing.T) {
	in := `{"t":0,"ev":"trace","start":"x","version":"v"}
not json
{"t":10,"ev":"frame","dir":"in","type":"output_stream_data","seq":0,"pt":1,"len":5}
` + strings.Repeat("z", maxLine+10) + "\n" + `{"t":20,"ev":"fra`
	s, err := Summarize(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if s.BytesIn != 5 || len(s.BadLines) < 2 {
		t.Fatalf("bytes %d, bad lines %q", s.BytesIn, s.BadLines)
	}
	if _, err := Summarize(strings.NewReader("garbage\n")); err == nil {
		t.Fatal("a file without events summarised without error")
	}
}

func FuzzSummarize(f *testing.F) {
	f.Add([]byte(`{"t":0,"ev":"trace"}` + "\n" + `{"t":5,"ev":"frame","dir":"out","type":"input_stream_data","seq":3,"pt":1,"len":9}`))
	f.Add([]byte(`{"t":-5,"ev":"leg-lost"}` + "\n" + `{"t":9223372036854775807,"ev":"resumed","s":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Summarize(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		s.Format(&out)
		if len(s.BucketIn) > 86401 || len(s.BucketOut) > 86401 {
			t.Fatalf("buckets grew to %d/%d", len(s.BucketIn), len(s.BucketOut))
		}
	})
}

// Package trace is ssmproxy's flight recorder (docs/trace.md): a Recorder
// writes a session's protocol events as JSON lines (frame headers, acks,
// legs, resumes, credential refreshes), and Summarize reads them back into
// what a bug report needs. Never a payload byte, never a token or a key:
// frames are recorded by their header fields only, and every free text
// (errors from the network or the service) passes the redactor with URL
// queries cut off.
package trace

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/internal/redact"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Event is one line of a trace. T is the time since the recording began,
// in microseconds; the first line (Kind "trace") carries the wall clock.
type Event struct {
	T    int64  `json:"t"`
	Kind string `json:"ev"`
	// S numbers the sessions of one process (forward runs several), from 1.
	S int `json:"s,omitempty"`
	// Frame fields (Kind "frame").
	Dir   string `json:"dir,omitempty"` // "in" or "out"
	Type  string `json:"type,omitempty"`
	Seq   *int64 `json:"seq,omitempty"`
	Flags uint64 `json:"flags,omitempty"`
	PT    uint32 `json:"pt,omitempty"`
	Len   int    `json:"len,omitempty"`
	Acked *int64 `json:"acked,omitempty"` // an acknowledge's sequence number
	// Other events' attributes, as text.
	Attrs map[string]string `json:"attrs,omitempty"`
	// The header line.
	Start   string `json:"start,omitempty"`
	Version string `json:"version,omitempty"`
	// Dropped: events lost because the writer fell behind (on the last line).
	Dropped int64 `json:"dropped,omitempty"`
}

// queueLen bounds the events waiting for the writer: the recorder never
// blocks the session and never grows; beyond this it counts drops.
const queueLen = 8192

// Recorder writes events to w from its own goroutine. Its Frame and Event
// methods (ssm.Tracer) only decode a header and queue.
type Recorder struct {
	clk      clock.Clock
	start    time.Time
	q        chan Event
	done     chan struct{}
	mu       sync.Mutex
	closed   bool
	dropped  int64
	sessions int
	err      error
}

// NewRecorder starts a recorder writing to w; version names the program.
// A nil clk is the system clock.
func NewRecorder(w io.Writer, version string, clk clock.Clock) *Recorder {
	clk = clock.Or(clk)
	r := &Recorder{clk: clk, start: clk.Now(), q: make(chan Event, queueLen), done: make(chan struct{})}
	go r.write(w)
	r.put(Event{Kind: "trace", Start: r.start.UTC().Format(time.RFC3339Nano), Version: version})
	return r
}

func (r *Recorder) write(w io.Writer) {
	defer close(r.done)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for ev := range r.q {
		if err := enc.Encode(ev); err != nil && r.err == nil {
			r.err = err
		}
		if len(r.q) == 0 {
			_ = bw.Flush()
		}
	}
	if err := bw.Flush(); err != nil && r.err == nil {
		r.err = err
	}
}

func (r *Recorder) put(ev Event) {
	if ev.T == 0 && ev.Kind != "trace" {
		ev.T = r.clk.Since(r.start).Microseconds()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	select {
	case r.q <- ev:
	default:
		r.dropped++
	}
}

// Session returns the tracer of the process's next session: its events
// carry the session's number.
func (r *Recorder) Session() *SessionTracer {
	r.mu.Lock()
	r.sessions++
	n := r.sessions
	r.mu.Unlock()
	return &SessionTracer{r: r, n: n}
}

// SessionTracer records one session's events (ssm.Tracer).
type SessionTracer struct {
	r *Recorder
	n int
}

// Frame records a websocket message by its header.
func (t *SessionTracer) Frame(out bool, msg []byte) { t.r.frame(t.n, out, msg) }

// Event records a moment of the session; attrs are key, value pairs.
func (t *SessionTracer) Event(kind string, attrs ...any) { t.r.event(t.n, kind, attrs...) }

// Event records a moment of the process (credential refreshes), outside
// any one session.
func (r *Recorder) Event(kind string, attrs ...any) { r.event(0, kind, attrs...) }

func (r *Recorder) frame(n int, out bool, msg []byte) {
	ev := Event{Kind: "frame", S: n, Dir: "in", Len: len(msg)}
	if out {
		ev.Dir = "out"
	}
	f, err := wire.DecodeHeader(msg)
	if err != nil {
		ev.Type = "undecodable"
		r.put(ev)
		return
	}
	seq := f.SequenceNumber
	ev.Type, ev.Seq, ev.Flags, ev.PT, ev.Len = f.MessageType, &seq, f.Flags, uint32(f.PayloadType), len(f.Payload)
	if f.MessageType == "acknowledge" {
		if n, ok := wire.ParseAckSequence(f.Payload); ok {
			ev.Acked = &n
		}
		ev.Seq = nil // acks carry no sequence of their own
	}
	r.put(ev)
}

func (r *Recorder) event(n int, kind string, attrs ...any) {
	ev := Event{Kind: kind, S: n}
	for i := 0; i+1 < len(attrs); i += 2 {
		k, ok := attrs[i].(string)
		if !ok || attrs[i+1] == nil {
			continue
		}
		if err, isErr := attrs[i+1].(error); isErr && err == nil {
			continue
		}
		if ev.Attrs == nil {
			ev.Attrs = map[string]string{}
		}
		ev.Attrs[k] = Clean(fmt.Sprint(attrs[i+1]))
	}
	r.put(ev)
}

// Close writes the last line (the drop count) and waits for the writer.
func (r *Recorder) Close() error {
	r.put(Event{Kind: "end", Dropped: r.dropped})
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return r.err
	}
	r.closed = true
	close(r.q)
	r.mu.Unlock()
	<-r.done
	return r.err
}

var urlQuery = regexp.MustCompile(`(?i)((?:wss?|https?)://[^\s?"']*)\?[^\s"']*`)

// Clean makes free text fit for a trace: URL queries (where tokens and
// signatures travel) are cut off, then the redactor removes every secret
// it knows and every credential-shaped string, and the length is bounded.
func Clean(s string) string {
	s = urlQuery.ReplaceAllString(s, "$1?…")
	s = redact.String(s)
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

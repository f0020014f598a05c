package trace

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// maxLine bounds one line of a trace file: a line longer than this is
// garbage, not an event.
const maxLine = 64 << 10

// Summary is what "ssmproxy trace FILE" prints (docs/trace.md 3).
type Summary struct {
	Start, Version      string
	Duration            time.Duration
	Sessions            []string // "id target document"
	FramesIn, FramesOut int
	BytesIn, BytesOut   int64 // stream payload bytes, first transmissions
	Retransmits         int   // stream messages sent again
	RetransmittedSeqs   []int64
	DuplicatesIn        int // stream messages received again
	Pauses              int
	LegsLost            []LegLoss
	ResumeCalls         int
	CredentialEvents    []string
	End                 string
	Dropped             int64
	BadLines            []string // "line N: why"
	// Buckets: stream payload bytes per interval, in and out.
	Interval            time.Duration
	BucketIn, BucketOut []int64
	// The longest time without any inbound frame while data of ours waited
	// for its ack, and the events before it began.
	Stall       time.Duration
	StallAt     time.Duration
	StallBefore []string
}

// LegLoss is one lost websocket and its repair.
type LegLoss struct {
	At       time.Duration
	Reason   string
	Repaired time.Duration // 0: not repaired
	Attempts string
}

// Summarize reads a trace. Lines that are not events are listed, not
// fatal: a trace cut off by a crash is still worth reading.
func Summarize(r io.Reader) (*Summary, error) {
	s := &Summary{Interval: time.Second}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	var evs []Event
	n := 0
	for {
		ok := sc.Scan()
		if !ok {
			if err := sc.Err(); err != nil {
				s.BadLines = append(s.BadLines, fmt.Sprintf("line %d: %v", n+1, err))
			}
			break
		}
		n++
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Kind == "" {
			if len(s.BadLines) < 20 {
				s.BadLines = append(s.BadLines, fmt.Sprintf("line %d: not an event", n))
			}
			continue
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return s, fmt.Errorf("no events in the trace (%d lines)", n)
	}
	sentSeq := map[[2]int64]bool{}
	gotSeq := map[[2]int64]bool{}
	var lastIn int64 = -1
	lastInIdx := 0
	unacked := map[[2]int64]bool{} // stream messages sent and not acked
	stallable := false             // data waited when the last inbound frame came
	var legLost *LegLoss
	for i, ev := range evs {
		at := time.Duration(ev.T) * time.Microsecond
		if at > s.Duration {
			s.Duration = at
		}
		switch ev.Kind {
		case "trace":
			s.Start, s.Version = ev.Start, ev.Version
		case "frame":
			if ev.Dir == "in" {
				s.FramesIn++
				if lastIn >= 0 && stallable && ev.T-lastIn > int64(s.Stall/time.Microsecond) {
					s.Stall = time.Duration(ev.T-lastIn) * time.Microsecond
					s.StallAt = time.Duration(lastIn) * time.Microsecond
					s.StallBefore = describeBefore(evs, lastInIdx+1)
				}
				if ev.Acked != nil {
					delete(unacked, [2]int64{int64(ev.S), *ev.Acked})
				}
				lastIn, lastInIdx = ev.T, i
			} else {
				s.FramesOut++
				if ev.Type == "input_stream_data" && ev.Seq != nil {
					unacked[[2]int64{int64(ev.S), *ev.Seq}] = true
				}
			}
			stallable = len(unacked) > 0
			s.frame(ev, at, sentSeq, gotSeq)
		case "leg-lost":
			s.LegsLost = append(s.LegsLost, LegLoss{At: at, Reason: ev.Attrs["reason"]})
			legLost = &s.LegsLost[len(s.LegsLost)-1]
		case "resume-call":
			s.ResumeCalls++
		case "resumed":
			if legLost != nil {
				legLost.Repaired = at - legLost.At
				legLost.Attempts = ev.Attrs["attempt"]
				legLost = nil
			}
		case "credentials":
			s.CredentialEvents = append(s.CredentialEvents, fmt.Sprintf("%s %s", fmtAt(at), attrText(ev.Attrs)))
		case "session-start":
			s.Sessions = append(s.Sessions, attrText(ev.Attrs))
		case "session-end":
			s.End = attrText(ev.Attrs)
			if s.End == "" {
				s.End = "closed normally"
			}
		case "end":
			s.Dropped = ev.Dropped
		}
	}
	sort.Slice(s.RetransmittedSeqs, func(i, j int) bool { return s.RetransmittedSeqs[i] < s.RetransmittedSeqs[j] })
	return s, nil
}

func (s *Summary) frame(ev Event, at time.Duration, sent, got map[[2]int64]bool) {
	switch ev.Type {
	case "pause_publication":
		if ev.Dir == "in" {
			s.Pauses++
		}
	case "input_stream_data", "output_stream_data":
		// Sequence numbers count every stream message; bytes count the
		// data (payload type 1, Output) only.
		if ev.Seq == nil {
			return
		}
		b := int(at / s.Interval)
		key := [2]int64{int64(ev.S), *ev.Seq}
		if ev.Dir == "out" {
			if sent[key] {
				s.Retransmits++
				if len(s.RetransmittedSeqs) < 1000 {
					s.RetransmittedSeqs = append(s.RetransmittedSeqs, *ev.Seq)
				}
				return
			}
			sent[key] = true
			if ev.PT == payloadOutput {
				s.BytesOut += int64(ev.Len)
				s.BucketOut = addAt(s.BucketOut, b, int64(ev.Len))
			}
		} else {
			if got[key] {
				s.DuplicatesIn++
				return
			}
			got[key] = true
			if ev.PT == payloadOutput {
				s.BytesIn += int64(ev.Len)
				s.BucketIn = addAt(s.BucketIn, b, int64(ev.Len))
			}
		}
	}
}

// payloadOutput is wire.PayloadOutput: the session's data.
const payloadOutput = 1

// addAt adds v at index i, growing the slice (bounded: a day of seconds).
func addAt(b []int64, i int, v int64) []int64 {
	if i < 0 || i > 86400 {
		return b
	}
	for len(b) <= i {
		b = append(b, 0)
	}
	b[i] += v
	return b
}

// describeBefore: the last events up to i, one line each.
func describeBefore(evs []Event, i int) []string {
	var out []string
	for j := max(0, i-6); j < i; j++ {
		out = append(out, describe(evs[j]))
	}
	return out
}

func describe(ev Event) string {
	at := fmtAt(time.Duration(ev.T) * time.Microsecond)
	if ev.Kind != "frame" {
		return fmt.Sprintf("%s %s %s", at, ev.Kind, attrText(ev.Attrs))
	}
	s := fmt.Sprintf("%s %-3s %s", at, ev.Dir, ev.Type)
	if ev.Seq != nil {
		s += fmt.Sprintf(" seq %d", *ev.Seq)
	}
	if ev.Acked != nil {
		s += fmt.Sprintf(" acks %d", *ev.Acked)
	}
	return s + fmt.Sprintf(" (%d bytes)", ev.Len)
}

func fmtAt(d time.Duration) string { return fmt.Sprintf("+%.3fs", d.Seconds()) }

func attrText(a map[string]string) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+a[k])
	}
	return strings.Join(parts, " ")
}

// Format writes the summary for people.
func (s *Summary) Format(w io.Writer) {
	fmt.Fprintf(w, "trace of %s, started %s, %s long\n", orUnknown(s.Version), orUnknown(s.Start), s.Duration.Round(time.Millisecond))
	for _, ss := range s.Sessions {
		fmt.Fprintf(w, "session: %s\n", ss)
	}
	fmt.Fprintf(w, "frames: %d in, %d out; stream bytes: %d in, %d out\n", s.FramesIn, s.FramesOut, s.BytesIn, s.BytesOut)
	fmt.Fprintf(w, "throughput per %s (in / out, KiB):\n", s.Interval)
	for i := 0; i < max(len(s.BucketIn), len(s.BucketOut)); i++ {
		var in, out int64
		if i < len(s.BucketIn) {
			in = s.BucketIn[i]
		}
		if i < len(s.BucketOut) {
			out = s.BucketOut[i]
		}
		fmt.Fprintf(w, "  %5ds %8.1f / %8.1f %s\n", i, float64(in)/1024, float64(out)/1024, bar(in+out))
	}
	fmt.Fprintf(w, "retransmissions: %d", s.Retransmits)
	if len(s.RetransmittedSeqs) > 0 {
		fmt.Fprintf(w, " (seq %s)", seqList(s.RetransmittedSeqs))
	}
	fmt.Fprintf(w, "\nduplicates received: %d; pause_publication: %d\n", s.DuplicatesIn, s.Pauses)
	fmt.Fprintf(w, "reconnects: %d, ResumeSession calls: %d\n", len(s.LegsLost), s.ResumeCalls)
	for _, l := range s.LegsLost {
		repaired := "not repaired"
		if l.Repaired > 0 {
			repaired = fmt.Sprintf("resumed after %s (attempt %s)", l.Repaired.Round(time.Millisecond), l.Attempts)
		}
		fmt.Fprintf(w, "  %s lost: %s; %s\n", fmtAt(l.At), l.Reason, repaired)
	}
	fmt.Fprintf(w, "longest stall (nothing inbound while data waited for its ack): %s at %s", s.Stall.Round(time.Millisecond), fmtAt(s.StallAt))
	if len(s.StallBefore) > 0 {
		fmt.Fprintf(w, ", after:\n")
		for _, l := range s.StallBefore {
			fmt.Fprintf(w, "  %s\n", l)
		}
	} else {
		fmt.Fprintln(w)
	}
	for _, c := range s.CredentialEvents {
		fmt.Fprintf(w, "credentials: %s\n", c)
	}
	fmt.Fprintf(w, "end: %s\n", orUnknown(s.End))
	if s.Dropped > 0 {
		fmt.Fprintf(w, "events dropped by the recorder: %d\n", s.Dropped)
	}
	for _, b := range s.BadLines {
		fmt.Fprintf(w, "skipped %s\n", b)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

func bar(n int64) string {
	k := int(n / (32 << 10))
	if k > 60 {
		k = 60
	}
	return strings.Repeat("#", k)
}

func seqList(seqs []int64) string {
	var parts []string
	for i, s := range seqs {
		if i == 20 {
			parts = append(parts, fmt.Sprintf("… %d more", len(seqs)-20))
			break
		}
		parts = append(parts, fmt.Sprint(s))
	}
	return strings.Join(parts, " ")
}

//go:build unix

package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// events runs the plan's one-off faults at their times.
type events struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	log []string
}

func (e *events) note(format string, a ...any) {
	e.mu.Lock()
	e.log = append(e.log, fmt.Sprintf(format, a...))
	e.mu.Unlock()
}

func (e *events) wait() { e.wg.Wait() }

// scheduleEvents throttles the next ResumeSession once the download is
// throttleAt done and makes the upload's client leg half-open for
// halfOpenFor once the upload is halfOpenAt done: tied to progress, not
// time, so that both land mid-transfer at any SOAK_SIZE.
//
// The half-open episode hits the upload, not the download: on the download
// the realistic agent keeps sending into the silent leg (nothing tells it
// otherwise), loses up to an SSH window of messages, ~2000, and refills
// them head-only at under 10 a second (docs/protocol.md 8.5): a stall of
// minutes that measures the agent, not ssmproxy. On the upload the bulk
// data is ssmproxy's own, which it retransmits per message.
func (s *soak) scheduleEvents(ctx context.Context, start time.Time, dl, ul *transfer, ulSession string) *events {
	e := &events{}
	reached := func(t *transfer, share float64) bool {
		for ctx.Err() == nil && !t.finished() {
			if float64(t.bytes()) >= share*float64(t.size) {
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		e.note("the %s ended before %.0f%%: event skipped", t.name, share*100)
		return false
	}
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		if !reached(dl, throttleAt) {
			return
		}
		err := s.fake.Post("/_fake/api-faults", `{"op":"ResumeSession","type":"ThrottlingException","status":400,"count":1}`)
		e.note("+%s (download %.0f%%) the next ResumeSession answers ThrottlingException (err %v)", since(start), throttleAt*100, err)
	}()
	go func() {
		defer e.wg.Done()
		if !reached(ul, halfOpenAt) {
			return
		}
		path := "/_fake/sessions/" + ulSession + "/half-open"
		err := s.fake.Post(path+"?on=1", "")
		e.note("+%s (upload %.0f%%) the upload's client leg goes half-open for %s (err %v)", since(start), halfOpenAt*100, halfOpenFor, err)
		select {
		case <-ctx.Done():
		case <-time.After(halfOpenFor):
		}
		err = s.fake.Post(path+"?on=0", "")
		e.note("+%s half-open episode over (err %v)", since(start), err)
	}()
	return e
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// report is everything the soak prints.
type report struct {
	size            int64
	credTTL         time.Duration
	down, up        transferResult
	downOK, upOK    bool // sha256 equal
	shell           shellResult
	events          []string
	lifetimes       float64
	peakRSSKiB      int64
	ssmproxyProcs   int
	reconnects      int64
	resumes         map[string]int64
	sessions        int64
	shellState      string
	retransClient   int64 // frames ssmproxy sent again
	retransAgent    int64
	faultsActed     int64
	scheduledCloses int64
	legsExpired     int64
	assumeRole      int64
	violations      []fakeaws.Violation
	warnings        int64
	roles           map[string]string // session id -> shell, download, upload
	// ssmproxy's own counts, from the "session over" lines of its log.
	selfSessions, selfReconnects, selfRetransmits int64
}

var sessionOver = regexp.MustCompile(`msg="session over".* reconnects=(\d+) retransmits=(\d+)`)

// readSelfCounts sums ssmproxy's own reconnect and retransmission counts
// from its log.
func (r *report) readSelfCounts(logFile string) {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return
	}
	for _, m := range sessionOver.FindAllStringSubmatch(string(b), -1) {
		rc, _ := strconv.ParseInt(m[1], 10, 64)
		rt, _ := strconv.ParseInt(m[2], 10, 64)
		r.selfSessions++
		r.selfReconnects += rc
		r.selfRetransmits += rt
	}
}

// collect reads the fake's counters.
func (s *soak) collect(r *report, shSession string) error {
	st, err := s.fake.Stats()
	if err != nil {
		return err
	}
	if r.violations, err = s.fake.Violations(); err != nil {
		return err
	}
	r.resumes = st.API["ResumeSession"]
	r.sessions = st.SessionsStarted
	r.reconnects = st.Websocket["client"].Opens - st.SessionsStarted
	r.retransClient = st.Frames["client_to_agent"].Retransmissions
	r.retransAgent = st.Frames["agent_to_client"].Retransmissions
	r.faultsActed = st.FaultsActed
	r.scheduledCloses = st.ScheduledCloses
	r.legsExpired = st.SignedLegsExpired
	r.assumeRole = st.STS["AssumeRole"]
	r.warnings = st.ViolationCount["warning"]
	var infos []fakeaws.SessionInfo
	if err := s.fake.GetJSON("/_fake/sessions", &infos); err == nil {
		for _, in := range infos {
			if in.ID == shSession {
				r.shellState = in.State
			}
		}
	}
	return nil
}

// check fails a run that verified its bytes but missed a part of the plan.
func (r *report) check() error {
	if len(r.violations) > 0 {
		v := r.violations[0]
		return fmt.Errorf("the fake recorded %d error-level protocol violations (first: %s %s)", len(r.violations), v.Code, v.Detail)
	}
	if r.sessions != 3 {
		return fmt.Errorf("%d sessions started, want 3 (the shell, rsync down, rsync up): a session was replaced", r.sessions)
	}
	if r.resumes["400"] < 1 {
		return fmt.Errorf("the throttled ResumeSession never happened (ResumeSession %v)", r.resumes)
	}
	if r.resumes["200"] < 1 {
		return fmt.Errorf("no ResumeSession succeeded: the run saw no reconnect")
	}
	if r.faultsActed == 0 {
		return fmt.Errorf("no relay fault fired")
	}
	return nil
}

func (r *report) longestStall() time.Duration {
	return max(r.down.maxStall, r.up.maxStall, r.shell.maxGap)
}

func (r *report) print() {
	mbs := func(t transferResult) float64 {
		if t.elapsed <= 0 {
			return 0
		}
		return float64(r.size) / t.elapsed.Seconds() / 1e6
	}
	fmt.Println()
	if r.down.elapsed > 0 || r.up.elapsed > 0 {
		fmt.Printf("bytes verified (sha256 of source = destination): download %d, upload %d\n", verified(r.size, r.downOK), verified(r.size, r.upOK))
		fmt.Printf("throughput:        download %.3f MB/s (%s), upload %.3f MB/s (%s)\n", mbs(r.down), r.down.elapsed.Round(time.Second), mbs(r.up), r.up.elapsed.Round(time.Second))
		fmt.Printf("longest stall:     download %s, upload %s, interactive %s between answers (slowest answer %s)\n",
			r.down.maxStall.Round(100*time.Millisecond), r.up.maxStall.Round(100*time.Millisecond),
			r.shell.maxGap.Round(100*time.Millisecond), r.shell.maxRTT.Round(100*time.Millisecond))
	}
	fmt.Printf("interactive:       %d answers checked over %s in one ssh and one ssmproxy session (fake state %s) = %.1f credential lifetimes of %s\n",
		r.shell.answers, r.shell.span.Round(time.Second), orDash(r.shellState), r.lifetimes, r.credTTL)
	if r.resumes != nil {
		fmt.Printf("reconnects:        %d client legs reopened (scheduled closes %d, legs closed at credential expiry %d)\n", r.reconnects, r.scheduledCloses, r.legsExpired)
		fmt.Printf("ResumeSession:     %s\n", codes(r.resumes))
		fmt.Printf("retransmissions:   ssmproxy %d, agent %d (stream frames sent again, counted by the fake's relay); %d relay faults acted\n", r.retransClient, r.retransAgent, r.faultsActed)
		fmt.Printf("ssmproxy's own:    %d sessions ended, %d reconnects, %d retransmissions (its log)\n", r.selfSessions, r.selfReconnects, r.selfRetransmits)
		fmt.Printf("credentials:       %d AssumeRole calls by the broker over the run\n", r.assumeRole)
		fmt.Printf("fake violations:   %d at error level, %d warnings\n", len(r.violations), r.warnings)
	}
	fmt.Printf("ssmproxy peak RSS: %.1f MiB (VmHWM, highest of %d processes)\n", float64(r.peakRSSKiB)/1024, r.ssmproxyProcs)
	for i, v := range r.violations {
		if i == 5 {
			fmt.Printf("violation:         ... and %d more\n", len(r.violations)-i)
			break
		}
		fmt.Printf("violation:         %s %s session %s (%s): %s\n", v.Time.Format("15:04:05.000"), v.Code, v.Session, r.roles[v.Session], v.Detail)
	}
	for _, e := range r.events {
		fmt.Printf("event:             %s\n", e)
	}
	if r.shell.stderr != "" {
		fmt.Printf("interactive ssh stderr: %q\n", oneLine(r.shell.stderr))
	}
}

func verified(size int64, ok bool) int64 {
	if !ok {
		return 0
	}
	return size
}

func codes(m map[string]int64) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d × %s", m[k], k))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

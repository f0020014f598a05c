package fakeaws

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// maxViolations bounds the violations kept in memory.
const maxViolations = 1000

// DirStats counts relayed frames in one direction.
type DirStats struct {
	Frames          int64 `json:"frames"`
	Bytes           int64 `json:"bytes"`
	DataMessages    int64 `json:"data_messages"`
	Retransmissions int64 `json:"retransmissions"`
	Acks            int64 `json:"acks"`
	Other           int64 `json:"other"`
}

// LegStats counts websocket opens and closes of one leg kind.
type LegStats struct {
	Opens   int64 `json:"opens"`
	Closes  int64 `json:"closes"`
	Refused int64 `json:"refused,omitempty"`
}

// Stats is the snapshot served at GET /_fake/stats.
type Stats struct {
	API               map[string]map[string]int64 `json:"api"` // operation -> HTTP status -> count
	STS               map[string]int64            `json:"sts"` // action -> count
	STSByCaller       map[string]int64            `json:"sts_by_caller,omitempty"`
	SigV4Failures     map[string]int64            `json:"sigv4_failures"`
	Websocket         map[string]*LegStats        `json:"websocket"`
	Frames            map[string]*DirStats        `json:"frames"`
	ScheduledCloses   int64                       `json:"scheduled_closes"`
	SignedLegsExpired int64                       `json:"signed_legs_expired"`
	UpgradesRefused   map[string]int64            `json:"upgrades_refused,omitempty"`
	DroppedAbsent     int64                       `json:"dropped_peer_absent"`
	// Publications counts the pause/start_publication frames MGS sent, by
	// "leg:type" (e.g. "client:pause_publication").
	Publications    map[string]int64 `json:"publications,omitempty"`
	FaultsActed     int64            `json:"faults_acted"`
	APIFaults       int64            `json:"api_faults"`
	SessionsStarted int64            `json:"sessions_started"`
	SessionsActive  int64            `json:"sessions_active"`
	Violations      []Violation      `json:"violations"`
	ViolationCount  map[string]int64 `json:"violation_count"` // by severity
	// The fake agent's mux mode over every session (docs/fakeaws.md 4.3):
	// smux streams accepted, streams answered with ConnectToPortError, and
	// the highest peak of client bytes buffered inside one session's smux.
	MuxStreamsAccepted int64 `json:"mux_streams_accepted"`
	MuxDialsFailed     int64 `json:"mux_dials_failed"`
	MuxBufferedPeak    int64 `json:"mux_buffered_peak"`
}

type stats struct {
	mu     sync.Mutex
	st     Stats
	frames [2]dirCounters // by direction, updated without the lock
}

type dirCounters struct {
	frames, bytes, data, retransmissions, acks, other atomic.Int64
}

func newStats() *stats {
	return &stats{st: Stats{
		API: map[string]map[string]int64{}, SigV4Failures: map[string]int64{},
		Websocket:       map[string]*LegStats{"client": {}, "agent": {}},
		Frames:          map[string]*DirStats{"client_to_agent": {}, "agent_to_client": {}},
		UpgradesRefused: map[string]int64{}, ViolationCount: map[string]int64{},
	}}
}

func (s *stats) apiCall(op string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.st.API[op]
	if m == nil {
		m = map[string]int64{}
		s.st.API[op] = m
	}
	m[strconv.Itoa(status)]++
}

func (s *stats) frame(d direction, fi frameInfo, n int, retransmit bool) {
	c := &s.frames[d]
	c.frames.Add(1)
	c.bytes.Add(int64(n))
	switch fi.messageType {
	case "input_stream_data", "output_stream_data":
		if retransmit {
			c.retransmissions.Add(1)
		} else {
			c.data.Add(1)
		}
	case "acknowledge":
		c.acks.Add(1)
	default:
		c.other.Add(1)
	}
}

func (s *stats) legOpened(kind string) {
	s.mu.Lock()
	s.st.Websocket[kind].Opens++
	s.mu.Unlock()
}

func (s *stats) publication(leg, typ string) {
	s.mu.Lock()
	if s.st.Publications == nil {
		s.st.Publications = map[string]int64{}
	}
	s.st.Publications[leg+":"+typ]++
	s.mu.Unlock()
}

func (s *stats) legClosed(kind string) {
	s.mu.Lock()
	s.st.Websocket[kind].Closes++
	s.mu.Unlock()
}

func (s *stats) legRefused() {
	s.mu.Lock()
	s.st.Websocket["client"].Refused++
	s.mu.Unlock()
}

func (s *stats) scheduledClose() {
	s.mu.Lock()
	s.st.ScheduledCloses++
	s.mu.Unlock()
}

func (s *stats) signedLegExpired() {
	s.mu.Lock()
	s.st.SignedLegsExpired++
	s.mu.Unlock()
}

func (s *stats) upgradeRefused(status int) {
	s.mu.Lock()
	s.st.UpgradesRefused[strconv.Itoa(status)]++
	s.mu.Unlock()
}

func (s *stats) droppedAbsent() {
	s.mu.Lock()
	s.st.DroppedAbsent++
	s.mu.Unlock()
}

func (s *stats) faultAPI() {
	s.mu.Lock()
	s.st.APIFaults++
	s.mu.Unlock()
}

func (s *stats) sessionStarted() {
	s.mu.Lock()
	s.st.SessionsStarted++
	s.st.SessionsActive++
	s.mu.Unlock()
}

func (s *stats) sessionEnded() {
	s.mu.Lock()
	s.st.SessionsActive--
	s.mu.Unlock()
}

func (s *stats) violation(v Violation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.ViolationCount[v.Severity]++
	if len(s.st.Violations) < maxViolations {
		s.st.Violations = append(s.st.Violations, v)
	}
}

// Stats returns a deep copy of the counters.
func (s *Server) Stats() Stats {
	s.stats.mu.Lock()
	st := s.stats.st
	out := Stats{
		API: map[string]map[string]int64{}, SigV4Failures: map[string]int64{}, Websocket: map[string]*LegStats{},
		Frames: map[string]*DirStats{}, UpgradesRefused: map[string]int64{}, ViolationCount: map[string]int64{},
		ScheduledCloses: st.ScheduledCloses, SignedLegsExpired: st.SignedLegsExpired, DroppedAbsent: st.DroppedAbsent, APIFaults: st.APIFaults,
		SessionsStarted: st.SessionsStarted, SessionsActive: st.SessionsActive,
		Violations: append([]Violation(nil), st.Violations...),
	}
	for op, m := range st.API {
		c := map[string]int64{}
		for k, v := range m {
			c[k] = v
		}
		out.API[op] = c
	}
	for k, v := range st.SigV4Failures {
		out.SigV4Failures[k] = v
	}
	for k, v := range st.Websocket {
		c := *v
		out.Websocket[k] = &c
	}
	for _, d := range []direction{dirClientToAgent, dirAgentToClient} {
		c := &s.stats.frames[d]
		out.Frames[d.String()] = &DirStats{Frames: c.frames.Load(), Bytes: c.bytes.Load(), DataMessages: c.data.Load(),
			Retransmissions: c.retransmissions.Load(), Acks: c.acks.Load(), Other: c.other.Load()}
	}
	for k, v := range st.UpgradesRefused {
		out.UpgradesRefused[k] = v
	}
	if len(st.Publications) > 0 {
		out.Publications = map[string]int64{}
		for k, v := range st.Publications {
			out.Publications[k] = v
		}
	}
	for k, v := range st.ViolationCount {
		out.ViolationCount[k] = v
	}
	s.stats.mu.Unlock()
	for _, id := range s.Sessions() {
		if ss := s.session(id); ss != nil {
			a := &ss.agentSt
			out.MuxStreamsAccepted += a.MuxStreamsAccepted.Load()
			out.MuxDialsFailed += a.MuxDialsFailed.Load()
			out.MuxBufferedPeak = max(out.MuxBufferedPeak, a.MuxBufferedPeak.Load())
		}
	}
	out.FaultsActed = s.faults.acted.Load()
	is := s.IAM.Stats()
	out.STS = is.STSCalls
	out.STSByCaller = is.STSCallsByCaller
	for k, v := range is.SigV4Failures {
		out.SigV4Failures[k] += v
	}
	return out
}

// Violations returns the recorded violations of at least the given severity
// ("error" or "warning").
func (s *Server) Violations(minSeverity string) []Violation {
	st := s.Stats()
	var out []Violation
	for _, v := range st.Violations {
		if minSeverity == "warning" || v.Severity == "error" {
			out = append(out, v)
		}
	}
	return out
}

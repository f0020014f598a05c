package fakeaws

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

type direction int

const (
	dirClientToAgent direction = iota
	dirAgentToClient
)

func (d direction) String() string {
	if d == dirClientToAgent {
		return "client_to_agent"
	}
	return "agent_to_client"
}

// Fault actions on relayed frames (docs/fakeaws.md section 6).
const (
	ActionDrop           = "drop"
	ActionDuplicate      = "duplicate"
	ActionDelay          = "delay"
	ActionReorder        = "reorder"         // hold Window frames (at most reorderHoldMax), release them reversed
	ActionCorruptPayload = "corrupt-payload" // flip a payload byte, keep the stale digest
	ActionCorruptDigest  = "corrupt-digest"
	ActionHeaderLength   = "header-length" // bump HeaderLength
	ActionTruncate       = "truncate"
	ActionGarbleType     = "garble-type"
)

// FaultRule is one rule of a fault plan: a matcher, an action and a schedule.
type FaultRule struct {
	Name        string   `json:"name,omitempty"`
	Session     string   `json:"session,omitempty"`      // "" any
	Direction   string   `json:"direction,omitempty"`    // client_to_agent, agent_to_client, "" both
	MessageType string   `json:"message_type,omitempty"` // "" any
	PayloadType *int     `json:"payload_type,omitempty"`
	SeqMin      *int64   `json:"seq_min,omitempty"`
	SeqMax      *int64   `json:"seq_max,omitempty"`
	Nth         int      `json:"nth,omitempty"`         // act on the Nth match only (1-based)
	Every       int      `json:"every,omitempty"`       // act on every Every-th match
	Probability float64  `json:"probability,omitempty"` // act with this probability (0: always)
	Count       int      `json:"count,omitempty"`       // stop after this many actions (0: no limit)
	Action      string   `json:"action"`
	Delay       Duration `json:"delay,omitempty"`
	// Jitter, for delay: each frame waits Delay plus a uniform random extra
	// in [0, Jitter), so frames close together may overtake each other, as
	// on a path with variable latency (docs/fakeaws.md section 6, "Delay /
	// jitter").
	Jitter Duration `json:"jitter,omitempty"`
	Window int      `json:"window,omitempty"` // for reorder

	matches atomic.Int64
	acted   atomic.Int64
}

// Duration is a time.Duration that reads and writes as a Go duration string in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (r *FaultRule) validate() error {
	switch r.Action {
	case ActionDrop, ActionDuplicate, ActionDelay, ActionReorder, ActionCorruptPayload, ActionCorruptDigest,
		ActionHeaderLength, ActionTruncate, ActionGarbleType:
	default:
		return fmt.Errorf("unknown fault action %q", r.Action)
	}
	if r.Direction != "" && r.Direction != "client_to_agent" && r.Direction != "agent_to_client" {
		return fmt.Errorf("unknown direction %q", r.Direction)
	}
	if r.Delay < 0 || r.Jitter < 0 {
		return fmt.Errorf("delay and jitter must not be negative")
	}
	if r.Jitter > 0 && r.Action != ActionDelay {
		return fmt.Errorf("jitter applies to the delay action only")
	}
	if r.Action == ActionReorder && r.Window < 2 {
		return fmt.Errorf("reorder needs a window of at least 2")
	}
	return nil
}

func (r *FaultRule) matches_(session string, dir direction, fi frameInfo) bool {
	if r.Session != "" && r.Session != session {
		return false
	}
	if r.Direction != "" && r.Direction != dir.String() {
		return false
	}
	if r.MessageType != "" && r.MessageType != fi.messageType {
		return false
	}
	if r.PayloadType != nil && (!fi.ok || int(fi.payloadType) != *r.PayloadType) {
		return false
	}
	if r.SeqMin != nil && fi.seq < *r.SeqMin {
		return false
	}
	if r.SeqMax != nil && fi.seq > *r.SeqMax {
		return false
	}
	return true
}

// decide counts a match and reports whether the action fires for it.
func (r *FaultRule) decide() bool {
	n := r.matches.Add(1)
	if r.Count > 0 && r.acted.Load() >= int64(r.Count) {
		return false
	}
	if r.Nth > 0 && n != int64(r.Nth) {
		return false
	}
	if r.Every > 0 && n%int64(r.Every) != 0 {
		return false
	}
	if r.Probability > 0 && rand.Float64() >= r.Probability {
		return false
	}
	r.acted.Add(1)
	return true
}

type faultEngine struct {
	mu    sync.Mutex
	rules []*FaultRule
	n     atomic.Int64 // len(rules), for the fast path
	acted atomic.Int64
}

func newFaultEngine() *faultEngine { return &faultEngine{} }

// AddFault installs a fault rule on relayed frames.
func (s *Server) AddFault(r *FaultRule) error {
	if err := r.validate(); err != nil {
		return err
	}
	s.faults.mu.Lock()
	s.faults.rules = append(s.faults.rules, r)
	s.faults.n.Store(int64(len(s.faults.rules)))
	s.faults.mu.Unlock()
	return nil
}

// ClearFaults removes every relay and API fault.
func (s *Server) ClearFaults() {
	s.faults.mu.Lock()
	s.faults.rules = nil
	s.faults.n.Store(0)
	s.faults.mu.Unlock()
	s.mu.Lock()
	s.apiFaults = nil
	s.mu.Unlock()
}

// dirFaults applies the engine's rules to one direction of one session.
type dirFaults struct {
	e       *faultEngine
	session string
	dir     direction
	mu      sync.Mutex
	held    map[*FaultRule][][]byte
	// windows counts each rule's windows, so that a release timer armed for
	// a window that has since filled and gone out leaves the next one be.
	windows map[*FaultRule]int
}

func (e *faultEngine) forDirection(session string, dir direction) *dirFaults {
	return &dirFaults{e: e, session: session, dir: dir, held: map[*FaultRule][][]byte{}, windows: map[*FaultRule]int{}}
}

// apply runs msg through the rules and emits what comes out (nothing,
// once, twice, later, or altered).
func (d *dirFaults) apply(msg []byte, fi frameInfo, emit func([]byte)) {
	if d.e.n.Load() == 0 {
		emit(msg)
		return
	}
	d.e.mu.Lock()
	rules := append([]*FaultRule(nil), d.e.rules...)
	d.e.mu.Unlock()
	for _, r := range rules {
		if !r.matches_(d.session, d.dir, fi) || !r.decide() {
			continue
		}
		d.e.acted.Add(1)
		switch r.Action {
		case ActionDrop:
			return
		case ActionDuplicate:
			emit(msg)
			emit(append([]byte(nil), msg...))
			return
		case ActionDelay:
			m := msg
			time.AfterFunc(r.delayFor(), func() { emit(m) })
			return
		case ActionReorder:
			d.mu.Lock()
			h := append(d.held[r], msg)
			if len(h) < r.Window {
				d.held[r] = h
				if len(h) == 1 {
					// A stream that stops short of a full window would
					// keep its tail forever, which no relay does: what is
					// held goes out after reorderHoldMax at the latest.
					w := d.windows[r]
					time.AfterFunc(reorderHoldMax, func() { d.release(r, w, emit) })
				}
				d.mu.Unlock()
				return
			}
			delete(d.held, r)
			d.windows[r]++
			d.mu.Unlock()
			emitReversed(h, emit)
			return
		default:
			emit(corrupt(r.Action, msg))
			return
		}
	}
	emit(msg)
}

// delayFor is how long a delay rule holds one frame.
func (r *FaultRule) delayFor() time.Duration {
	d := time.Duration(r.Delay)
	if r.Jitter > 0 {
		d += rand.N(time.Duration(r.Jitter))
	}
	return d
}

// reorderHoldMax bounds how long a reorder rule holds frames.
const reorderHoldMax = 200 * time.Millisecond

// release emits, reversed, what r holds of window w, unless that window
// already went out full.
func (d *dirFaults) release(r *FaultRule, w int, emit func([]byte)) {
	d.mu.Lock()
	if d.windows[r] != w {
		d.mu.Unlock()
		return
	}
	h := d.held[r]
	delete(d.held, r)
	d.windows[r]++
	d.mu.Unlock()
	emitReversed(h, emit)
}

func emitReversed(h [][]byte, emit func([]byte)) {
	for i := len(h) - 1; i >= 0; i-- {
		emit(h[i])
	}
}

// corrupt returns an altered copy of a frame.
func corrupt(action string, msg []byte) []byte {
	m := append([]byte(nil), msg...)
	switch action {
	case ActionCorruptPayload:
		if len(m) > 120 {
			m[120+(len(m)-120)/2] ^= 0x5a
		}
	case ActionCorruptDigest:
		if len(m) >= 112 {
			m[90] ^= 0xff
		}
	case ActionHeaderLength:
		if len(m) >= 4 {
			be.PutUint32(m[0:4], 0x7fffffff)
		}
	case ActionTruncate:
		if len(m) > 100 {
			m = m[:100]
		}
	case ActionGarbleType:
		if len(m) >= 36 {
			copy(m[4:36], "garbled_type\x00\x01                  ")
		}
	}
	return m
}

// apiFault answers the next Remaining calls of Op with an error.
type apiFault struct {
	Op        string
	Err       iam.APIError
	Remaining int
}

// FailAPI makes the next n calls of op ("" = any SSM operation) fail with
// the given error type and HTTP status (e.g. ThrottlingException 400,
// InternalServerError 500, ExpiredTokenException 403).
func (s *Server) FailAPI(op, errType string, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := map[string]string{
		"ThrottlingException":   "Rate exceeded",
		"InternalServerError":   "Internal server error (injected)",
		"ExpiredTokenException": "The security token included in the request is expired",
	}[errType]
	if msg == "" {
		msg = errType + " (injected)"
	}
	s.apiFaults = append(s.apiFaults, apiFault{Op: op, Err: iam.APIError{Status: status, Type: errType, Message: msg}, Remaining: n})
}

func (s *Server) takeAPIFault(op string) *iam.APIError {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.apiFaults {
		f := &s.apiFaults[i]
		if f.Remaining > 0 && (f.Op == "" || f.Op == op) {
			f.Remaining--
			e := f.Err
			s.stats.faultAPI()
			return &e
		}
	}
	return nil
}

// upgradeFault: the next remaining upgrades get status.
type upgradeFault struct{ status, remaining int }

// FailUpgrades makes the next n websocket upgrades fail with status.
func (s *Server) FailUpgrades(status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upFault = upgradeFault{status: status, remaining: n}
}

func (s *Server) takeUpgradeFault() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.upFault.remaining <= 0 {
		return 0
	}
	s.upFault.remaining--
	return s.upFault.status
}

// RefuseAgentLegs makes the agent's CreateDataChannel calls for session
// fail (on) or succeed again: with its leg closed, the agent runs out of
// reconnect attempts and gives up (Options.AgentGiveUp).
func (s *Server) RefuseAgentLegs(session string, on bool) error {
	ss := s.session(session)
	if ss == nil {
		return fmt.Errorf("no such session")
	}
	ss.mu.Lock()
	ss.refuseAgent = on
	ss.mu.Unlock()
	return nil
}

// Inject sends raw bytes to a leg ("client" or "agent") of a session, as a
// binary message or, with text, as a text message: synthetic frames and
// garbage for robustness tests.
func (s *Server) Inject(session, which string, data []byte, text bool) error {
	ss := s.session(session)
	if ss == nil {
		return fmt.Errorf("no such session")
	}
	ss.mu.Lock()
	l := ss.client
	if which == "agent" {
		l = ss.agent
	}
	ss.mu.Unlock()
	if l == nil {
		return fmt.Errorf("%s leg not connected", which)
	}
	kind := websocket.BinaryMessage
	if text {
		kind = websocket.TextMessage
	}
	return l.enqueue(kind, data, false)
}

// DropLegs makes the next n client legs fail right after their opening
// frame (accepted, then closed with 1008), as a service that takes the
// upgrade and then refuses the token would.
func (s *Server) DropLegs(n int) {
	s.mu.Lock()
	s.legDrops = n
	s.mu.Unlock()
}

func (s *Server) takeLegDrop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.legDrops > 0 {
		s.legDrops--
		return true
	}
	return false
}

// HalfOpen makes the client leg of a session silent while keeping its TCP
// connection: the fake stops reading it, forwards nothing to it and answers
// no pings.
func (s *Server) HalfOpen(session string, on bool) error {
	ss := s.session(session)
	if ss == nil {
		return fmt.Errorf("no such session")
	}
	ss.mu.Lock()
	ss.noPong = on
	ss.halfOpen = on
	ss.mu.Unlock()
	return nil
}

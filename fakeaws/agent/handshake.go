package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// errHandshakeTimeout carries the real agent's text, which reaches the user
// through channel_closed.
var errHandshakeTimeout = errors.New("Handshake timed out. Please ensure that you have the latest version of the session manager plugin.")

type hsState int

const (
	hsWaiting  hsState = iota // no HandshakeResponse yet
	hsReceived                // the response was handed to the handshake goroutine
	hsTimedOut                // the wait expired; later responses are violations
)

// handshake is the rendezvous between the reader, which receives the
// HandshakeResponse, and the plugin goroutine waiting for it.
type handshake struct {
	mu            sync.Mutex
	state         hsState
	resp          chan []byte // capacity 1: the reader never blocks on it
	clientVersion string
}

// performHandshake runs the agent side of docs/protocol.md section 7 and then
// starts the Port plugin.
func (s *session) performHandshake() error {
	if d := s.q.HandshakeDelay; d > 0 {
		t := s.clk.NewTimer(d)
		select {
		case <-t.C():
		case <-s.ctx.Done():
			t.Stop()
			return s.ctx.Err()
		}
	}
	start := s.clk.Now()
	if !s.q.NoHandshake {
		req, err := s.handshakeRequest()
		if err != nil {
			return err
		}
		// Sequenced stream data (seq 0, SYN): retransmitted until acked, so
		// it reaches a client leg that does not exist yet.
		s.sendStream(wire.PayloadHandshakeRequest, req)
	}

	var payload []byte
	t := s.clk.NewTimer(s.q.HandshakeTimeout)
	select {
	case payload = <-s.hs.resp:
		t.Stop()
	case <-t.C():
		s.hs.mu.Lock()
		if s.hs.state == hsWaiting {
			s.hs.state = hsTimedOut
			s.hs.mu.Unlock()
			return errHandshakeTimeout
		}
		s.hs.mu.Unlock()
		payload = <-s.hs.resp // it raced the timer in; it is there already
	case <-s.ctx.Done():
		t.Stop()
		return s.ctx.Err()
	}

	if err := s.checkHandshakeResponse(payload); err != nil {
		return err
	}

	// The Port session exists before HandshakeComplete goes out, so client
	// data arriving right after it finds a (not yet connected) handler.
	s.portMu.Lock()
	if s.portStopped {
		s.portMu.Unlock()
		return nil
	}
	p := newPortSession(s)
	s.port.Store(&portBox{p})
	s.portMu.Unlock()

	done, err := wire.MarshalPayload(wire.HandshakeComplete{
		HandshakeTimeToComplete: s.clk.Since(start).Nanoseconds(),
		CustomerMessage:         "",
	})
	if err != nil {
		return err
	}
	s.hsComplete.Store(true)
	s.sendStream(wire.PayloadHandshakeComplete, done)
	// The agent dials the target only after HandshakeComplete is sent.
	return p.start()
}

// handshakeRequest builds the HandshakeRequest payload: one SessionType
// action carrying the document's Properties verbatim.
func (s *session) handshakeRequest() ([]byte, error) {
	sessionType := wire.SessionTypePort
	if s.q.SessionTypeOverride != "" {
		sessionType = s.q.SessionTypeOverride
	}
	props := s.cfg.Properties
	if props == nil {
		props = map[string]string{}
	}
	params, err := wire.MarshalPayload(wire.SessionTypeRequest{SessionType: sessionType, Properties: props})
	if err != nil {
		return nil, err
	}
	req := wire.HandshakeRequest{
		AgentVersion:           s.cfg.AgentVersion,
		RequestedClientActions: []wire.RequestedClientAction{{ActionType: wire.ActionSessionType, ActionParameters: params}},
	}
	if s.q.ExtraAction != "" {
		req.RequestedClientActions = append(req.RequestedClientActions,
			wire.RequestedClientAction{ActionType: s.q.ExtraAction, ActionParameters: json.RawMessage(`{}`)})
	}
	return wire.MarshalPayload(req)
}

// handleHandshakeResponse is called by the reader for an in-order
// HandshakeResponse. The real agent's reader blocks forever on a response
// that arrives after the timeout; the fake records it and drops it.
func (s *session) handleHandshakeResponse(payload []byte) {
	s.hs.mu.Lock()
	defer s.hs.mu.Unlock()
	switch s.hs.state {
	case hsWaiting:
		// Handed over only after the ack is written (deliverHandshake), so
		// the ack precedes HandshakeComplete on the wire (docs/protocol.md 7.1).
		s.hs.state = hsReceived
		s.hsPending = append([]byte(nil), payload...)
	case hsTimedOut:
		s.violation("error", "late-handshake-response", "HandshakeResponse arrived after the handshake timed out")
	default:
		s.violation("warning", "duplicate-handshake-response", "a second HandshakeResponse was received")
	}
}

// deliverHandshake hands a received HandshakeResponse to the waiting
// handshake goroutine; the reader calls it once the message is acked.
func (s *session) deliverHandshake() {
	if s.hsPending != nil {
		s.hs.resp <- s.hsPending // capacity 1, used once: never blocks
		s.hsPending = nil
	}
}

// checkHandshakeResponse applies the real agent's checks
// (handleHandshakeResponse in agent/session/datachannel/datachannel.go):
// every processed action, whatever its type, must report ActionStatus 1,
// or the session is cancelled with "<type> failed on client with status
// <n> error: <text>"; an unknown action type that succeeded is only logged.
func (s *session) checkHandshakeResponse(payload []byte) error {
	var r wire.HandshakeResponse
	if err := json.Unmarshal(payload, &r); err != nil {
		s.violation("error", "handshake-response-invalid", err.Error())
		return fmt.Errorf("handshake response: %w", err)
	}
	s.hs.mu.Lock()
	s.hs.clientVersion = r.ClientVersion
	s.hs.mu.Unlock()
	if !isDottedVersion(r.ClientVersion) {
		s.violation("warning", "handshake-client-version", fmt.Sprintf("ClientVersion %q is not a dotted numeric version", r.ClientVersion))
	}
	found := false
	var failed error
	for _, a := range r.ProcessedClientActions {
		if a.ActionType == wire.ActionSessionType {
			found = true
		}
		if a.ActionStatus != wire.ActionSuccess && failed == nil {
			failed = fmt.Errorf("%s failed on client with status %d error: %s", a.ActionType, a.ActionStatus, a.Error)
		}
	}
	if failed != nil {
		return failed
	}
	if !found {
		s.violation("error", "handshake-missing-session-type", "HandshakeResponse does not report the SessionType action")
	}
	return nil
}

// process hands one in-order input message to its handler and reports
// whether it was accepted (to be acked) or the handler was not ready.
func (s *session) process(pt wire.PayloadType, payload []byte) bool {
	switch pt {
	case wire.PayloadHandshakeResponse:
		s.handleHandshakeResponse(payload)
		return true
	case wire.PayloadEncChallengeResponse:
		// KMS is disabled for Port sessions; nothing asked for a challenge.
		s.violation("warning", "unexpected-enc-challenge-response", "EncChallengeResponse on a Port session")
		return true
	}
	if !s.hsComplete.Load() {
		// The real agent acks and silently discards it.
		s.violation("error", "data-before-handshake-complete", fmt.Sprintf("input_stream_data of payload type %d before HandshakeComplete", pt))
		return true
	}
	p := s.port.Load()
	if p == nil {
		return false
	}
	return p.handle(pt, payload)
}

// isDottedVersion reports whether v looks like 1.2.3.4 (numeric components).
func isDottedVersion(v string) bool {
	if v == "" {
		return false
	}
	for _, c := range strings.Split(v, ".") {
		if _, err := strconv.ParseUint(c, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// compareVersions compares dotted versions the way the agent does
// (docs/protocol.md section 11.2): components numerically where both are numeric,
// else as text; when all shared components are equal, fewer components is
// smaller. It returns -1, 0 or +1. This is a deliberate agent quirk, kept
// here rather than using wire.VersionGreater, which is the plugin's stricter
// compare (same number of numeric components or never greater).
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errx := strconv.ParseUint(as[i], 10, 64)
		y, erry := strconv.ParseUint(bs[i], 10, 64)
		if errx == nil && erry == nil {
			if x != y {
				if x < y {
					return -1
				}
				return 1
			}
			continue
		}
		if c := strings.Compare(as[i], bs[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(as) < len(bs):
		return -1
	case len(as) > len(bs):
		return 1
	}
	return 0
}

// clientVersion is the ClientVersion of the HandshakeResponse ("" before it).
func (s *session) clientVersion() string {
	s.hs.mu.Lock()
	defer s.hs.mu.Unlock()
	return s.hs.clientVersion
}

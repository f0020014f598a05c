package fakeaws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/ssmproxy/ssmproxy/fakeaws/agent"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Session states (docs/fakeaws.md section 4).
type sessionState int

const (
	statePending sessionState = iota
	stateConnected
	stateClientDisconnected
	stateAgentDisconnected
	stateTerminating
	stateTerminated
)

func (st sessionState) String() string {
	return [...]string{"Pending", "Connected", "ClientDisconnected", "AgentDisconnected", "Terminating", "Terminated"}[st]
}

type token struct {
	expires time.Time
	used    bool
	agent   bool
}

// session is the service's record of one Session Manager session: its legs,
// tokens, state machine and the agent running it.
type session struct {
	srv       *Server
	id        string
	target    Target
	document  *Document
	props     map[string]string
	principal iam.Principal
	created   time.Time
	val       *validator
	agentSt   agent.Stats

	mu            sync.Mutex
	state         sessionState
	cell          string
	tokens        map[string]*token
	client, agent *leg
	clientEver    bool // a client leg has connected at least once
	lastData      time.Time
	reason        string
	held          [][]byte // frames for an absent client (QueueWhileAbsent)
	heldAgent     [][]byte // frames for an absent agent
	noPong        bool     // half-open fault: stop answering pings
	refuseAgent   bool     // fault: CreateDataChannel fails for the agent
	halfOpen      bool     // half-open fault: the client leg is silent both ways
	faultsClient  *dirFaults
	faultsAgent   *dirFaults
	maxSeqIn      int64 // highest input_stream_data seq seen (retransmission count)
	maxSeqOut     int64
	outFirst      time.Time // first and last new Output from the agent (wall clock)
	outLast       time.Time
	outBytes      int64

	ended       chan struct{}
	endOnce     sync.Once
	agentCancel context.CancelFunc
	agentDone   chan struct{}
	superDone   chan struct{}
	kick        chan struct{}
}

func (s *Server) newSession(cred iam.Credential, t Target, doc *Document, props map[string]string) *session {
	now := s.clk.Now()
	ss := &session{
		srv: s, id: cred.Principal.SessionIDPrefix() + "-" + randomHex(17), target: t, document: doc, props: props,
		principal: cred.Principal, created: now, cell: randomToken()[:40],
		tokens: make(map[string]*token), lastData: now,
		ended: make(chan struct{}), agentDone: make(chan struct{}), superDone: make(chan struct{}),
		kick: make(chan struct{}, 1), maxSeqIn: -1, maxSeqOut: -1,
	}
	ss.val = newValidator(s, ss.id)
	ss.faultsClient = s.faults.forDirection(ss.id, dirClientToAgent)
	ss.faultsAgent = s.faults.forDirection(ss.id, dirAgentToClient)
	s.mu.Lock()
	s.sessions[ss.id] = ss
	s.mu.Unlock()
	s.stats.sessionStarted()
	s.log.Info("session created", "session", ss.id, "target", t.ID, "document", doc.Name)

	ctx, cancel := context.WithCancel(s.ctx)
	ss.agentCancel = cancel
	go ss.runAgent(ctx)
	go ss.supervise()
	return ss
}

func (ss *session) streamURL() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return fmt.Sprintf("%s/v1/data-channel/%s?role=publish_subscribe&cell-number=%s", ss.srv.MGSURL(), ss.id, ss.cell)
}

func (ss *session) rotateCell() {
	ss.mu.Lock()
	ss.cell = randomToken()[:40]
	ss.mu.Unlock()
}

func (ss *session) issueToken() string {
	return ss.newToken(false)
}

func (ss *session) newToken(agentLeg bool) string {
	tok := randomToken()
	ss.mu.Lock()
	ss.tokens[tok] = &token{expires: ss.srv.clk.Now().Add(ss.srv.opts.TokenTTL), agent: agentLeg}
	ss.mu.Unlock()
	return tok
}

func (ss *session) isOver() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.state >= stateTerminating
}

func (ss *session) noteResume() {
	ss.val.resumeCalled()
	if ss.val.channelClosedSent() {
		ss.val.violation(sevError, "resume-after-channel-closed", "ResumeSession called after channel_closed was sent")
	}
}

func (ss *session) noteTerminateAPI() { ss.val.noteTerminate("api") }

// runAgent runs the fake agent for this session; its end ends the session.
func (ss *session) runAgent(ctx context.Context) {
	defer close(ss.agentDone)
	s := ss.srv
	quirks := s.opts.AgentQuirks
	if ss.target.Quirks != nil {
		quirks = *ss.target.Quirks
	}
	if ss.document.SessionType != "Port" && quirks.SessionTypeOverride == "" {
		// The agent runs the document's own session type; a port-only
		// client must refuse it in the handshake.
		quirks.SessionTypeOverride = ss.document.SessionType
	}
	version := s.opts.AgentVersion
	if ss.target.AgentVersion != "" {
		version = ss.target.AgentVersion
	}
	cfg := agent.Config{
		SessionID:    ss.id,
		InstanceID:   ss.target.ID,
		AgentVersion: version,
		Properties:   ss.props,
		CreateDataChannel: func(ctx context.Context) (string, string, error) {
			if ss.isOver() {
				return "", "", fmt.Errorf("%w", agent.ErrSessionTerminated)
			}
			ss.mu.Lock()
			refuse := ss.refuseAgent
			ss.mu.Unlock()
			if refuse {
				return "", "", errors.New("injected: CreateDataChannel refused")
			}
			return ss.streamURL(), ss.newToken(true), nil
		},
		DialTarget:  ss.dialTarget,
		TLS:         s.agentTLS(),
		DefaultHost: "127.0.0.1",
		Quirks:      quirks,
		Log:         s.log.With("agent", ss.target.ID, "session", ss.id),
		Violation: func(sev, code, detail string) {
			ss.val.violation(severity(sev), code, detail)
		},
		Stats: &ss.agentSt,
	}
	if ss.target.Resolve != nil {
		resolve := ss.target.Resolve
		cfg.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			strs, err := resolve(ctx, host)
			if err != nil {
				return nil, err
			}
			out := make([]netip.Addr, 0, len(strs))
			for _, a := range strs {
				if ip, err := netip.ParseAddr(a); err == nil {
					out = append(out, ip)
				}
			}
			return out, nil
		}
	}
	err := agent.Run(ctx, cfg)
	if errors.Is(err, agent.ErrGaveUp) && s.opts.AgentGiveUp == GiveUpSilent {
		// The real agent logs and stops; MGS says nothing to the client,
		// whose session stays open until it gives up itself, terminates
		// or idles out (docs/fakeaws.md 4.1).
		s.log.Info("agent gave up; the client is not told", "session", ss.id, "err", err)
		return
	}
	reason := ""
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, agent.ErrSessionTerminated) {
		reason = err.Error()
		s.log.Info("agent session failed", "session", ss.id, "err", err)
	}
	ss.terminate(reason)
}

// dialTarget applies the target's port map, else dials the address as given.
func (ss *session) dialTarget(ctx context.Context, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if mapped, ok := ss.target.PortMap[port]; ok && (host == "127.0.0.1" || host == "localhost") {
			addr = mapped
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// supervise runs the session's timers: scheduled "Bye" closes, the idle
// timeout and the maximum duration.
func (ss *session) supervise() {
	defer close(ss.superDone)
	s := ss.srv
	tick := s.clk.NewTimer(time.Second)
	defer tick.Stop()
	var bye <-chan time.Time
	var byeTimer interface{ Stop() bool }
	if s.opts.CloseEvery > 0 {
		t := s.clk.NewTimer(s.opts.CloseEvery)
		byeTimer = t
		bye = t.C()
		defer func() { byeTimer.Stop() }()
	}
	for {
		select {
		case <-ss.ended:
			return
		case <-bye:
			ss.scheduledClose()
			t := s.clk.NewTimer(s.opts.CloseEvery)
			byeTimer = t
			bye = t.C()
		case <-tick.C():
			tick.Reset(time.Second)
			now := s.clk.Now()
			ss.mu.Lock()
			idle := now.Sub(ss.lastData)
			ss.mu.Unlock()
			if idle >= s.opts.IdleTimeout {
				ss.terminate("Session timed out due to inactivity.")
			} else if s.opts.MaxSessionDuration > 0 && now.Sub(ss.created) >= s.opts.MaxSessionDuration {
				ss.terminate("Session reached the maximum session duration.")
			}
		}
	}
}

func (ss *session) scheduledClose() {
	which := ss.srv.opts.CloseLegs
	ss.srv.stats.scheduledClose()
	if which == "both" || which == "client" {
		_ = ss.closeLeg("client", websocket.CloseNormalClosure, "Bye")
	}
	if which == "both" || which == "agent" {
		_ = ss.closeLeg("agent", websocket.CloseNormalClosure, "Bye")
	}
}

func (ss *session) closeLeg(which string, code int, text string) error {
	ss.mu.Lock()
	var l *leg
	switch which {
	case "client":
		l = ss.client
	case "agent":
		l = ss.agent
		if l != nil {
			// The agent's leg is gone as soon as MGS closes it: the client
			// hears pause_publication now, not after the socket drained.
			// (A client leg's end is left to detach, which also tells the
			// validator.)
			ss.leaveLocked(l)
		}
	default:
		ss.mu.Unlock()
		return fmt.Errorf("unknown leg %q", which)
	}
	ss.mu.Unlock()
	if l == nil {
		return errors.New("leg not connected")
	}
	l.close(code, text, code == 0)
	return nil
}

// terminate moves the session to Terminating, sends channel_closed to every
// connected leg, closes them and marks the session Terminated.
func (ss *session) terminate(reason string) {
	ss.mu.Lock()
	if ss.state >= stateTerminating {
		ss.mu.Unlock()
		return
	}
	ss.state = stateTerminating
	ss.reason = reason
	client, agentLeg := ss.client, ss.agent
	ss.mu.Unlock()
	ss.srv.log.Info("session terminating", "session", ss.id, "reason", reason)

	for _, l := range []*leg{client, agentLeg} {
		if l == nil {
			continue
		}
		if frame, err := ss.channelClosedFrame(reason); err == nil {
			_ = l.enqueue(websocket.BinaryMessage, frame, false)
			if l.kind == "client" {
				ss.val.noteChannelClosed()
			}
		}
	}
	// The agent drains its outgoing buffer for up to 2 s after channel_closed.
	go func() {
		select {
		case <-ss.agentDone:
		case <-time.After(3 * time.Second):
			ss.agentCancel()
			<-ss.agentDone
		}
		ss.mu.Lock()
		client, agentLeg := ss.client, ss.agent
		ss.state = stateTerminated
		ss.mu.Unlock()
		for _, l := range []*leg{client, agentLeg} {
			if l != nil {
				l.close(websocket.CloseNormalClosure, "", false)
			}
		}
		// Checks first: whoever waits on ended reads their results.
		ss.val.finish()
		ss.srv.stats.sessionEnded()
		ss.endOnce.Do(func() { close(ss.ended) })
	}()
}

func (ss *session) wait() {
	<-ss.ended
	<-ss.superDone
	<-ss.agentDone
}

func (ss *session) channelClosedFrame(reason string) ([]byte, error) {
	now := ss.srv.clk.Now()
	id := uuid.New()
	payload, err := wire.MarshalPayload(wire.ChannelClosed{
		MessageID: id.String(), CreatedDate: now.UTC().Format("2006-01-02T15:04:05.000Z"),
		DestinationID: ss.target.ID, SessionID: ss.id, MessageType: wire.TypeChannelClosed,
		SchemaVersion: 1, Output: reason,
	})
	if err != nil {
		return nil, err
	}
	return wire.Encode(&wire.Frame{MessageType: wire.TypeChannelClosed, SchemaVersion: 1, CreatedDate: uint64(now.UnixMilli()),
		MessageID: id, Payload: payload})
}

func (ss *session) publicationFrame(kind string) []byte {
	f := &wire.Frame{MessageType: kind, SchemaVersion: 1, CreatedDate: uint64(ss.srv.clk.Now().UnixMilli()), MessageID: uuid.New()}
	b, _ := wire.Encode(f)
	if ss.srv.opts.PublicationHeaders == HeadersMinimal {
		// Zero date and digest: the minimal header MGS appears to send
		// (docs/fakeaws.md 4.1); the real agent's Validate drops it.
		clear(b[40:48])
		clear(b[80:112])
	}
	return b
}

// stateLocked recomputes the connected/disconnected state; ss.mu held.
func (ss *session) stateLocked() {
	if ss.state >= stateTerminating {
		return
	}
	switch {
	case ss.client != nil && ss.agent != nil:
		if ss.state != statePending || ss.val.handshakeAcked() {
			ss.state = stateConnected
		}
	case ss.client == nil && ss.agent != nil && ss.clientEver:
		ss.state = stateClientDisconnected
	case ss.agent == nil && ss.client != nil:
		ss.state = stateAgentDisconnected
	}
}

// consumeToken validates and consumes an opening token; it reports the leg
// kind the token was issued for.
func (ss *session) consumeToken(tok string) (agentLeg bool, err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	t, ok := ss.tokens[tok]
	switch {
	case !ok:
		return false, errors.New("unknown token")
	case t.used:
		return t.agent, errors.New("token already used")
	case !ss.srv.clk.Now().Before(t.expires):
		return t.agent, errors.New("token expired")
	}
	t.used = true
	return t.agent, nil
}

func isLoopbackRemote(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() || strings.EqualFold(host, "localhost")
}

// unmarshalOpening decodes the first (text) frame of either leg.
func unmarshalOpening(b []byte) (wire.OpenDataChannel, error) {
	var o wire.OpenDataChannel
	err := json.Unmarshal(b, &o)
	return o, err
}

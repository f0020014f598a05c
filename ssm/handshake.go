package ssm

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// handshake is the session's side of the agent's handshake
// (docs/protocol.md 7): it answers the HandshakeRequest, refuses what
// ssmproxy cannot serve (other session types, port forwarding, KMS), and opens the gate for
// data at HandshakeComplete.
type handshake struct {
	sessionID, clientVersion string
	document                 string // for the refusal of a port-forwarding document
	// portForwarding: the caller speaks the LocalPortForwarding modes
	// (Config.PortForwarding), so the handshake accepts them.
	portForwarding bool
	log            *slog.Logger

	ready     chan struct{} // closed at HandshakeComplete
	readyOnce sync.Once
	version   atomic.Value                          // the agent's version, a string
	pending   atomic.Pointer[wire.HandshakeRequest] // parsed by deliver, answered once its ack is queued
	// requested: a HandshakeRequest was taken. Only the first is ever
	// answered (docs/protocol.md 7.1).
	requested atomic.Bool
	// localPortForwarding: the SessionType action named type
	// LocalPortForwarding (and the caller accepted it).
	localPortForwarding atomic.Bool

	mu      sync.Mutex
	refusal error // we refused the handshake: the session's end reason
}

func newHandshake(sessionID, clientVersion, document string, portForwarding bool, log *slog.Logger) *handshake {
	h := &handshake{sessionID: sessionID, clientVersion: clientVersion, document: document,
		portForwarding: portForwarding, log: log, ready: make(chan struct{})}
	h.version.Store("")
	return h
}

func (h *handshake) agentVersion() string { return h.version.Load().(string) }

func (h *handshake) isReady() bool {
	select {
	case <-h.ready:
		return true
	default:
		return false
	}
}

// request parses a HandshakeRequest and holds it until its ack is queued.
// A later one (a new sequence number: a resend of the first is a duplicate
// the receiver re-acks without delivering) is acked like any message and
// otherwise ignored, with a warning. The real agent sends exactly one;
// answering another would take a slot of the send window, and the reader
// that answers must never wait for one: with the window full of data the
// agent has not acked, only the reader can bring the acks that free it
// (docs/protocol.md 7.1).
func (h *handshake) request(p []byte) error {
	if h.requested.Swap(true) {
		h.log.Warn("ignoring a repeated HandshakeRequest from the agent", "ready", h.isReady())
		return nil
	}
	var req wire.HandshakeRequest
	if err := json.Unmarshal(p, &req); err != nil {
		return &HandshakeRefusedError{SessionID: h.sessionID, What: "malformed handshake request: " + err.Error()}
	}
	h.pending.Store(&req)
	return nil
}

// takePending returns the request waiting for an answer, once.
func (h *handshake) takePending() *wire.HandshakeRequest {
	if h.pending.Load() == nil {
		return nil
	}
	return h.pending.Swap(nil)
}

func (h *handshake) refuse(err error) {
	h.mu.Lock()
	h.refusal = err
	h.mu.Unlock()
}

// refused is our refusal of the handshake, if any.
func (h *handshake) refused() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refusal
}

// answer builds the HandshakeResponse for a HandshakeRequest
// (docs/protocol.md 7). It returns a non-nil error when the session cannot
// go on (a session type other than Port, KMS encryption); the response still
// reports the refusal to the agent.
func (h *handshake) answer(req *wire.HandshakeRequest) (wire.HandshakeResponse, error) {
	h.version.Store(req.AgentVersion)
	h.log.Debug("handshake request", "agentVersion", req.AgentVersion)
	resp := wire.HandshakeResponse{ClientVersion: h.clientVersion}
	var refusal error
	sessionType := false
	for _, a := range req.RequestedClientActions {
		pa := wire.ProcessedClientAction{ActionType: a.ActionType, ActionStatus: wire.ActionSuccess}
		switch a.ActionType {
		case wire.ActionSessionType:
			var st wire.SessionTypeRequest
			if err := json.Unmarshal(a.ActionParameters, &st); err != nil {
				pa.ActionStatus = wire.ActionFailed
				pa.Error = "malformed SessionType parameters: " + err.Error()
				refusal = &HandshakeRefusedError{SessionID: h.sessionID, What: pa.Error}
				break
			}
			if st.SessionType != wire.SessionTypePort {
				pa.ActionStatus = wire.ActionUnsupported
				pa.Error = fmt.Sprintf("ssmproxy supports only Port sessions, not %q", st.SessionType)
				refusal = &HandshakeRefusedError{SessionID: h.sessionID,
					What: fmt.Sprintf("the document started a %q session; ssmproxy supports only port documents", st.SessionType)}
				break
			}
			if st.Properties[wire.PropertyType] == wire.PortTypeLocalPortForwarding && h.portForwarding {
				h.localPortForwarding.Store(true)
			} else if st.Properties[wire.PropertyType] == wire.PortTypeLocalPortForwarding {
				// Whatever the document is called: the agent would speak
				// smux (11.4) and ssh would get its frames.
				pa.ActionStatus = wire.ActionUnsupported
				pa.Error = "this ssmproxy command does not carry port forwarding (type LocalPortForwarding); use ssmproxy forward"
				refusal = &PortForwardingError{SessionID: h.sessionID, Document: h.document}
				break
			}
			sessionType = true
		case wire.ActionKMSEncryption:
			pa.ActionStatus = wire.ActionUnsupported
			pa.Error = "KMS encryption is not supported by ssmproxy"
			refusal = &HandshakeRefusedError{SessionID: h.sessionID,
				What: "the agent requested KMS encryption, which port sessions never use and ssmproxy does not implement"}
		default:
			pa.ActionStatus = wire.ActionUnsupported
			pa.Error = fmt.Sprintf("unsupported action %q", a.ActionType)
			h.log.Warn("agent requested an unknown handshake action", "action", a.ActionType)
		}
		resp.ProcessedClientActions = append(resp.ProcessedClientActions, pa)
	}
	if !sessionType && refusal == nil {
		refusal = &HandshakeRefusedError{SessionID: h.sessionID, What: "the handshake request named no session type"}
	}
	return resp, refusal
}

// respondHandshake answers the agent; it runs after the ack for the
// request has been queued, as the plugin does.
func (s *Session) respondHandshake(req *wire.HandshakeRequest) {
	resp, refusal := s.hs.answer(req)
	b, err := wire.MarshalPayload(resp)
	if err == nil {
		err = s.send.enqueue(s.ctx, wire.PayloadHandshakeResponse, b)
	}
	if err != nil && refusal == nil {
		refusal = fmt.Errorf("send handshake response: %w", err)
	}
	s.out.wake()
	if refusal != nil {
		// The agent ends the session on the refusal; whichever comes first,
		// the refusal is the reason reported.
		s.hs.refuse(refusal)
		// Give the response a moment to reach the agent, then end.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.Drain(time.Second)
			s.finish(refusal)
		}()
	}
}

// complete opens the gate for data.
func (h *handshake) complete(p []byte) {
	var hc wire.HandshakeComplete
	if err := json.Unmarshal(p, &hc); err != nil {
		h.log.Warn("malformed HandshakeComplete", "err", err)
	}
	if hc.CustomerMessage != "" {
		// Never stdout: it belongs to ssh.
		h.log.Info("agent message", "message", hc.CustomerMessage)
	}
	h.readyOnce.Do(func() { close(h.ready) })
	h.log.Debug("handshake complete")
}

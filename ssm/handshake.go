package ssm

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// answerHandshake builds the HandshakeResponse for a HandshakeRequest
// (protocol.md section 7). It returns a non-nil error when the session cannot
// go on (a session type other than Port, KMS encryption); the response still
// reports the refusal to the agent.
func (s *Session) answerHandshake(req *wire.HandshakeRequest) (wire.HandshakeResponse, error) {
	resp := wire.HandshakeResponse{ClientVersion: s.cfg.ClientVersion}
	var refusal error
	for _, a := range req.RequestedClientActions {
		pa := wire.ProcessedClientAction{ActionType: a.ActionType, ActionStatus: wire.ActionSuccess}
		switch a.ActionType {
		case wire.ActionSessionType:
			var st wire.SessionTypeRequest
			if err := json.Unmarshal(a.ActionParameters, &st); err != nil {
				pa.ActionStatus = wire.ActionFailed
				pa.Error = "malformed SessionType parameters: " + err.Error()
				refusal = &HandshakeRefusedError{SessionID: s.info.SessionID, What: pa.Error}
				break
			}
			if st.SessionType != wire.SessionTypePort {
				pa.ActionStatus = wire.ActionUnsupported
				pa.Error = fmt.Sprintf("ssmproxy supports only Port sessions, not %q", st.SessionType)
				refusal = &HandshakeRefusedError{SessionID: s.info.SessionID,
					What: fmt.Sprintf("the document started a %q session; ssmproxy supports only port documents", st.SessionType)}
				break
			}
			s.properties = st.Properties
		case wire.ActionKMSEncryption:
			pa.ActionStatus = wire.ActionUnsupported
			pa.Error = "KMS encryption is not supported by ssmproxy"
			refusal = &HandshakeRefusedError{SessionID: s.info.SessionID,
				What: "the agent requested KMS encryption, which port sessions never use and ssmproxy does not implement"}
		default:
			pa.ActionStatus = wire.ActionUnsupported
			pa.Error = fmt.Sprintf("unsupported action %q", a.ActionType)
			s.log.Warn("agent requested an unknown handshake action", "action", a.ActionType)
		}
		resp.ProcessedClientActions = append(resp.ProcessedClientActions, pa)
	}
	if s.properties == nil && refusal == nil {
		refusal = &HandshakeRefusedError{SessionID: s.info.SessionID, What: "the handshake request named no session type"}
	}
	return resp, refusal
}

// handleHandshakeRequest answers the agent; it runs after the ack for the
// request has been queued, as the plugin does.
func (s *Session) handleHandshakeRequest(req *wire.HandshakeRequest) {
	s.agentVersion.Store(req.AgentVersion)
	s.log.Debug("handshake request", "agentVersion", req.AgentVersion)
	resp, refusal := s.answerHandshake(req)
	b, err := wire.MarshalPayload(resp)
	if err == nil {
		err = s.send.enqueue(s.ctx, wire.PayloadHandshakeResponse, b)
	}
	if err != nil && refusal == nil {
		refusal = fmt.Errorf("send handshake response: %w", err)
	}
	s.wake()
	if refusal != nil {
		// The agent ends the session on the refusal; whichever comes first,
		// the refusal is the reason reported.
		s.mu.Lock()
		s.refusal = refusal
		s.mu.Unlock()
		// Give the response a moment to reach the agent, then end.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.Drain(time.Second)
			s.fail(refusal)
		}()
	}
}

func (s *Session) handleHandshakeComplete(p []byte) {
	var hc wire.HandshakeComplete
	if err := json.Unmarshal(p, &hc); err != nil {
		s.log.Warn("malformed HandshakeComplete", "err", err)
	}
	if hc.CustomerMessage != "" {
		// Never stdout: it belongs to ssh.
		s.log.Info("agent message", "message", hc.CustomerMessage)
	}
	s.readyOnce.Do(func() { close(s.ready) })
	s.log.Debug("handshake complete")
}

package ssm

import (
	"errors"
	"fmt"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// ErrInvalidConfig is wrapped by every error of Config.Verify.
var ErrInvalidConfig = errors.New("ssm: invalid config")

// HandshakeError: the agent never completed the handshake.
type HandshakeError struct {
	SessionID string
	Timeout   time.Duration
	Reason    string
}

func (e *HandshakeError) Error() string {
	if e.Timeout > 0 {
		return fmt.Sprintf("session %s: no handshake from the agent within %s (is the agent healthy and able to reach Session Manager?)", e.SessionID, e.Timeout)
	}
	if e.Reason != "" {
		return fmt.Sprintf("session %s: the session ended during the handshake: %s", e.SessionID, e.Reason)
	}
	return fmt.Sprintf("session %s: the session ended during the handshake", e.SessionID)
}

// HandshakeRefusedError: the agent asked for something ssmproxy cannot do.
type HandshakeRefusedError struct {
	SessionID string
	What      string
}

func (e *HandshakeRefusedError) Error() string {
	return fmt.Sprintf("session %s: %s", e.SessionID, e.What)
}

// ResumeError: the data channel was lost and could not be resumed within the
// budget.
type ResumeError struct {
	SessionID string
	Attempts  int
	Elapsed   time.Duration
	Last      error
}

func (e *ResumeError) Error() string {
	return fmt.Sprintf("session %s: data channel lost; %d reconnect attempts over %s failed, last: %v",
		e.SessionID, e.Attempts, e.Elapsed.Round(time.Second), e.Last)
}

func (e *ResumeError) Unwrap() error { return e.Last }

// SessionEndedError: the service ended the session while the data channel
// was away (idle timeout, maximum duration, or terminated elsewhere).
type SessionEndedError struct {
	SessionID string
	Detail    string
}

func (e *SessionEndedError) Error() string {
	return fmt.Sprintf("session %s was ended by the service (%s)", e.SessionID, e.Detail)
}

// NoProgressError: our data stayed unacked while nothing at all came from
// the agent for the no-progress timeout, with the data channel up
// (docs/protocol.md 9.4). The agent has most likely given up reconnecting.
type NoProgressError struct {
	SessionID string
	Unacked   int
	Silence   time.Duration
}

func (e *NoProgressError) Error() string {
	messages := "messages"
	if e.Unacked == 1 {
		messages = "message"
	}
	return fmt.Sprintf("session %s: no progress: %d %s unacked and nothing from the agent for %s; the agent is not reachable",
		e.SessionID, e.Unacked, messages, e.Silence.Round(time.Second))
}

// PortForwardingError: the document is a port-forwarding one (Properties
// type LocalPortForwarding). The agent would multiplex the stream with smux
// (docs/protocol.md 11.4) and a Session that does not carry the port modes
// (Config.PortForwarding unset) would hand smux frames to ssh. Refused by
// name before StartSession (SessionID empty) or in the handshake for any
// other document.
type PortForwardingError struct {
	SessionID string // empty when refused before a session was started
	Document  string
}

func (e *PortForwardingError) Error() string {
	msg := fmt.Sprintf("document %s is a port-forwarding document (type %s): the agent multiplexes such sessions with smux, "+
		"which connect does not relay as a byte stream; use \"ssmproxy forward\", \"ssmproxy connect --via\", or a document that forwards one connection, such as %s",
		e.Document, wire.PortTypeLocalPortForwarding, DocumentSSH)
	if e.SessionID != "" {
		msg = "session " + e.SessionID + ": " + msg
	}
	return msg
}

package ssm

import (
	"bytes"
	"encoding/json"

	"github.com/ssmproxy/ssmproxy/internal/redact"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Dispatch: what the session does with each frame a leg reads (the
// legHandler side of the session). Stream data goes through the receiver
// (docs/protocol.md 8.3) and is acked; acks feed the sender; channel_closed
// ends the session; pause/start publication steer the sender (8.8).

// handleFrame dispatches one binary message from a leg's reader. It reports
// whether the message was a valid frame.
func (s *Session) handleFrame(b []byte) bool {
	var fr wire.Frame
	f := &fr
	if err := wire.DecodeInto(b, f); err != nil {
		// Dropped without an ack: the agent resends (docs/protocol.md 4.4).
		s.invalidFrames.Add(1)
		s.log.Debug("dropping invalid frame", "err", err)
		return false
	}
	switch f.MessageType {
	case wire.TypeOutputStreamData:
		// From the agent: progress (9.4), even a duplicate.
		s.prog.heard()
		s.send.setPaused(false)
		s.handleStreamData(f)
	case wire.TypeAcknowledge:
		s.send.setPaused(false)
		seq, ok := wire.ParseAckSequence(f.Payload)
		if !ok {
			s.invalidFrames.Add(1)
			s.log.Debug("dropping malformed acknowledge")
			return false
		}
		s.prog.heard()
		s.send.ack(seq)
	case wire.TypeChannelClosed:
		var cc wire.ChannelClosed
		_ = json.Unmarshal(f.Payload, &cc)
		s.mu.Lock()
		s.peerClosed = true
		s.closeReason = redact.String(cc.Output) // service text, shown to the user
		s.mu.Unlock()
		s.log.Info("channel closed by the service", "output", s.closeReason)
		// After our refusal of the handshake, or once we gave up on a
		// silent agent, that is the reason.
		s.finish(s.ownReason())
	case wire.TypePausePublication:
		s.log.Debug("pause_publication")
		s.send.setPaused(true)
	case wire.TypeStartPublication:
		s.log.Debug("start_publication")
		s.send.setPaused(false)
		s.out.wake()
	default:
		s.log.Debug("dropping frame of unknown type", "type", f.MessageType)
	}
	return true
}

// crossTraffic (legHandler) is the smaller of the bytes received and the
// bytes sent: it grows only when the quieter direction moves. A download
// (data in, acks out) or an upload (data out, acks in) leaves it still, and
// the socket reads may wait (internal/coalesce); a request and its answer
// move it, and the answer is read at once. Who waits for the acks of an
// upload is only our own window, far from full at the agent's pace.
func (s *Session) crossTraffic() int64 { return min(s.deliv.received(), s.bytesOut.Load()) }

// dropMessage notes a websocket message that is not binary.
func (s *Session) dropMessage(messageType, size int) {
	s.invalidFrames.Add(1)
	s.log.Debug("dropping a non-binary websocket message", "type", messageType, "len", size)
}

// handleStreamData applies the receive rules (docs/protocol.md 8.3) to one
// output_stream_data frame and acks what they accept. Whatever the peer
// sends, what it can make us hold stays bounded (8.6): a message that needs
// an ack while the ack queue is full is not taken at all, and the receiver
// refuses oversize payloads, numbers far ahead and what does not fit.
func (s *Session) handleStreamData(f *wire.Frame) {
	if s.acks.full() {
		return
	}
	v := s.recv.receive(f.SequenceNumber, f.PayloadType, f.Payload)
	if v == verdictOversize {
		// Once per session: a hostile peer could otherwise flood the log.
		if s.oversizeWarned.CompareAndSwap(false, true) {
			s.log.Warn("dropping stream messages with oversize payloads (no ack)",
				"seq", f.SequenceNumber, "len", len(f.Payload), "max", MaxStreamPayload)
		}
		return
	}
	if v == verdictDrop || !s.acks.ack(f.SequenceNumber, f.MessageID) {
		return
	}
	s.out.wake()
	// The ack for a handshake request goes out before we answer it, as the
	// plugin does.
	if req := s.hs.takePending(); req != nil {
		s.respondHandshake(req)
	}
}

// deliver is the receiver's in-order callback. It returns false when the
// session cannot take the message yet; the receiver then holds it.
func (s *Session) deliver(pt wire.PayloadType, p []byte) bool {
	switch pt {
	case wire.PayloadOutput:
		if !s.hs.isReady() {
			// Output before HandshakeComplete (agents too old to
			// handshake): held until the handshake completes.
			return false
		}
		return s.deliv.push(p)
	case wire.PayloadHandshakeRequest:
		if err := s.hs.request(p); err != nil {
			s.log.Warn("malformed HandshakeRequest", "err", err)
			s.finish(err)
		}
	case wire.PayloadHandshakeComplete:
		s.hs.complete(p)
	case wire.PayloadEncChallengeRequest:
		s.finish(&HandshakeRefusedError{SessionID: s.info.SessionID, What: "the agent requested a KMS challenge, which ssmproxy does not implement"})
	case wire.PayloadFlag:
		fl, err := wire.ParseFlag(p)
		if err != nil {
			s.log.Warn("malformed flag from the agent", "bytes", len(p))
			break
		}
		s.log.Debug("flag from the agent", "flag", fl.String())
		if s.cfg.OnFlag != nil {
			s.cfg.OnFlag(fl)
		}
	case wire.PayloadStdErr, wire.PayloadError:
		s.log.Info("agent error output", "text", string(bytes.TrimSpace(p)))
	default:
		s.log.Debug("ignoring stream payload", "payloadType", pt)
	}
	return true
}

package fakeaws

import (
	"encoding/binary"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

const (
	// openingDeadline bounds the wait for a leg's opening text frame.
	openingDeadline = 10 * time.Second
	// maxLegMessage bounds one websocket message on either leg.
	maxLegMessage = 1 << 20
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  64 << 10,
	WriteBufferSize: 16 << 10,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// handleDataChannel is MGS: it upgrades a leg, authenticates it by its
// opening frame and relays frames between the two legs of the session.
func (s *Server) handleDataChannel(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/data-channel/")
	ss := s.session(id)
	if ss == nil {
		http.Error(w, "session not found", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	if q.Get("role") != "publish_subscribe" {
		http.Error(w, "role=publish_subscribe required", http.StatusBadRequest)
		return
	}
	if s.opts.StrictCellNumber {
		ss.mu.Lock()
		cell := ss.cell
		ss.mu.Unlock()
		if q.Get("cell-number") != cell {
			http.Error(w, "stale cell-number", http.StatusForbidden)
			return
		}
	}
	if ss.isOver() {
		http.Error(w, "Session is already terminated", http.StatusForbidden)
		return
	}
	if status := s.takeUpgradeFault(); status != 0 {
		s.stats.upgradeRefused(status)
		http.Error(w, "injected upgrade failure", status)
		return
	}
	// SigV4 on the upgrade is optional unless required; when present it
	// must verify (service ssmmessages).
	signer, aerr, signed := s.IAM.VerifyPresent(r, "ssmmessages")
	if signed && aerr != nil {
		http.Error(w, aerr.Type+": "+aerr.Message, http.StatusForbidden)
		return
	}
	if !signed && s.opts.RequireSignedUpgrade {
		// Only client legs are signed; the agent's token is its credential.
		// We cannot know the leg yet, so requirement applies after opening.
		r.Header.Set("X-Fake-Unsigned", "1")
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(maxLegMessage)
	_ = ws.SetReadDeadline(time.Now().Add(openingDeadline))
	mt, first, err := ws.ReadMessage()
	if err != nil {
		ss.val.violation(sevError, "opening-frame-missing", "no opening frame within "+openingDeadline.String()+": "+err.Error())
		ws.Close()
		return
	}
	_ = ws.SetReadDeadline(time.Time{})
	if mt != websocket.TextMessage {
		ss.val.violation(sevError, "opening-frame-not-text", "the first frame of a leg must be a text frame")
		closeWith(ws, websocket.ClosePolicyViolation, "opening frame must be text")
		return
	}
	o, err := unmarshalOpening(first)
	if err != nil {
		ss.val.violation(sevError, "opening-frame-json", err.Error())
		closeWith(ws, websocket.ClosePolicyViolation, "malformed opening frame")
		return
	}
	agentLeg, terr := ss.consumeToken(o.TokenValue)
	if terr != nil {
		if !agentLeg {
			ss.val.violation(sevError, "opening-token", terr.Error())
		}
		s.stats.legRefused()
		closeWith(ws, websocket.ClosePolicyViolation, "invalid token: "+terr.Error())
		return
	}
	kind := "client"
	if agentLeg {
		kind = "agent"
	} else {
		ss.val.clientOpening(o)
		if s.takeLegDrop() {
			// Fault: accept the leg, then drop it at once.
			closeWith(ws, websocket.ClosePolicyViolation, "injected: leg dropped after opening")
			return
		}
		if r.Header.Get("X-Fake-Unsigned") != "" {
			closeWith(ws, websocket.ClosePolicyViolation, "signature required")
			return
		}
	}
	l := newLeg(kind, ws)
	ws.SetPingHandler(func(data string) error {
		ss.mu.Lock()
		noPong := ss.noPong
		ss.mu.Unlock()
		if !noPong {
			_ = l.enqueue(websocket.PongMessage, []byte(data), false)
		}
		return nil
	})
	ws.SetCloseHandler(func(int, string) error { return nil })
	ss.attach(l)
	if signed && !signer.Expires.IsZero() {
		// A signed leg is bound to the credentials that signed it: the
		// service closes it when they expire (SMP #136).
		go s.closeAtExpiry(l, signer.Expires)
	}
	go l.writer()
	ss.detach(l, ss.relay(l))
}

// closeAtExpiry closes l with 1000 "Bye" when the signing credentials
// expire, unless the leg ends first.
func (s *Server) closeAtExpiry(l *leg, expires time.Time) {
	t := s.clk.NewTimer(expires.Sub(s.clk.Now()))
	defer t.Stop()
	select {
	case <-t.C():
		s.stats.signedLegExpired()
		l.close(websocket.CloseNormalClosure, "Bye", false)
	case <-l.done:
	}
}

func closeWith(ws *websocket.Conn, code int, text string) {
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	ws.Close()
}

// attach makes l the session's leg of its kind, replacing any old one, and
// tells the peer that publication may go on (unless the Publication variant
// never says so: docs/fakeaws.md 4.1). Publication frames are queued
// under ss.mu so a concurrent detach cannot reorder pause after start.
func (ss *session) attach(l *leg) {
	ss.mu.Lock()
	var old, peer *leg
	var held [][]byte
	if l.kind == "client" {
		old, ss.client, peer = ss.client, l, ss.agent
		ss.clientEver = true
		held, ss.held = ss.held, nil
	} else {
		old, ss.agent, peer = ss.agent, l, ss.client
		held, ss.heldAgent = ss.heldAgent, nil
	}
	ss.stateLocked()
	if peer != nil && ss.srv.opts.Publication == PublicationAlways {
		_ = peer.enqueue(websocket.BinaryMessage, ss.publicationFrame(wire.TypeStartPublication), false)
		ss.srv.stats.publication(peer.kind, wire.TypeStartPublication)
	}
	ss.mu.Unlock()
	ss.srv.stats.legOpened(l.kind)
	if old != nil {
		old.close(websocket.CloseNormalClosure, "replaced", false)
	}
	for _, f := range held {
		_ = l.send(f)
	}
}

// detach removes l if it is still current, and pauses the peer (unless the
// Publication variant is PublicationNever).
func (ss *session) detach(l *leg, readErr error) {
	// A close frame the client sends after MGS closed its leg is the
	// closing handshake, not the client ending its session.
	l.mu.Lock()
	serverClosed := l.closeMsg != nil
	l.mu.Unlock()
	l.close(0, "", true)
	<-l.done
	ss.srv.stats.legClosed(l.kind)
	ss.mu.Lock()
	current := ss.leaveLocked(l)
	ss.mu.Unlock()
	if l.kind == "client" && current {
		ss.val.clientLegClosed(readErr, serverClosed)
	}
}

// leaveLocked makes l no longer the session's leg of its kind, if it still
// is, and tells the peer (pause_publication, per the variant). MGS knows a
// leg is gone the moment it closes it, before the socket has drained, so
// closeLeg calls it at once; ss.mu held.
func (ss *session) leaveLocked(l *leg) bool {
	var peer *leg
	switch {
	case l.kind == "client" && ss.client == l:
		ss.client, peer = nil, ss.agent
	case l.kind == "agent" && ss.agent == l:
		ss.agent, peer = nil, ss.client
	default:
		return false
	}
	if peer != nil && ss.state < stateTerminating && ss.srv.opts.Publication != PublicationNever {
		_ = peer.enqueue(websocket.BinaryMessage, ss.publicationFrame(wire.TypePausePublication), false)
		ss.srv.stats.publication(peer.kind, wire.TypePausePublication)
	}
	ss.stateLocked()
	return true
}

// relay reads frames from l and forwards them to the peer leg until the
// leg fails; it returns the read error.
func (ss *session) relay(l *leg) error {
	fromClient := l.kind == "client"
	for {
		if fromClient {
			// Half-open fault: stop reading, as a dropped NAT flow stops
			// acknowledging TCP, so the client's writes back up.
			for ss.isHalfOpen() {
				select {
				case <-l.done:
					return errLegGone
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		mt, r, err := l.ws.NextReader()
		if err != nil {
			return err
		}
		// A new buffer for every message: relayed frames are queued and
		// held, so their storage is never reused.
		msg, err := wire.ReadMessage(r, make([]byte, 0, 1280), maxLegMessage)
		if err != nil {
			return err
		}
		if mt != websocket.BinaryMessage {
			if fromClient {
				ss.val.violation(sevError, "text-frame", "a text frame after the opening frame")
			}
			continue
		}
		if fromClient {
			ss.fromClient(msg)
		} else {
			ss.fromAgent(msg)
		}
	}
}

// frameInfo is the header of a relayed frame, read at fixed offsets.
type frameInfo struct {
	ok          bool
	messageType string
	seq         int64
	payloadType wire.PayloadType
}

func peek(b []byte) frameInfo {
	f, err := wire.DecodeHeader(b)
	if err != nil {
		return frameInfo{}
	}
	return frameInfo{ok: true, messageType: f.MessageType, seq: f.SequenceNumber, payloadType: f.PayloadType}
}

func (ss *session) fromClient(msg []byte) {
	// The validator and the counters see what the client sent even into a
	// half-open leg: the client did send it, and its resends after the
	// episode are resends, not new messages out of order.
	fi := peek(msg)
	ss.val.clientFrame(msg)
	ss.srv.stats.frame(dirClientToAgent, fi, len(msg), ss.countRetransmit(true, fi))
	ss.mu.Lock()
	silent := ss.halfOpen
	ss.mu.Unlock()
	if silent {
		return
	}
	if fi.messageType == wire.TypeInputStreamData {
		ss.touch()
	}
	ss.faultsClient.apply(msg, fi, func(out []byte) { ss.forward(true, out) })
}

func (ss *session) fromAgent(msg []byte) {
	fi := peek(msg)
	if fi.messageType == wire.TypeAgentSessionState {
		// Consumed by MGS; never forwarded.
		return
	}
	retransmit := ss.countRetransmit(false, fi)
	ss.srv.stats.frame(dirAgentToClient, fi, len(msg), retransmit)
	switch fi.messageType {
	case wire.TypeOutputStreamData:
		ss.touch()
		if !retransmit && fi.payloadType == wire.PayloadOutput {
			ss.noteAgentOutput(len(msg) - wire.FrameHeaderSize)
		}
	case wire.TypeAcknowledge:
		if len(msg) > wire.FrameHeaderSize {
			if seq, ok := wire.ParseAckSequence(msg[wire.FrameHeaderSize:]); ok {
				ss.val.agentAck(seq)
			}
		}
	}
	ss.faultsAgent.apply(msg, fi, func(out []byte) {
		undo := ss.val.agentFrameDelivering(out)
		if !ss.forward(false, out) {
			undo()
		}
	})
}

// countRetransmit reports whether a stream frame repeats a sequence number
// already seen in its direction.
func (ss *session) countRetransmit(in bool, fi frameInfo) bool {
	if !fi.ok || (fi.messageType != wire.TypeInputStreamData && fi.messageType != wire.TypeOutputStreamData) {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	max := &ss.maxSeqOut
	if in {
		max = &ss.maxSeqIn
	}
	if fi.seq <= *max {
		return true
	}
	*max = fi.seq
	return false
}

// noteAgentOutput records the agent's own send rate of new Output (the
// pacing ceiling a client can at best receive).
func (ss *session) noteAgentOutput(n int) {
	now := time.Now()
	ss.mu.Lock()
	if ss.outFirst.IsZero() {
		ss.outFirst = now
	}
	ss.outLast = now
	ss.outBytes += int64(n)
	ss.mu.Unlock()
}

func (ss *session) isHalfOpen() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.halfOpen
}

func (ss *session) touch() {
	now := ss.srv.clk.Now()
	ss.mu.Lock()
	ss.lastData = now
	ss.mu.Unlock()
}

// forward sends msg to the peer of its source; it reports whether a leg took
// it. While the peer leg is absent frames are dropped (or queued).
func (ss *session) forward(toAgent bool, msg []byte) bool {
	ss.mu.Lock()
	dst := ss.client
	if toAgent {
		dst = ss.agent
	} else if ss.halfOpen {
		ss.mu.Unlock()
		return false
	}
	if dst == nil {
		// Only a frame that is really lost counts as dropped: the counter
		// is what tells the two QueueWhileAbsent variants apart.
		held := ss.srv.opts.QueueWhileAbsent && len(ss.held)+len(ss.heldAgent) < 100000
		if held && toAgent {
			ss.heldAgent = append(ss.heldAgent, msg)
		} else if held {
			ss.held = append(ss.held, msg)
		}
		ss.mu.Unlock()
		if !held {
			ss.srv.stats.droppedAbsent()
		}
		return false
	}
	ss.mu.Unlock()
	return dst.send(msg) == nil
}

// be is shorthand for the frames' byte order.
var be = binary.BigEndian

package fakeaws

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

type severity string

const (
	sevError   severity = "error"
	sevWarning severity = "warning"
)

// Violation is one protocol rule the client broke.
type Violation struct {
	Time     time.Time `json:"time"`
	Session  string    `json:"session"`
	Severity string    `json:"severity"`
	Code     string    `json:"code"`
	Detail   string    `json:"detail"`
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ackGrace: an output message delivered this shortly before the client leg
// went away may legitimately still lack its ack.
const ackGrace = 2 * time.Second

// validator checks the client side of one session on the raw bytes, as
// strictly as the real agent and service would, plus ssmproxy's own promises
// (docs/fakeaws.md section 7). It sees every client frame, every agent frame
// delivered to the client, and the session's lifecycle events.
type validator struct {
	srv     *Server
	session string

	mu            sync.Mutex
	requestIDs    map[string]bool
	clientID      string
	opens         []time.Time
	resumes       []time.Time
	inHash        []uint64 // input seq -> hash of the first transmission
	inIDs         map[uuid.UUID]int64
	resends       map[int64][]time.Time
	inUnacked     map[int64]wire.PayloadType // client messages not acked yet, by payload type
	outIDs        []uuid.UUID                // output seq -> MessageId delivered to the client
	outDelivered  map[int64]time.Time
	handshakeSeq  int64 // seq of the HandshakeComplete delivered, -1 before
	handshakeAckd bool
	closedSent    bool
	closedAt      time.Time
	terminateSeen map[string]bool
	finished      bool
}

func newValidator(s *Server, session string) *validator {
	return &validator{srv: s, session: session, requestIDs: map[string]bool{}, inIDs: map[uuid.UUID]int64{},
		resends: map[int64][]time.Time{}, inUnacked: map[int64]wire.PayloadType{}, outDelivered: map[int64]time.Time{},
		handshakeSeq: -1, terminateSeen: map[string]bool{}}
}

func (v *validator) violation(sev severity, code, detail string) {
	v.srv.stats.violation(Violation{Time: v.srv.clk.Now(), Session: v.session, Severity: string(sev), Code: code, Detail: detail})
}

func (v *validator) clientOpening(o wire.OpenDataChannel) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.srv.clk.Now()
	if o.MessageSchemaVersion != "1.0" {
		v.violation(sevError, "opening-schema-version", fmt.Sprintf("MessageSchemaVersion %q, want \"1.0\"", o.MessageSchemaVersion))
	}
	if !uuidPattern.MatchString(o.RequestID) {
		v.violation(sevError, "opening-request-id", fmt.Sprintf("RequestId %q is not a lowercase UUID", o.RequestID))
	} else if v.requestIDs[o.RequestID] {
		v.violation(sevError, "opening-request-id-reused", "RequestId reused: "+o.RequestID)
	}
	v.requestIDs[o.RequestID] = true
	switch {
	case o.ClientID == "":
		v.violation(sevError, "opening-client-id", "ClientId is empty")
	case v.clientID != "" && v.clientID != o.ClientID:
		v.violation(sevWarning, "opening-client-id-changed", "ClientId changed across reconnects")
	}
	if v.clientID == "" {
		v.clientID = o.ClientID
	}
	if o.ClientVersion == "" {
		v.violation(sevWarning, "opening-client-version", "ClientVersion missing from the opening frame")
	} else if !wire.ValidClientVersion(o.ClientVersion) {
		v.violation(sevWarning, "opening-client-version", fmt.Sprintf("ClientVersion %q is not a four-part version above 1.2.331.0", o.ClientVersion))
	}
	v.opens = rateCheck(v, v.opens, now, "reconnect-rate", "opens")
}

// maxPerSecond bounds reconnect attempts: a client backing off properly
// (200 ms first delay, doubling) stays far below it.
const maxPerSecond = 10

// rateCheck records an event and flags more than maxPerSecond in a second.
func rateCheck(v *validator, times []time.Time, now time.Time, code, what string) []time.Time {
	times = append(times, now)
	for len(times) > 0 && now.Sub(times[0]) >= time.Second {
		times = times[1:]
	}
	if len(times) == maxPerSecond+1 {
		v.violation(sevError, code, fmt.Sprintf("%d %s within a second", len(times), what))
	}
	return times
}

// resumeCalled records a ResumeSession call for the attempt-rate bound.
func (v *validator) resumeCalled() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.resumes = rateCheck(v, v.resumes, v.srv.clk.Now(), "resume-rate", "ResumeSession calls")
}

// clientFrame checks one binary frame from the client on its raw bytes.
func (v *validator) clientFrame(b []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(b) < wire.FrameHeaderSize {
		v.violation(sevError, "frame-short", fmt.Sprintf("%d-byte frame", len(b)))
		return
	}
	if hl := be.Uint32(b[0:4]); hl != wire.HeaderLength {
		v.violation(sevError, "header-length", fmt.Sprintf("HeaderLength %d, want 116", hl))
		return
	}
	field := b[4:36]
	end := bytes.IndexByte(field, ' ')
	if end < 0 {
		end = 32
	}
	mtype := string(field[:end])
	for _, c := range field[end:] {
		if c != ' ' {
			v.violation(sevError, "message-type-padding", fmt.Sprintf("MessageType field %q is not space-padded", field))
			break
		}
	}
	if sv := be.Uint32(b[36:40]); sv != 1 {
		v.violation(sevError, "schema-version", fmt.Sprintf("SchemaVersion %d", sv))
	}
	created := int64(be.Uint64(b[40:48]))
	if created == 0 {
		v.violation(sevError, "created-date", "CreatedDate is zero")
	} else if d := time.Duration(v.srv.clk.Now().UnixMilli()-created) * time.Millisecond; d > 5*time.Minute || d < -5*time.Minute {
		v.violation(sevError, "created-date", fmt.Sprintf("CreatedDate is %s away from now", d))
	}
	seq := int64(be.Uint64(b[48:56]))
	flags := be.Uint64(b[56:64])
	// MessageId: a v4 UUID with its halves swapped puts the version nibble
	// at wire byte 78 and the RFC 4122 variant bits at wire byte 64.
	if b[78]>>4 != 4 || b[64]>>6 != 2 {
		v.violation(sevError, "message-id-layout", fmt.Sprintf("MessageId wire bytes %x are not a half-swapped v4 UUID", b[64:80]))
	}
	id := wire.WireMessageID(b[64:80])
	pt := wire.PayloadType(be.Uint32(b[112:116]))
	plen := be.Uint32(b[116:120])
	payload := b[120:]
	if int(plen) != len(payload) {
		v.violation(sevError, "payload-length", fmt.Sprintf("PayloadLength %d, payload %d bytes", plen, len(payload)))
	}
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], b[80:112]) {
		v.violation(sevError, "payload-digest", "PayloadDigest does not match the payload")
	}
	if len(payload) == 0 {
		v.violation(sevError, "empty-payload", "a frame with an empty payload")
	} else if len(payload) > wire.MaxPayload && mtype == wire.TypeInputStreamData {
		v.violation(sevWarning, "payload-over-1024", fmt.Sprintf("%d-byte payload", len(payload)))
	}
	// Frames the client sent before it read channel_closed may still be in
	// flight; anything later than that is a violation.
	if v.closedSent && mtype == wire.TypeInputStreamData && v.srv.clk.Since(v.closedAt) > time.Second {
		v.violation(sevError, "data-after-channel-closed", fmt.Sprintf("input_stream_data %s after channel_closed", v.srv.clk.Since(v.closedAt)))
	}
	switch mtype {
	case wire.TypeInputStreamData:
		v.inputData(b, seq, id, pt, payload)
	case wire.TypeAcknowledge:
		if seq != 0 || flags != wire.FlagsAck || pt != 0 {
			v.violation(sevError, "ack-header", fmt.Sprintf("ack with seq %d, flags %d, payload type %d (want 0, 3, 0)", seq, flags, pt))
		}
		v.clientAck(payload)
	default:
		v.violation(sevError, "message-type", fmt.Sprintf("client sent MessageType %q", mtype))
	}
}

func (v *validator) inputData(b []byte, seq int64, id uuid.UUID, pt wire.PayloadType, payload []byte) {
	switch pt {
	case wire.PayloadOutput, wire.PayloadSize, wire.PayloadHandshakeResponse, wire.PayloadEncChallengeResponse, wire.PayloadFlag:
	default:
		v.violation(sevError, "input-payload-type", fmt.Sprintf("input_stream_data with PayloadType %d", pt))
	}
	// The header includes the digest, which was checked against the
	// payload above, so hashing the header identifies the whole frame.
	h := fnv.New64a()
	h.Write(b[:wire.FrameHeaderSize])
	sum := h.Sum64()
	switch {
	case seq < 0:
		v.violation(sevError, "sequence-negative", fmt.Sprintf("sequence %d", seq))
		return
	case seq < int64(len(v.inHash)):
		if v.inHash[seq] != sum {
			v.violation(sevError, "retransmission-differs", fmt.Sprintf("resend of seq %d is not byte-identical to the original", seq))
		}
		now := v.srv.clk.Now()
		times := append(v.resends[seq], now)
		for len(times) > 0 && now.Sub(times[0]) > time.Second {
			times = times[1:]
		}
		v.resends[seq] = times
		if len(times) == 20 {
			v.violation(sevWarning, "retransmission-storm", fmt.Sprintf("seq %d resent 20 times within a second", seq))
		}
		return
	case seq > int64(len(v.inHash)):
		v.violation(sevError, "sequence-gap", fmt.Sprintf("new message seq %d, expected %d", seq, len(v.inHash)))
		for int64(len(v.inHash)) < seq {
			v.inHash = append(v.inHash, 0)
		}
	}
	v.inHash = append(v.inHash, sum)
	if prev, ok := v.inIDs[id]; ok {
		v.violation(sevError, "message-id-reused", fmt.Sprintf("seq %d reuses the MessageId of seq %d", seq, prev))
	}
	v.inIDs[id] = seq
	v.inUnacked[seq] = pt
	if pt == wire.PayloadHandshakeResponse {
		v.handshakeResponse(payload)
	}
	if (pt == wire.PayloadOutput || pt == wire.PayloadFlag) && v.handshakeSeq < 0 {
		v.violation(sevError, "data-before-handshake-complete", fmt.Sprintf("seq %d (payload type %d) sent before HandshakeComplete; the agent discards it", seq, pt))
	}
	if pt == wire.PayloadFlag {
		if len(payload) != 4 {
			v.violation(sevError, "flag-payload", fmt.Sprintf("Flag payload of %d bytes", len(payload)))
		} else if f := be.Uint32(payload); f < 1 || f > 3 {
			v.violation(sevError, "flag-value", fmt.Sprintf("Flag value %d", f))
		} else if wire.Flag(f) == wire.FlagTerminateSession {
			v.terminateSeen["flag"] = true
			// The agent cancels the session on this flag and may never get
			// its ack out; only the data before it must be acked.
			delete(v.inUnacked, seq)
		}
	}
}

func (v *validator) handshakeResponse(p []byte) {
	var r wire.HandshakeResponse
	if err := json.Unmarshal(p, &r); err != nil {
		v.violation(sevError, "handshake-response-json", err.Error())
		return
	}
	if !wire.ValidClientVersion(r.ClientVersion) {
		v.violation(sevError, "handshake-client-version", fmt.Sprintf("ClientVersion %q must be four-part and above 1.2.331.0", r.ClientVersion))
	}
	ok := false
	for _, a := range r.ProcessedClientActions {
		if a.ActionType == wire.ActionSessionType && a.ActionStatus == wire.ActionSuccess {
			ok = true
		}
	}
	if !ok {
		v.violation(sevWarning, "handshake-session-type", "HandshakeResponse does not accept the SessionType action")
	}
}

func (v *validator) clientAck(p []byte) {
	// Fast path: the canonical payload for the sequence number it names.
	if seq, ok := wire.ParseAckSequence(p); ok && seq >= 0 && seq < int64(len(v.outIDs)) && v.outIDs[seq] != uuid.Nil {
		var buf [256]byte
		if bytes.Equal(p, wire.AppendAcknowledge(buf[:0], wire.TypeOutputStreamData, v.outIDs[seq], seq)) {
			v.acked(seq)
			return
		}
	}
	a, err := wire.ParseAcknowledge(p)
	if err != nil {
		v.violation(sevError, "ack-json", err.Error())
		return
	}
	seq := a.AcknowledgedMessageSequenceNumber
	switch {
	case a.AcknowledgedMessageType != wire.TypeOutputStreamData:
		v.violation(sevError, "ack-type", fmt.Sprintf("ack names type %q", a.AcknowledgedMessageType))
	case !a.IsSequentialMessage:
		v.violation(sevError, "ack-sequential", "IsSequentialMessage is false")
	case seq < 0 || seq >= int64(len(v.outIDs)) || v.outIDs[seq] == uuid.Nil:
		v.violation(sevError, "ack-unknown", fmt.Sprintf("ack for output seq %d, which was never delivered", seq))
		return
	case a.AcknowledgedMessageID != v.outIDs[seq].String():
		v.violation(sevError, "ack-message-id", fmt.Sprintf("ack for seq %d names MessageId %s, delivered %s", seq, a.AcknowledgedMessageID, v.outIDs[seq]))
	}
	v.acked(seq)
}

func (v *validator) acked(seq int64) {
	delete(v.outDelivered, seq)
	if seq == v.handshakeSeq {
		v.handshakeAckd = true
	}
}

// agentFrameDelivering records an agent frame about to be forwarded to the
// client leg. It runs before the forward, so an ack can never overtake the
// record; undo reverts it when the frame could not be delivered after all.
func (v *validator) agentFrameDelivering(b []byte) (undo func()) {
	f, err := wire.DecodeHeader(b)
	if err != nil || f.MessageType != wire.TypeOutputStreamData || f.SequenceNumber < 0 {
		return func() {}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	seq := f.SequenceNumber
	for int64(len(v.outIDs)) <= seq {
		v.outIDs = append(v.outIDs, uuid.Nil)
	}
	v.outIDs[seq] = f.MessageID
	prev, had := v.outDelivered[seq]
	if !had {
		// The first delivery since the client last acked seq: a resend
		// does not restart the clock, or a client that never re-acks a
		// duplicate would pass as long as the agent kept resending it
		// (the real agent resends its head at least once a second; e2e
		// TestPluginLostAck).
		v.outDelivered[seq] = v.srv.clk.Now()
	}
	if f.PayloadType == wire.PayloadHandshakeComplete && v.handshakeSeq < 0 {
		v.handshakeSeq = seq
	}
	return func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if had {
			v.outDelivered[seq] = prev
		} else {
			delete(v.outDelivered, seq)
		}
	}
}

// agentAck records the agent's ack of a client message.
func (v *validator) agentAck(seq int64) {
	v.mu.Lock()
	delete(v.inUnacked, seq)
	v.mu.Unlock()
}

func (v *validator) handshakeAcked() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.handshakeAckd
}

func (v *validator) noteChannelClosed() {
	v.mu.Lock()
	if !v.closedSent {
		v.closedSent = true
		v.closedAt = v.srv.clk.Now()
	}
	v.mu.Unlock()
}

func (v *validator) channelClosedSent() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.closedSent
}

func (v *validator) noteTerminate(how string) {
	v.mu.Lock()
	v.terminateSeen[how] = true
	v.mu.Unlock()
}

// clientLegClosed checks that everything delivered well before the leg went
// away was acknowledged (ssmproxy acks, and re-acks every duplicate), and
// notes a client that closed normally without terminating the session.
func (v *validator) clientLegClosed(readErr error, serverClosed bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.checkAcksLocked()
	var ce *websocket.CloseError
	if !serverClosed && errors.As(readErr, &ce) && ce.Code == websocket.CloseNormalClosure && len(v.terminateSeen) == 0 && !v.closedSent {
		v.violation(sevWarning, "missing-terminate", "the client closed its leg normally without TerminateSession (flag or API)")
	}
}

func (v *validator) checkAcksLocked() {
	now := v.srv.clk.Now()
	for seq, at := range v.outDelivered {
		if now.Sub(at) > ackGrace {
			v.violation(sevError, "missing-ack", fmt.Sprintf("output seq %d delivered %s before the client left and never acked", seq, now.Sub(at).Round(time.Millisecond)))
		}
		delete(v.outDelivered, seq)
	}
}

// finish runs the end-of-session checks.
func (v *validator) finish() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.finished {
		return
	}
	v.finished = true
	v.checkAcksLocked()
	if len(v.terminateSeen) > 0 && len(v.inUnacked) > 0 {
		seqs := slices.Sorted(maps.Keys(v.inUnacked))
		desc := make([]string, 0, 8)
		for _, seq := range seqs[:min(len(seqs), 8)] {
			desc = append(desc, fmt.Sprintf("%d (payload type %d)", seq, v.inUnacked[seq]))
		}
		v.violation(sevError, "terminate-with-unacked-data", fmt.Sprintf("the client terminated with %d unacked messages (%s, of %d sent; terminated by %v)",
			len(seqs), strings.Join(desc, ", "), len(v.inHash), slices.Sorted(maps.Keys(v.terminateSeen))))
	}
}

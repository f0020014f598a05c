package agent

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"sync"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// idGen produces v4 UUIDs for MessageIds from a ChaCha8 stream seeded from
// crypto/rand. The agent mints one id per frame, and reading crypto/rand for
// each would be a measurable cost at the benchmark's message rates; the ids
// stay unpredictable enough for a test double.
type idGen struct {
	mu  sync.Mutex
	rng *rand.ChaCha8
}

func newIDGen() *idGen {
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		// crypto/rand never fails on supported platforms; fall back to a
		// time-independent but still distinct-per-process stream.
		binary.LittleEndian.PutUint64(seed[:], rand.Uint64())
	}
	return &idGen{rng: rand.NewChaCha8(seed)}
}

func (g *idGen) next() uuid.UUID {
	var id uuid.UUID
	g.mu.Lock()
	binary.LittleEndian.PutUint64(id[0:8], g.rng.Uint64())
	binary.LittleEndian.PutUint64(id[8:16], g.rng.Uint64())
	g.mu.Unlock()
	id[6] = (id[6] & 0x0f) | 0x40 // version 4
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id
}

// encodeFrame builds a complete agent frame in a new buffer.
func (s *session) encodeFrame(msgType string, seq int64, flags uint64, pt wire.PayloadType, payload []byte) []byte {
	buf := make([]byte, wire.FrameHeaderSize+len(payload))
	f := wire.Frame{
		MessageType:    msgType,
		SchemaVersion:  wire.SchemaVersion,
		CreatedDate:    uint64(s.clk.Now().UnixMilli()),
		SequenceNumber: seq,
		Flags:          flags,
		MessageID:      s.ids.next(),
		PayloadType:    pt,
		Payload:        payload,
	}
	if err := wire.EncodeInto(buf, &f); err != nil {
		// Only an oversized payload or a bad message type can fail, and the
		// agent builds neither; treat it as a programming error but never
		// crash the session over it.
		s.log.Error("encode frame", "type", msgType, "err", err)
		return nil
	}
	return buf
}

// appendAck appends to dst the acknowledge frame of one input_stream_data
// message (docs/protocol.md section 6): seq 0, Flags 3, PayloadType 0. The link's
// writer calls it with a reused buffer, so acks cost no allocation and their
// encoding stays off the reader goroutine.
func (s *session) appendAck(dst []byte, id uuid.UUID, seq int64) []byte {
	base := len(dst)
	dst = append(dst, make([]byte, wire.FrameHeaderSize)...)
	dst = wire.AppendAcknowledge(dst, wire.TypeInputStreamData, id, seq)
	b := dst[base:]
	f := wire.Frame{
		MessageType:   wire.TypeAcknowledge,
		SchemaVersion: wire.SchemaVersion,
		CreatedDate:   uint64(s.clk.Now().UnixMilli()),
		Flags:         wire.FlagsAck,
		MessageID:     s.ids.next(),
		PayloadType:   wire.PayloadNone,
		// The payload already sits where EncodeInto copies it to; the copy
		// onto itself is harmless and the digest is computed beforehand.
		Payload: b[wire.FrameHeaderSize:],
	}
	if err := wire.EncodeInto(b, &f); err != nil {
		s.log.Error("encode ack", "err", err)
		return dst[:base]
	}
	return dst
}

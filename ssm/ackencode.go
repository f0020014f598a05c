package ssm

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/internal/wsframe"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// ackEncoder writes the session's acks (docs/protocol.md 8.3) straight
// into the leg's websocket batch: the frame is encoded in the space the
// message will occupy, so nothing is built, copied or pooled per ack.
type ackEncoder struct {
	// payload is scratch for an ack's JSON (a local array escapes to the
	// heap through the digest: an allocation per ack).
	payload [256]byte
	ids     *ids
}

func newAckEncoder() *ackEncoder { return &ackEncoder{ids: newIDs()} }

// ids makes MessageIds. They need only be unique; the system's random
// source per message cost more than the message's encoding, so they come
// from ChaCha8 seeded from crypto/rand. Not safe for concurrent use.
type ids struct{ rng *rand.ChaCha8 }

func newIDs() *ids {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails on supported platforms (crypto/rand docs)
	return &ids{rng: rand.NewChaCha8(seed)}
}

// uuid is a random (version 4) UUID.
func (g *ids) uuid() uuid.UUID {
	var id uuid.UUID
	binary.LittleEndian.PutUint64(id[0:8], g.rng.Uint64())
	binary.LittleEndian.PutUint64(id[8:16], g.rng.Uint64())
	id[6] = id[6]&0x0f | 0x40 // version 4
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	return id
}

// encode appends the acknowledge of rec to w as one binary message; seen,
// if not nil, sees the frame before it is masked.
func (e *ackEncoder) encode(w *wsframe.Writer, rec ackRecord, seen func([]byte)) {
	payload := wire.AppendAcknowledge(e.payload[:0], wire.TypeOutputStreamData, rec.id, rec.seq)
	f := wire.Frame{
		MessageType:   wire.TypeAcknowledge,
		SchemaVersion: wire.SchemaVersion,
		CreatedDate:   uint64(rec.at.UnixMilli()),
		Flags:         wire.FlagsAck,
		MessageID:     e.ids.uuid(),
		Payload:       payload,
	}
	dst := w.Reserve(wire.FrameHeaderSize + len(payload))
	if err := wire.EncodeInto(dst, &f); err != nil {
		// Cannot happen for an ack (a fixed type, a small payload); if it
		// did, the message is not acked and the agent resends it.
		w.Cancel()
		return
	}
	if seen != nil {
		seen(dst)
	}
	w.Seal()
}

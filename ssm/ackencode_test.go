package ssm

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/internal/wsframe"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// TestAckEncoder: the ack the ackEncoder encodes in place is the one
// the protocol wants (docs/protocol.md 8.3): type, flags, CreatedDate from
// the record, a payload naming the message, a valid digest, and a fresh
// version-4 MessageId per ack.
func TestAckEncoder(t *testing.T) {
	fw, enc := wsframe.NewClient(), newAckEncoder()
	at := time.UnixMilli(1764800000123)
	id := uuid.New()
	var frames [][]byte
	seen := func(b []byte) { frames = append(frames, append([]byte(nil), b...)) }
	enc.encode(fw, ackRecord{seq: 42, id: id, at: at}, seen)
	enc.encode(fw, ackRecord{seq: 43, id: id, at: at}, seen)
	if len(frames) != 2 {
		t.Fatalf("seen %d frames", len(frames))
	}
	var ids []uuid.UUID
	for i, b := range frames {
		f, err := wire.Decode(b)
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		if f.MessageType != wire.TypeAcknowledge || f.Flags != wire.FlagsAck || f.CreatedDate != uint64(at.UnixMilli()) ||
			f.SchemaVersion != wire.SchemaVersion {
			t.Fatalf("ack %d header: %+v", i, f)
		}
		a, err := wire.ParseAcknowledge(f.Payload)
		if err != nil || a.AcknowledgedMessageSequenceNumber != int64(42+i) || a.AcknowledgedMessageID != id.String() ||
			a.AcknowledgedMessageType != wire.TypeOutputStreamData || !a.IsSequentialMessage {
			t.Fatalf("ack %d payload %s (%v)", i, f.Payload, err)
		}
		if f.MessageID.Version() != 4 || f.MessageID.Variant() != uuid.RFC4122 {
			t.Fatalf("ack %d MessageId %s is not a version-4 UUID", i, f.MessageID)
		}
		ids = append(ids, f.MessageID)
	}
	if ids[0] == ids[1] {
		t.Fatal("two acks with one MessageId")
	}
}

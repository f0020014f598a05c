package ssm

import (
	"bytes"
	"testing"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// FuzzReceivePath drives the incoming half of the stream (docs/protocol.md
// 8.3) with frames chosen by the fuzzer, through the frame codec, against a
// simple model of a sender that forgets every message once it is acked:
//
//   - whatever is delivered is exactly the sender's stream, in order, without
//     gaps or repeats, whatever the arrival order, duplicates, corruption or
//     readiness of the local side;
//   - the buffer never holds more than its bounds (messages and bytes);
//   - an acked message is never lost: after the sender has resent only what
//     is still unacked, the whole stream has been delivered.
//
// Each input byte is one arrival: the low 5 bits pick a sequence number above
// the sender's oldest unacked one, 0x20 corrupts the payload on the wire,
// 0x40 makes the local side refuse delivery (not ready), 0x80 makes it ready.
func FuzzReceivePath(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3})
	f.Add([]byte{3, 2, 1, 0, 0, 1})
	f.Add([]byte{0x40, 0, 1, 2, 0x80, 5, 4, 3})
	f.Add([]byte{0x21, 0x20, 1, 0, 31, 30, 29, 0x5f, 0x80})
	f.Add(bytes.Repeat([]byte{9, 8, 7, 6, 5, 4, 3, 2, 1}, 8))
	f.Fuzz(func(t *testing.T, ops []byte) {
		const total = 48 // messages in the sender's stream
		// Small bounds, so the full-buffer paths run: at most 6 messages or
		// 12 payload bytes held (payloads are 1 to 5 bytes).
		const maxOOO, maxBytes = 6, 12
		payload := func(seq int64) []byte {
			return bytes.Repeat([]byte{byte(seq)}, int(seq%5)+1)
		}
		var (
			delivered int64
			ready     = true
			acked     [total]bool
		)
		r := newReceiver(receiverLimits{messages: maxOOO, bytes: maxBytes}, func(pt wire.PayloadType, p []byte) bool {
			if !ready {
				return false
			}
			if pt != wire.PayloadOutput || !bytes.Equal(p, payload(delivered)) {
				t.Fatalf("delivered %d bytes of type %d as message %d, want %q", len(p), pt, delivered, payload(delivered))
			}
			delivered++
			return true
		})
		arrive := func(seq int64, corrupt bool) {
			fr := &wire.Frame{MessageType: wire.TypeOutputStreamData, SchemaVersion: 1, CreatedDate: 1,
				SequenceNumber: seq, MessageID: uuid.UUID{byte(seq), 1}, PayloadType: wire.PayloadOutput, Payload: payload(seq)}
			b, err := wire.Encode(fr)
			if err != nil {
				t.Fatal(err)
			}
			if corrupt {
				b[len(b)-1] ^= 0x55
			}
			got, err := wire.Decode(b)
			if corrupt {
				if err == nil {
					t.Fatalf("a corrupted payload passed the digest check")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch r.receive(got.SequenceNumber, got.PayloadType, got.Payload) {
			case verdictAck, verdictDuplicate:
				acked[seq] = true
			}
			if st := r.stats(); st.Buffered > maxOOO || st.BufferedBytes > maxBytes {
				t.Fatalf("%d messages (%d bytes) buffered, bounds %d (%d)", st.Buffered, st.BufferedBytes, maxOOO, maxBytes)
			}
		}
		oldestUnacked := func() int64 {
			for i := range acked {
				if !acked[i] {
					return int64(i)
				}
			}
			return total
		}
		for _, op := range ops {
			switch {
			case op&0x80 != 0:
				ready = true
				r.drain()
			case op&0x40 != 0:
				ready = false
			}
			seq := oldestUnacked() + int64(op&0x1f)
			if seq >= total {
				continue
			}
			arrive(seq, op&0x20 != 0)
		}
		// The sender retransmits what is unacked, oldest first, until
		// everything is acked; a receiver that acked and then lost a message
		// never gets it again and the stream stays short.
		ready = true
		r.drain()
		for round := 0; round < total && oldestUnacked() < total; round++ {
			for seq := oldestUnacked(); seq < total; seq++ {
				if !acked[seq] {
					arrive(seq, false)
				}
			}
		}
		if delivered != total {
			t.Fatalf("delivered %d of %d messages after every unacked one was resent", delivered, total)
		}
	})
}

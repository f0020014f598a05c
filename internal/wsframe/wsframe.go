// Package wsframe writes websocket data messages (RFC 6455 section 5.2)
// into one buffer, so that a batch of many small messages costs one
// connection write (docs/bench.md, "Writing frames").
//
// gorilla's WriteMessage costs a writer, a deadline, a connection write
// and, for a client, a masking key from the system's random source per
// message. At one message per 1024 bytes of stream, plus one ack for each,
// that was a tenth of ssmproxy's CPU and a quarter of the fake's. The
// bytes on the wire are the same: each message is one final frame, opcode
// binary, masked by a client and not by a server. gorilla keeps the
// handshake, the reads (so each side's reader checks the other's writer)
// and the control frames. A batch is one Write and so is each control
// frame gorilla writes, so on a connection that serializes its writes (a
// locked buffer, a *tls.Conn) they alternate whole, never interleave.
// Where control frames come from other goroutines, the owner must also
// keep a control frame's write deadline off its batches (the fake agent
// takes turns with them); ssm's legs and the fake's relay write every
// control frame from the goroutine that writes the batches.
package wsframe

import (
	crand "crypto/rand"
	"encoding/binary"
	"io"
	"math/rand/v2"
)

// Buffer sizes: Flush is due once Pending reaches FlushAt (a batch of
// thousands of messages would otherwise grow the buffer by copying), and
// no more than keep is held across batches by an idle connection.
const (
	FlushAt = 64 << 10
	keep    = 512 << 10
)

// Writer builds messages for one connection. It is not safe for
// concurrent use: one writer goroutine owns it.
type Writer struct {
	buf []byte
	// rng gives a client's masking keys: ChaCha8 seeded from crypto/rand,
	// so they stay unpredictable to whoever chose the masked bytes (RFC
	// 6455 section 10.3), which is what masking is for. nil: a server,
	// which does not mask.
	rng *rand.ChaCha8
	// The message begun by Reserve: where its header and its payload
	// start, and its masking key.
	hdr, open int
	key       uint32
}

// NewClient returns a Writer that masks, as a client must.
func NewClient() *Writer {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails on supported platforms (crypto/rand docs)
	return &Writer{rng: rand.NewChaCha8(seed)}
}

// NewServer returns a Writer that does not mask, as a server must not.
func NewServer() *Writer { return &Writer{} }

// Binary appends one binary message carrying p.
func (w *Writer) Binary(p []byte) {
	copy(w.Reserve(len(p)), p)
	w.Seal()
}

// Reserve appends the header of a binary message of n payload bytes and n
// bytes for the payload, and returns those for the caller to fill in
// place; Seal (or Cancel) must follow before anything else is appended.
func (w *Writer) Reserve(n int) []byte {
	w.hdr = len(w.buf)
	mask := byte(0)
	if w.rng != nil {
		mask = 0x80
	}
	switch {
	case n < 126:
		w.buf = append(w.buf, 0x82, mask|byte(n))
	case n <= 0xffff:
		w.buf = append(w.buf, 0x82, mask|126, byte(n>>8), byte(n))
	default:
		w.buf = append(w.buf, 0x82, mask|127)
		w.buf = binary.BigEndian.AppendUint64(w.buf, uint64(n))
	}
	if w.rng != nil {
		w.key = uint32(w.rng.Uint64())
		w.buf = binary.LittleEndian.AppendUint32(w.buf, w.key)
	}
	w.open = len(w.buf)
	if cap(w.buf)-len(w.buf) < n {
		w.buf = append(w.buf, make([]byte, n)...)
	} else {
		w.buf = w.buf[:len(w.buf)+n]
	}
	return w.buf[w.open:]
}

// Seal finishes the message begun by Reserve: a client's payload is
// masked now.
func (w *Writer) Seal() {
	if w.rng != nil {
		Mask(w.buf[w.open:], w.key)
	}
}

// Cancel drops the message begun by Reserve.
func (w *Writer) Cancel() { w.buf = w.buf[:w.hdr] }

// Pending reports the bytes waiting for Flush.
func (w *Writer) Pending() int { return len(w.buf) }

// Flush writes what was appended to c in one write.
func (w *Writer) Flush(c io.Writer) error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := c.Write(w.buf)
	if cap(w.buf) > keep {
		w.buf = nil
	} else {
		w.buf = w.buf[:0]
	}
	return err
}

// Mask XORs b with the 4-byte masking key whose first wire byte is the
// key's low byte, a word at a time (RFC 6455 section 5.3).
func Mask(b []byte, key uint32) {
	k := uint64(key) | uint64(key)<<32
	le := binary.LittleEndian
	i := 0
	for ; i+32 <= len(b); i += 32 {
		c := b[i : i+32 : i+32] // one bounds check for four words
		le.PutUint64(c[0:], le.Uint64(c[0:])^k)
		le.PutUint64(c[8:], le.Uint64(c[8:])^k)
		le.PutUint64(c[16:], le.Uint64(c[16:])^k)
		le.PutUint64(c[24:], le.Uint64(c[24:])^k)
	}
	for ; i+8 <= len(b); i += 8 {
		le.PutUint64(b[i:], le.Uint64(b[i:])^k)
	}
	for j := 0; i < len(b); i, j = i+1, j+1 {
		b[i] ^= byte(key >> (8 * (j % 4)))
	}
}

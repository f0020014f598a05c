package agent

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// The benchmarks drive an unpaced agent with a lean client (template frames
// with patched sequence numbers and ids) so that the agent, not the harness,
// is what gets measured:
//
//	go test -run x -bench . -benchtime 256x ./fakeaws/agent/
//
// One iteration is one MiB.

const mib = 1 << 20

// fastInput returns a factory of input_stream_data frames carrying payload.
func fastInput(payload []byte) func(seq int64) []byte {
	_, tmpl := inputFrame(0, wire.PayloadOutput, payload)
	return func(seq int64) []byte {
		b := append([]byte(nil), tmpl...)
		binary.BigEndian.PutUint64(b[48:], uint64(seq))
		wire.PutMessageID(b[64:80], uuid.New())
		return b
	}
}

func benchEstablish(b *testing.B) (*leg, net.Conn) {
	b.Helper()
	s := start(b, false, Config{Quirks: Quirks{Unpaced: true}})
	doHandshake(b, s.l)
	return s.l, s.tgt.accept(b)
}

func BenchmarkUploadUnpaced(b *testing.B) {
	l, c := benchEstablish(b)
	total := int64(b.N) * mib
	mk := fastInput(make([]byte, wire.MaxPayload))
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the client side reads (and drops) the agent's acks
		for {
			select {
			case <-l.frames:
			case <-stop:
				return
			}
		}
	}()
	b.SetBytes(mib)
	b.ResetTimer()
	go func() {
		for seq := int64(1); seq <= total/wire.MaxPayload; seq++ {
			if l.send(mk(seq)) != nil {
				return
			}
		}
	}()
	if n, err := io.CopyN(io.Discard, c, total); err != nil || n != total {
		b.Fatalf("target got %d bytes: %v", n, err)
	}
}

func BenchmarkDownloadUnpaced(b *testing.B) {
	l, c := benchEstablish(b)
	total := int64(b.N) * mib
	b.SetBytes(mib)
	b.ResetTimer()
	go func() {
		buf := make([]byte, 64<<10)
		for sent := int64(0); sent < total; sent += int64(len(buf)) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	var got int64
	for got < total {
		select {
		case f := <-l.frames:
			if f.MessageType != wire.TypeOutputStreamData {
				continue
			}
			l.send(ackFrame(f))
			got += int64(len(f.Payload))
		case <-time.After(10 * time.Second):
			b.Fatalf("stalled at %d of %d bytes", got, total)
		}
	}
}

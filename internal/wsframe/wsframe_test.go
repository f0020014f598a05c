package wsframe

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

var sizes = []int{0, 1, 7, 8, 9, 31, 32, 33, 125, 126, 127, 1024, 1140, 65535, 65536, 200000}

func payloads(seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 2))
	var out [][]byte
	for _, n := range sizes {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		out = append(out, p)
	}
	return out
}

// check fails t unless ws reads want, in order, as binary messages.
func check(t *testing.T, ws *websocket.Conn, want [][]byte) {
	t.Helper()
	ws.SetReadLimit(1 << 20)
	for i, w := range want {
		mt, b, err := ws.ReadMessage()
		if err != nil {
			t.Errorf("message %d: %v", i, err)
			return
		}
		if mt != websocket.BinaryMessage || !bytes.Equal(b, w) {
			t.Errorf("message %d (%d bytes): read type %d, %d bytes, equal %v", i, len(w), mt, len(b), bytes.Equal(b, w))
			return
		}
	}
}

// TestClientMessagesGorillaServerReads: a gorilla server, which refuses
// unmasked frames from a client, reads every message a client Writer
// builds, at each length encoding and its edges, in order, from one write.
// The last one is built with Reserve and Seal, as ssm's acks are; one
// cancelled in the middle leaves no trace.
func TestClientMessagesGorillaServerReads(t *testing.T) {
	want := payloads(1)
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.Close()
		check(t, ws, want)
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	w := NewClient()
	for i, p := range want[:len(want)-1] {
		w.Binary(p)
		if i == 3 {
			w.Reserve(10) // cancelled mid-batch: never on the wire
			w.Cancel()
		}
	}
	last := want[len(want)-1]
	copy(w.Reserve(len(last)), last)
	w.Seal()
	if err := w.Flush(ws.NetConn()); err != nil {
		t.Fatal(err)
	}
	if w.Pending() != 0 {
		t.Fatalf("pending %d after flush", w.Pending())
	}
	<-done
}

// TestServerMessagesGorillaClientReads: a gorilla client, which refuses
// masked frames from a server, reads every message a server Writer builds.
func TestServerMessagesGorillaClientReads(t *testing.T) {
	want := payloads(2)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		w := NewServer()
		for _, p := range want {
			w.Binary(p)
		}
		if err := w.Flush(ws.NetConn()); err != nil {
			t.Error(err)
		}
		_, _, _ = ws.ReadMessage() // until the client hangs up
		ws.Close()
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	check(t, ws, want)
}

// TestMask compares the word-wise masking with the RFC's definition, byte
// i XOR key byte i mod 4, at every length up to a few unrolled rounds.
func TestMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 100; n++ {
		key := rng.Uint32()
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		want := make([]byte, n)
		for i := range p {
			want[i] = p[i] ^ byte(key>>(8*(i%4)))
		}
		Mask(p, key)
		if !bytes.Equal(p, want) {
			t.Fatalf("length %d key %08x: got %x want %x", n, key, p, want)
		}
	}
}

// TestClientKeys: every message gets a fresh masking key (1000 random
// 32-bit keys repeat one with odds of about 1 in 10,000, so a few repeats
// are tolerated; a fixed or slowly changing key is not).
func TestClientKeys(t *testing.T) {
	w := NewClient()
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		w.Binary([]byte{1})
		seen[string(w.buf[len(w.buf)-5:len(w.buf)-1])] = true
	}
	if len(seen) < 995 {
		t.Fatalf("%d distinct masking keys in 1000 messages", len(seen))
	}
}

// TestBatchesAndPingsOverTLS: on a wss connection, where NetConn is the
// *tls.Conn, batches written by one goroutine and gorilla's pings from
// another alternate whole: the server reads every message intact and in
// order (run with -race by make test).
func TestBatchesAndPingsOverTLS(t *testing.T) {
	const batches, perBatch = 20, 50
	done := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		defer close(done)
		ws, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.Close()
		for i := 0; i < batches*perBatch; i++ {
			mt, b, err := ws.ReadMessage()
			if err != nil {
				t.Errorf("message %d: %v", i, err)
				return
			}
			if mt != websocket.BinaryMessage || len(b) != 1100 || b[0] != byte(i) || b[1099] != byte(i>>8) {
				t.Errorf("message %d: type %d, %d bytes, first %d", i, mt, len(b), b[0])
				return
			}
		}
	}))
	defer srv.Close()
	d := websocket.Dialer{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	ws, _, err := d.Dial("wss"+strings.TrimPrefix(srv.URL, "https"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	stop := make(chan struct{})
	pinged := make(chan int)
	go func() {
		n := 0
		defer func() { pinged <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)) != nil {
				return
			}
			n++
		}
	}()
	w := NewClient()
	msg := make([]byte, 1100)
	for i := 0; i < batches*perBatch; i++ {
		msg[0], msg[1099] = byte(i), byte(i>>8)
		w.Binary(msg)
		if (i+1)%perBatch == 0 {
			if err := w.Flush(ws.NetConn()); err != nil {
				t.Fatal(err)
			}
		}
	}
	<-done
	close(stop)
	if n := <-pinged; n == 0 {
		t.Fatal("no ping was written alongside the batches")
	}
}

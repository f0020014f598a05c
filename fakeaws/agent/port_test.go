package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1.2.331.0", "1.2.331.0", 0},
		{"1.2.804.0", "1.2.331.0", 1},
		{"1.10.0", "1.9.9", 1},
		{"1.1.70", "1.1.70.0", -1},
		{"", "1.1.70", -1},
	} {
		if got := compareVersions(c.a, c.b); got != c.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	for v, want := range map[string]bool{"1.2.804.0": true, "1.1.70": true, "1.1.69.9": false, "": false, "abc": false, "1.x": false} {
		if got := clientSupportsMux(v); got != want {
			t.Errorf("clientSupportsMux(%q) = %v", v, got)
		}
	}
}

// runPort runs a session up to the target dial with the given properties and
// resolver/dialer, returning Run's result once the session ends.
func runPort(t *testing.T, props map[string]string, cfg Config) error {
	t.Helper()
	m := newMGS(t)
	cfg.Properties = props
	r := startAgent(t, m, cfg)
	l := m.nextLeg(t)
	doHandshake(t, l)
	return r.wait(t, 10*time.Second)
}

func fixedResolver(addrs ...string) func(context.Context, string) ([]netip.Addr, error) {
	return func(context.Context, string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
}

func TestTargetDialFailures(t *testing.T) {
	refuse := func(ctx context.Context, addr string) (net.Conn, error) { return nil, errors.New("refused " + addr) }
	for _, c := range []struct {
		name  string
		props map[string]string
		cfg   Config
		want  string
	}{
		{"emptyPort", map[string]string{"portNumber": ""}, Config{}, "Port number is empty in session properties"},
		{"denied", map[string]string{"portNumber": "80", "host": "metadata"},
			Config{Resolve: fixedResolver("127.0.0.1", "169.254.169.254")}, "Forwarding to IP address 169.254.169.254 is forbidden"},
		{"deniedMapped", map[string]string{"portNumber": "80", "host": "metadata"},
			Config{Resolve: fixedResolver("::ffff:169.254.169.123")}, "Forwarding to IP address 169.254.169.123 is forbidden"},
		{"deniedV6", map[string]string{"portNumber": "80", "host": "metadata"},
			Config{Resolve: fixedResolver("fd00:ec2::254")}, "Forwarding to IP address fd00:ec2::254 is forbidden"},
		{"firstErrorReported", map[string]string{"portNumber": "80", "host": "db"},
			Config{Resolve: fixedResolver("10.0.0.1", "10.0.0.2"), DialTarget: refuse}, "Unable to connect to specified port: refused 10.0.0.1:80"},
		{"resolveFails", map[string]string{"portNumber": "80", "host": "nowhere"},
			Config{Resolve: func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("no such host") }},
			"Unable to connect to specified port: missing address"},
		{"noHost", map[string]string{"portNumber": "22"}, Config{DefaultHost: "localhost", DialTarget: refuse},
			"Unable to connect to specified port: refused localhost:22"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := runPort(t, c.props, c.cfg)
			if err == nil || err.Error() != c.want {
				t.Fatalf("Run = %v, want %q", err, c.want)
			}
		})
	}
}

func TestRemoteHostTriesAddressesInOrder(t *testing.T) {
	tgt := newTarget(t, true)
	var mu sync.Mutex
	var tried []string
	var d net.Dialer
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		mu.Lock()
		tried = append(tried, addr)
		mu.Unlock()
		if strings.HasPrefix(addr, "10.") {
			return nil, errors.New("unreachable")
		}
		return d.DialContext(ctx, "tcp", addr)
	}
	m := newMGS(t)
	// Loopback is not on the deny list.
	startAgent(t, m, Config{Resolve: fixedResolver("10.0.0.1", "127.0.0.1"), DialTarget: dial,
		Properties: map[string]string{"portNumber": tgt.port(), "host": "db.internal", "type": "LocalPortForwarding", "localPortNumber": "0"}})
	l := m.nextLeg(t)
	handshakeAs(t, l, "1.1.61.0") // basic mode: a client below the mux gate
	tgt.accept(t)
	mu.Lock()
	defer mu.Unlock()
	if len(tried) != 2 || tried[0] != "10.0.0.1:"+tgt.port() || tried[1] != "127.0.0.1:"+tgt.port() {
		t.Fatalf("dialled %v", tried)
	}
}

func TestLocalPortForwardingBasicRedialsAfterEOF(t *testing.T) {
	m := newMGS(t)
	tgt := newTarget(t, false)
	r := startAgent(t, m, Config{Properties: map[string]string{"portNumber": tgt.port(), "type": "LocalPortForwarding", "localPortNumber": "0"}})
	l := m.nextLeg(t)
	handshakeAs(t, l, "1.1.61.0") // basic mode: a client below the mux gate
	p := newDataPeer(t, m, l)
	c1 := tgt.accept(t)
	c1.Close() // EOF: in basic port forwarding this is not the end
	time.Sleep(200 * time.Millisecond)
	p.write([]byte("again"))
	c2 := tgt.accept(t)
	readExactly(t, c2, "again")
	select {
	case err := <-r.done:
		t.Fatalf("session ended: %v", err)
	default:
	}
}

// flakyConn fails its writes while failing is set.
type flakyConn struct {
	net.Conn
	failing *atomic.Bool
}

func (c flakyConn) Write(p []byte) (int, error) {
	if c.failing.Load() {
		return 0, errors.New("write: broken pipe")
	}
	return c.Conn.Write(p)
}

func TestTargetWriteFailureIsNotAcked(t *testing.T) {
	var failing atomic.Bool
	var d net.Dialer
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		return flakyConn{c, &failing}, err
	}
	s, c := established(t, false, Config{DialTarget: dial})
	in1, b1 := inputFrame(1, wire.PayloadOutput, []byte("a"))
	sendUntilAcked(t, s.l, in1, b1)
	readExactly(t, c, "a")
	failing.Store(true)
	var frames [][]byte
	for seq := int64(2); seq <= 4; seq++ {
		_, b := inputFrame(seq, wire.PayloadOutput, []byte{byte('a' + seq - 1)})
		frames = append(frames, b)
		s.l.send(b)
	}
	// Seq 2 is not ready (no ack, no advance); 3 and 4 may be acked and
	// buffered as future messages if they arrived after 2 was refused.
	acked := map[int64]bool{}
	end := time.After(400 * time.Millisecond)
	for done := false; !done; {
		select {
		case f := <-s.l.frames:
			acked[ackOf(t, f).AcknowledgedMessageSequenceNumber] = true
		case <-end:
			done = true
		}
	}
	if acked[2] || s.r.stats.DroppedNotReady.Load() == 0 {
		t.Fatalf("acked %v, DroppedNotReady %d", acked, s.r.stats.DroppedNotReady.Load())
	}
	failing.Store(false)
	for i := range frames { // the client's retransmissions
		s.l.send(frames[i])
	}
	for len(acked) < 3 || !acked[2] {
		acked[ackOf(t, recv(t, s.l, 5*time.Second)).AcknowledgedMessageSequenceNumber] = true
	}
	readExactly(t, c, "bcd")
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := c.Read(make([]byte, 8)); n != 0 {
		t.Fatal("bytes written twice")
	}
}

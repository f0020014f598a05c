package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// SOCKS5 (RFC 1928), CONNECT only, no authentication: `forward -D`. Each
// destination host:port gets its own session (…ToRemoteHost), opened on
// first use and shared by later connections to it (docs/protocol.md 12:
// the agent resolves and dials the host).

const (
	socksVersion      = 5
	socksNoAuth       = 0
	socksNoAcceptable = 0xff
	socksCmdConnect   = 1
	socksAtypIPv4     = 1
	socksAtypDomain   = 3
	socksAtypIPv6     = 4

	socksSucceeded          = 0
	socksGeneralFailure     = 1
	socksCmdNotSupported    = 7
	socksAtypNotSupported   = 8
	socksHandshakeTimeout   = 30 * time.Second
	socksMaxGreetingMethods = 255
)

// errSocks is a client speaking something other than SOCKS5 CONNECT.
type errSocks struct{ msg string }

func (e errSocks) Error() string { return "socks: " + e.msg }

// ServeSOCKS accepts SOCKS5 clients on ln until it is closed.
func (f *Forwarder) ServeSOCKS(ctx context.Context, ln net.Listener) error {
	return f.accept(ctx, ln, func(c net.Conn) { f.handleSOCKS(ctx, c) })
}

func (f *Forwarder) handleSOCKS(ctx context.Context, c net.Conn) {
	_ = c.SetDeadline(f.o.Clock.Now().Add(socksHandshakeTimeout))
	br := bufio.NewReader(c)
	dest, err := socksRequest(br, c)
	if err != nil {
		f.o.Log.Warn(fmt.Sprintf("SOCKS client %s: %v", c.RemoteAddr(), err))
		_ = c.Close()
		return
	}
	t, err := f.tunnel(ctx, dest)
	if err != nil {
		if !errors.Is(err, ErrForwarderClosed) && ctx.Err() == nil {
			f.o.Log.Warn(fmt.Sprintf("SOCKS client %s: no session to %s: %v", c.RemoteAddr(), dest, err))
		}
		_ = socksReply(c, socksGeneralFailure)
		_ = c.Close()
		return
	}
	// The agent confirms nothing before data flows (a failed dial comes
	// later as ConnectToPortError and closes the stream), so success is
	// the answer once the session exists.
	if err := socksReply(c, socksSucceeded); err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	conn := net.Conn(c)
	if br.Buffered() > 0 {
		// A client that sent data right behind its request.
		conn = &bufferedConn{Conn: c, r: br}
	}
	for range 2 {
		if err := t.carry(ctx, conn); !errors.Is(err, errTunnelDead) {
			return
		}
		if t, err = f.tunnel(ctx, dest); err != nil {
			break
		}
	}
	_ = c.Close()
}

// socksRequest reads the greeting and the request; it answers the
// greeting and, for requests it refuses, the request.
func socksRequest(r *bufio.Reader, w io.Writer) (Destination, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Destination{}, errSocks{"reading the greeting: " + err.Error()}
	}
	if hdr[0] != socksVersion {
		return Destination{}, errSocks{fmt.Sprintf("version %d, only SOCKS5 is served", hdr[0])}
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return Destination{}, errSocks{"reading the methods: " + err.Error()}
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == socksNoAuth
	}
	if !noAuth {
		_, _ = w.Write([]byte{socksVersion, socksNoAcceptable})
		return Destination{}, errSocks{"the client offers no method without authentication"}
	}
	if _, err := w.Write([]byte{socksVersion, socksNoAuth}); err != nil {
		return Destination{}, err
	}
	var req [4]byte
	if _, err := io.ReadFull(r, req[:]); err != nil {
		return Destination{}, errSocks{"reading the request: " + err.Error()}
	}
	if req[0] != socksVersion {
		return Destination{}, errSocks{fmt.Sprintf("request version %d", req[0])}
	}
	var host string
	switch req[3] {
	case socksAtypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return Destination{}, errSocks{"reading the address: " + err.Error()}
		}
		host = netip.AddrFrom4(a).String()
	case socksAtypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return Destination{}, errSocks{"reading the address: " + err.Error()}
		}
		host = netip.AddrFrom16(a).String()
	case socksAtypDomain:
		n, err := r.ReadByte()
		if err != nil {
			return Destination{}, errSocks{"reading the name: " + err.Error()}
		}
		name := make([]byte, n)
		if _, err := io.ReadFull(r, name); err != nil {
			return Destination{}, errSocks{"reading the name: " + err.Error()}
		}
		host = string(name)
		if !ValidHostName(host) {
			_ = socksReply(w, socksGeneralFailure)
			return Destination{}, errSocks{fmt.Sprintf("host name %q is not a DNS name", host)}
		}
	default:
		_ = socksReply(w, socksAtypNotSupported)
		return Destination{}, errSocks{fmt.Sprintf("address type %d", req[3])}
	}
	var pb [2]byte
	if _, err := io.ReadFull(r, pb[:]); err != nil {
		return Destination{}, errSocks{"reading the port: " + err.Error()}
	}
	port := int(binary.BigEndian.Uint16(pb[:]))
	if req[1] != socksCmdConnect {
		_ = socksReply(w, socksCmdNotSupported)
		return Destination{}, errSocks{fmt.Sprintf("command %d to %s, only CONNECT is served", req[1], net.JoinHostPort(host, strconv.Itoa(port)))}
	}
	if port == 0 {
		_ = socksReply(w, socksGeneralFailure)
		return Destination{}, errSocks{"port 0"}
	}
	return Destination{Host: host, Port: port}, nil
}

// ValidHostName accepts what the agent could resolve: letters, digits,
// '-', '.', '_' (no spaces or control bytes, which would reach the
// document parameter and the logs).
func ValidHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range []byte(h) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// socksReply answers a request; the bound address is not meaningful here.
func socksReply(w io.Writer, code byte) error {
	_, err := w.Write([]byte{socksVersion, code, 0, socksAtypIPv4, 0, 0, 0, 0, 0, 0})
	return err
}

// bufferedConn reads first what the SOCKS parser buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

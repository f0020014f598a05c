package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ssmproxy/ssmproxy/proxy"
)

// The -L and -D specifications of `ssmproxy forward`, in ssh's syntax
// (ssh(1) -L and -D): [BIND:]LPORT:HOST:RPORT, unix:PATH:HOST:RPORT and
// [BIND:]PORT; IPv6 addresses in brackets.

// listenSpec is where a listener binds.
type listenSpec struct {
	network string // "tcp" or "unix"
	address string // host:port or a path
}

func (l listenSpec) String() string {
	if l.network == "unix" {
		return "unix:" + l.address
	}
	return l.address
}

// loopback reports whether the listener is reachable from this machine
// only (unix sockets count: they are files with permissions).
func (l listenSpec) loopback() bool {
	if l.network == "unix" {
		return true
	}
	host, _, _ := net.SplitHostPort(l.address)
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// localForward is one -L.
type localForward struct {
	listen listenSpec
	dest   proxy.Destination // Host "" is the instance itself
	spec   string            // as given, for messages
}

// parseLocalForward parses [BIND:]LPORT:HOST:RPORT or unix:PATH:HOST:RPORT.
// HOST "localhost" means the instance itself.
func parseLocalForward(spec string) (localForward, error) {
	bad := func(why string) (localForward, error) {
		return localForward{}, usagef("forward: -L %q: %s (want [BIND:]LPORT:HOST:RPORT or unix:PATH:HOST:RPORT)", spec, why)
	}
	rest, rport, ok := cutLast(spec)
	if !ok {
		return bad("missing the remote port")
	}
	port, err := parsePort(rport, false)
	if err != nil {
		return bad("remote " + err.Error())
	}
	rest, host, ok := cutLastHost(rest)
	if !ok || host == "" {
		return bad("missing the destination host")
	}
	if !validDestHost(host) {
		return bad(fmt.Sprintf("destination host %q is not a host name or address", host))
	}
	listen, err := parseListen(rest)
	if err != nil {
		return bad(err.Error())
	}
	dest := proxy.Destination{Host: host, Port: port}
	if strings.EqualFold(host, "localhost") {
		dest.Host = ""
	}
	return localForward{listen: listen, dest: dest, spec: spec}, nil
}

// parseDynamic parses -D [BIND:]PORT (or unix:PATH).
func parseDynamic(spec string) (listenSpec, error) {
	l, err := parseListen(spec)
	if err != nil {
		return l, usagef("forward: -D %q: %s (want [BIND:]PORT)", spec, err)
	}
	return l, nil
}

// parseListen parses [BIND:]PORT or unix:PATH; BIND defaults to 127.0.0.1.
func parseListen(s string) (listenSpec, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return listenSpec{}, fmt.Errorf("empty unix socket path")
		}
		return listenSpec{network: "unix", address: path}, nil
	}
	bind, lport := "127.0.0.1", s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		bind, lport = s[:i], s[i+1:]
		bind = strings.TrimSuffix(strings.TrimPrefix(bind, "["), "]")
		switch bind {
		case "":
			bind = "127.0.0.1"
		case "*":
			bind = "0.0.0.0"
		}
		if bind != "localhost" {
			if _, err := netip.ParseAddr(bind); err != nil {
				return listenSpec{}, fmt.Errorf("bind address %q is not an IP address or localhost", bind)
			}
		}
	}
	port, err := parsePort(lport, true)
	if err != nil {
		return listenSpec{}, fmt.Errorf("local %s", err.Error())
	}
	return listenSpec{network: "tcp", address: net.JoinHostPort(bind, strconv.Itoa(port))}, nil
}

// parsePort accepts 1..65535, and 0 (pick a free port) where allowed.
func parsePort(s string, zeroOK bool) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !zeroOK) || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("port %q is not a number from %d to 65535", s, map[bool]int{true: 0, false: 1}[zeroOK])
	}
	return p, nil
}

// cutLast splits at the last ':'.
func cutLast(s string) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", s, false
	}
	return s[:i], s[i+1:], true
}

// cutLastHost splits "...:HOST" where HOST may be a bracketed IPv6 address.
func cutLastHost(s string) (before, host string, ok bool) {
	if strings.HasSuffix(s, "]") {
		i := strings.LastIndex(s, "[")
		if i < 0 {
			return "", "", false
		}
		host = s[i+1 : len(s)-1]
		before = s[:i]
		if before != "" {
			if !strings.HasSuffix(before, ":") {
				return "", "", false
			}
			before = before[:len(before)-1]
		}
		return before, host, true
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", s, true
	}
	return s[:i], s[i+1:], true
}

// validDestHost accepts an IP address or a DNS name: the agent resolves it
// on the instance (docs/protocol.md 12), and it reaches the document's
// parameters and our logs, so nothing else is let through.
func validDestHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return proxy.ValidHostName(h)
}

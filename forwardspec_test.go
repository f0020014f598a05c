package main

import (
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/proxy"
)

// TestParseLocalForward: ssh's -L syntax, the unix: form, IPv6 in
// brackets, and clear refusals.
func TestParseLocalForward(t *testing.T) {
	for _, c := range []struct {
		spec, network, addr string
		dest                proxy.Destination
		loopback            bool
	}{
		{"5432:db.internal:5432", "tcp", "127.0.0.1:5432", proxy.Destination{Host: "db.internal", Port: 5432}, true},
		{"0:localhost:80", "tcp", "127.0.0.1:0", proxy.Destination{Port: 80}, true},
		{"8080:LOCALHOST:80", "tcp", "127.0.0.1:8080", proxy.Destination{Port: 80}, true},
		{"0.0.0.0:8080:10.0.1.5:443", "tcp", "0.0.0.0:8080", proxy.Destination{Host: "10.0.1.5", Port: 443}, false},
		{"*:8080:10.0.1.5:443", "tcp", "0.0.0.0:8080", proxy.Destination{Host: "10.0.1.5", Port: 443}, false},
		{":8080:h:1", "tcp", "127.0.0.1:8080", proxy.Destination{Host: "h", Port: 1}, true},
		{"[::1]:9000:[fd00::5]:22", "tcp", "[::1]:9000", proxy.Destination{Host: "fd00::5", Port: 22}, true},
		{"localhost:9000:h:22", "tcp", "localhost:9000", proxy.Destination{Host: "h", Port: 22}, true},
		{"unix:/tmp/x.sock:db:5432", "unix", "/tmp/x.sock", proxy.Destination{Host: "db", Port: 5432}, true},
		{"unix:/tmp/a:b.sock:db:5432", "unix", "/tmp/a:b.sock", proxy.Destination{Host: "db", Port: 5432}, true},
	} {
		lf, err := parseLocalForward(c.spec)
		if err != nil {
			t.Errorf("%s: %v", c.spec, err)
			continue
		}
		if lf.listen.network != c.network || lf.listen.address != c.addr || lf.dest != c.dest || lf.listen.loopback() != c.loopback {
			t.Errorf("%s: got %+v %+v loopback %v", c.spec, lf.listen, lf.dest, lf.listen.loopback())
		}
	}
	for _, c := range []struct{ spec, why string }{
		{"5432", "missing"},
		{"5432:db", "remote port"},
		{"5432:db:0", "remote port"},
		{"5432:db:65536", "remote port"},
		{"70000:db:5432", "local port"},
		{"x:5432:db:5432", "bind address"},
		{"5432::5432", "destination host"},
		{"5432:db host:5432", "not a host name"},
		{"unix::db:5432", "empty unix socket path"},
		{"5432:db:05432", "remote port"},
	} {
		_, err := parseLocalForward(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.why) || exitCode(err) != exitUsage {
			t.Errorf("%s: %v; want a usage error about %q", c.spec, err, c.why)
		}
	}
}

// TestParseForwardCommandLine: flags before or after TARGET, several -L,
// -D, the documents the broker must allow, and the refusals.
func TestParseForwardCommandLine(t *testing.T) {
	o, err := parseForward([]string{"-L", "0:localhost:22", "i-0123456789abcdef0", "-L", "0:db:5432", "--quiet"})
	if err != nil {
		t.Fatal(err)
	}
	if o.target != "i-0123456789abcdef0" || len(o.locals) != 2 || !o.quiet {
		t.Fatalf("%+v", o)
	}
	docs := strings.Join(o.documents(), ",")
	if !strings.Contains(docs, "AWS-StartPortForwardingSession") || !strings.Contains(docs, "ToRemoteHost") {
		t.Fatalf("documents %s, want both", docs)
	}
	o, err = parseForward([]string{"i-0123456789abcdef0", "-D", "1080"})
	if err != nil || o.dynamic[0].address != "127.0.0.1:1080" || strings.Join(o.documents(), ",") != "AWS-StartPortForwardingSessionToRemoteHost" {
		t.Fatalf("-D: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"i-0123456789abcdef0"},
		{"-L", "0:db:5432"},
		{"i-0123456789abcdef0", "i-0123456789abcdef1", "-L", "0:db:5432"},
		{"i-0123456789abcdef0", "-L", "nonsense"},
		{"i-0123456789abcdef0", "-L", "5432:db:5432", "-L", "5432:db2:5432"},
		{"i-0123456789abcdef0", "-L", "0:db:5432", "--client-version", "1.0.0.0"},
	} {
		if _, err := parseForward(args); err == nil || exitCode(err) != exitUsage {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

//go:build unix

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// TestSSHByName: ssh to a Name tag through the real binaries, with a role:
// the lookup runs with its own read-only credentials, the session with the
// per-target ones (two AssumeRole calls, two cache entries); a second ssh
// (as scp and rsync make) is answered from both caches with no STS and no
// describe call; an ambiguous name and an offline agent fail with their
// exit codes and one line per candidate (docs/architecture.md section 6).
func TestSSHByName(t *testing.T) {
	d := startSSHD(t)
	f := startFake(t, "-role", brokerRole,
		"-target", "i-0aaaaaaaaaaaaaaa1,name=web-1,tag:env=prod,ip=10.0.0.11,dns=ip-10-0-0-11.ec2.internal",
		"-target", "i-0aaaaaaaaaaaaaaa2,name=db,tag:env=prod",
		"-target", "mi-0bbbbbbbbbbbbbbb1,name=db,ping=ConnectionLost,agent=3.1.0.0",
		"-target", "i-0aaaaaaaaaaaaaaa3,name=batch,ping=ConnectionLost")
	conf := d.sshConfig(t, "")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "Host i-* mi-*", "Host *", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := f.environ("XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "SSMPROXY_LOCK_DIR="+filepath.Join(dir, "locks"),
		"SSMPROXY_ROLE_ARN="+brokerRoleARN)

	describes := func(st fakeaws.Stats) int64 {
		return st.API["DescribeInstanceInformation"]["200"] + st.API["DescribeInstances"]["200"]
	}
	out, _ := run(t, env, nil, "ssh", "-F", conf, "web-1", "echo by name")
	if out != "by name\n" {
		t.Fatalf("stdout %q", out)
	}
	st := f.stats()
	if st.STS["AssumeRole"] != 2 || describes(st) == 0 || st.API["StartSession"]["200"] != 1 {
		t.Fatalf("first ssh: AssumeRole %d (want 2: lookup and session), describe calls %d, API %v",
			st.STS["AssumeRole"], describes(st), st.API)
	}
	var ss []fakeaws.SessionInfo
	if err := f.getJSON("/_fake/sessions", &ss); err != nil || len(ss) != 1 || ss[0].Target != "i-0aaaaaaaaaaaaaaa1" {
		t.Fatalf("sessions %+v %v", ss, err)
	}
	// The burst: the same name again, by its DNS name too (a different
	// query, so one more lookup, but no more minting).
	run(t, env, nil, "ssh", "-F", conf, "web-1", "true")
	st2 := f.stats()
	if st2.STS["AssumeRole"] != 2 || describes(st2) != describes(st) {
		t.Fatalf("second ssh: AssumeRole %d, describe calls %d → %d; want both answered from the caches",
			st2.STS["AssumeRole"], describes(st), describes(st2))
	}
	run(t, env, nil, "ssh", "-F", conf, "ip-10-0-0-11.ec2.internal", "true")
	if st3 := f.stats(); st3.STS["AssumeRole"] != 2 || describes(st3) == describes(st2) || st3.API["StartSession"]["200"] != 3 {
		t.Fatalf("by DNS name: AssumeRole %d, API %v", st3.STS["AssumeRole"], st3.API)
	}

	// Ambiguous: exit 2, one line per candidate, nothing started.
	_, stderr, code := connect(t, env, nil, "db", "22")
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code != 2 || len(lines) != 3 || !strings.Contains(lines[1], "i-0aaaaaaaaaaaaaaa2") ||
		!strings.Contains(lines[2], "mi-0bbbbbbbbbbbbbbb1") || !strings.Contains(lines[2], "ConnectionLost") || !strings.Contains(lines[2], "3.1.0.0") {
		t.Fatalf("ambiguous name: exit %d, stderr:\n%s", code, stderr)
	}
	// The one match is offline: exit 5, and it says so.
	if _, stderr, code := connect(t, env, nil, "batch", "22"); code != 5 || !strings.Contains(stderr, "not connected") {
		t.Fatalf("offline match: exit %d, stderr:\n%s", code, stderr)
	}
	if _, stderr, code := connect(t, env, nil, "tag:env=nowhere", "22"); code != 2 || !strings.Contains(stderr, "no running instance") {
		t.Fatalf("no match: exit %d, stderr:\n%s", code, stderr)
	}
	if st := f.stats(); st.API["StartSession"]["200"] != 3 {
		t.Fatalf("a failed lookup started a session: %v", st.API)
	}
}

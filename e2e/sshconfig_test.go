//go:build unix

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// TestSSHConfigGenerated (docs/ssh-config.md): "ssmproxy ssh-config
// --output" writes the fleet's Host blocks with the lookup scope's
// credentials; an ssh config that Includes the file reaches an instance by
// its Name alias with the real ssh, with no lookup at connect time
// (HostName is the id); a second generation leaves the file unchanged.
func TestSSHConfigGenerated(t *testing.T) {
	d := startSSHD(t)
	f := startFake(t, "-role", brokerRole,
		"-target", "i-0aaaaaaaaaaaaaaa1,name=web-1,tag:env=prod",
		"-target", "i-0aaaaaaaaaaaaaaa2,name=db,tag:env=prod",
		"-target", "i-0aaaaaaaaaaaaaaa3,name=db,tag:env=staging",
		"-target", "mi-0bbbbbbbbbbbbbbb1,name=rack-7,ping=ConnectionLost")
	dir := t.TempDir()
	env := f.environ("XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "SSMPROXY_LOCK_DIR="+filepath.Join(dir, "locks"),
		"SSMPROXY_ROLE_ARN="+brokerRoleARN)
	generated := filepath.Join(dir, "ssmproxy_config")
	conf := filepath.Join(dir, "ssh_config")
	// The Include first, then what the test's sshd needs for every host.
	c := "Include " + generated + "\n\nHost *\n    User " + d.User + "\n    Port " + d.Port + "\n    IdentityFile " + d.UserKey +
		"\n    IdentitiesOnly yes\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n    BatchMode yes\n"
	if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	gen := func() string {
		_, errOut := run(t, env, nil, ssmproxyBin, "ssh-config", "--program", ssmproxyBin, "--output", generated, "--ssh-config", conf)
		if strings.Contains(errOut, "add this line") {
			t.Fatalf("Include reported missing: %s", errOut)
		}
		if !strings.Contains(errOut, `i-0aaaaaaaaaaaaaaa2 (Name "db"): Name shared by 2 instances`) {
			t.Fatalf("clash not reported: %s", errOut)
		}
		return errOut
	}
	if errOut := gen(); !strings.Contains(errOut, "wrote "+generated) {
		t.Fatalf("stderr %s", errOut)
	}
	b, err := os.ReadFile(generated)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Host web-1 i-0aaaaaaaaaaaaaaa1\n") || !strings.Contains(string(b), "Host rack-7 mi-0bbbbbbbbbbbbbbb1\n") {
		t.Fatalf("generated:\n%s", b)
	}
	t.Logf("generated:\n%s", b)

	before := f.stats()
	out, _ := run(t, env, nil, "ssh", "-F", conf, "web-1", "echo by alias")
	if out != "by alias\n" {
		t.Fatalf("stdout %q", out)
	}
	var ss []fakeaws.SessionInfo
	if err := f.getJSON("/_fake/sessions", &ss); err != nil || len(ss) != 1 || ss[0].Target != "i-0aaaaaaaaaaaaaaa1" {
		t.Fatalf("sessions %+v %v", ss, err)
	}
	after := f.stats()
	describes := func(st fakeaws.Stats) int64 {
		return st.API["DescribeInstanceInformation"]["200"] + st.API["DescribeInstances"]["200"]
	}
	if describes(after) != describes(before) {
		t.Fatalf("ssh by alias looked the name up again (%d → %d describe calls); HostName should be the id",
			describes(before), describes(after))
	}
	// An instance whose Name clashed is still reachable by its id alias.
	if out, _ := run(t, env, nil, "ssh", "-F", conf, "i-0aaaaaaaaaaaaaaa2", "echo by id"); out != "by id\n" {
		t.Fatalf("stdout %q", out)
	}

	if errOut := gen(); !strings.Contains(errOut, generated+" unchanged") {
		t.Fatalf("second generation: %s", errOut)
	}
	if b2, _ := os.ReadFile(generated); string(b2) != string(b) {
		t.Fatal("second generation changed the file")
	}
}

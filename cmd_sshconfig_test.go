//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/sshconfig"
)

// sshConfigEnv runs ssmproxy (the test binary) with a home of its own,
// against ts, with a role: the listing goes through the broker's lookup
// scope, whose session policy the fake enforces on every describe call.
type sshConfigEnv struct {
	ts   *fakeaws.TestServer
	home string
	env  []string
}

func newSSHConfigEnv(t *testing.T, specs ...string) *sshConfigEnv {
	ts := fakeaws.StartTest(t, fakeaws.Options{PageSize: 2})
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})
	for _, s := range specs {
		tg, err := fakeaws.ParseTargetSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		ts.AddTarget(tg)
	}
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	return &sshConfigEnv{ts: ts, home: home, env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "XDG_CACHE_HOME=" + filepath.Join(home, "cache"),
		"SSMPROXY_LOCK_DIR=" + filepath.Join(home, "locks"),
		"SSMPROXY_KEYRING_BACKEND=file", "AWS_REGION=us-east-1", "SSMPROXY_FILE_PASSPHRASE=pw",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL=" + ts.URL(), broker.EnvRoleARN + "=" + ts.IAM.RoleARN(testRole),
		"AWS_ACCESS_KEY_ID=" + ts.User.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + ts.User.SecretAccessKey}}
}

func (e *sshConfigEnv) run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	a, _ := json.Marshal(args)
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append([]string(nil), e.env...), envRunArgs+"="+string(a))
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), s.String(), code
}

// TestSSHConfigCLI: the command against the fake through the broker: the
// fleet over several pages, a clash reported, --region passed on, a tag
// filter; --output writes, then reports unchanged with the same bytes,
// asks for the Include line until ~/.ssh/config has it, and refuses a file
// that is not its own; a denied listing exits 4.
func TestSSHConfigCLI(t *testing.T) {
	e := newSSHConfigEnv(t,
		"i-0aaaaaaaaaaaaaaa1,name=web-1,tag:env=prod",
		"i-0aaaaaaaaaaaaaaa2,name=web-2,tag:env=prod",
		"i-0aaaaaaaaaaaaaaa3,name=db,tag:env=prod",
		"i-0aaaaaaaaaaaaaaa4,name=db,tag:env=staging,ping=ConnectionLost",
		"mi-0bbbbbbbbbbbbbbb1,name=rack-7")
	out, errOut, code := e.run(t, "ssh-config", "--region", "us-east-1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		sshconfig.Marker + "\n# Command: ssmproxy ssh-config --region us-east-1\n",
		"Host web-1 i-0aaaaaaaaaaaaaaa1\n    HostName i-0aaaaaaaaaaaaaaa1\n    ProxyCommand ssmproxy connect --region us-east-1 %h %p\n",
		"Host rack-7 mi-0bbbbbbbbbbbbbbb1\n", "Host i-0aaaaaaaaaaaaaaa3\n", "Host i-0aaaaaaaaaaaaaaa4\n",
		"\nHost i-* mi-*\n    ProxyCommand ssmproxy connect --region us-east-1 %h %p\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(errOut, "shared by 2 instances") != 2 {
		t.Errorf("stderr %q: want both db instances reported", errOut)
	}
	if st := e.ts.Stats(); st.STS["AssumeRole"] != 1 {
		t.Errorf("AssumeRole %d, want 1 (the lookup scope)", st.STS["AssumeRole"])
	}

	out, errOut, code = e.run(t, "ssh-config", "--tag", "env=prod", "--tag", "Name=web-2")
	if code != 0 || !strings.Contains(out, "Host web-2 ") || strings.Contains(out, "web-1") || strings.Contains(out, "rack-7") {
		t.Fatalf("--tag env=prod --tag Name=web-2: exit %d %s\n%s", code, errOut, out)
	}

	file := filepath.Join(e.home, ".ssh", "ssmproxy_config")
	_, errOut, code = e.run(t, "ssh-config", "-o", "~/.ssh/ssmproxy_config")
	if code != 0 || !strings.Contains(errOut, "wrote "+file) ||
		!strings.Contains(errOut, "before any Host block:\n  Include ~/.ssh/ssmproxy_config\n") {
		t.Fatalf("first write: exit %d, stderr %s", code, errOut)
	}
	first, _ := os.ReadFile(file)
	if err := os.WriteFile(filepath.Join(e.home, ".ssh", "config"), []byte("Include ssmproxy_*\nHost x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = e.run(t, "ssh-config", "-o", "~/.ssh/ssmproxy_config")
	if code != 0 || !strings.Contains(errOut, file+" unchanged") || strings.Contains(errOut, "Include") {
		t.Fatalf("second write: exit %d, stderr %s", code, errOut)
	}
	if again, _ := os.ReadFile(file); !bytes.Equal(first, again) || !strings.Contains(string(first), "--output ~/.ssh/ssmproxy_config\n") {
		t.Fatalf("rewritten:\n%s\n%s", first, again)
	}

	mine := filepath.Join(e.home, ".ssh", "mine")
	if err := os.WriteFile(mine, []byte("Host bastion\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = e.run(t, "ssh-config", "--output", mine)
	if code != exitUsage || !strings.Contains(errOut, "not generated by ssmproxy") {
		t.Fatalf("foreign file: exit %d, stderr %s", code, errOut)
	}
	if b, _ := os.ReadFile(mine); string(b) != "Host bastion\n" {
		t.Fatalf("foreign file changed: %q", b)
	}
	for _, bad := range [][]string{{"--tag", "env"}, {"--profile", "a\nHost *"}, {"--program", "x\ny"}, {"--region", "us east"}} {
		if _, errOut, code = e.run(t, append([]string{"ssh-config"}, bad...)...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", bad, code, exitUsage, errOut)
		}
	}

	e.ts.FailAPI("DescribeInstanceInformation", "AccessDeniedException", 400, 10)
	_, errOut, code = e.run(t, "ssh-config")
	if code != exitAccessDenied || !strings.Contains(errOut, "listing the fleet") {
		t.Fatalf("denied: exit %d, stderr %s", code, errOut)
	}
}

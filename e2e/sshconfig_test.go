//go:build unix

package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSSHConfigGenerated (docs/ssh-config.md): "ssmproxy ssh-config
// --output FILE" writes Host blocks for the fleet; a real ssh reaches an
// instance by its Name alias through the file, Included from an ssh
// config; a shared name is left out and listed; the Include hint is
// printed only while the Include is missing; a second run leaves the file
// unchanged; a file that is not ssmproxy's is never overwritten.
func TestSSHConfigGenerated(t *testing.T) {
	d := startSSHD(t)
	f := startFake(t,
		"-target", "i-0aaaaaaaaaaaaaaa1,name=web-1,tag:env=prod",
		"-target", "i-0aaaaaaaaaaaaaaa2,name=db,tag:env=prod",
		"-target", "i-0aaaaaaaaaaaaaaa3,name=db,tag:env=dev")
	dir := t.TempDir()
	// ProxyCommand runs "ssmproxy" from PATH.
	env := f.environ("XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "PATH="+filepath.Dir(ssmproxyBin)+":"+os.Getenv("PATH"))
	out := filepath.Join(dir, "ssmproxy_config")
	conf := filepath.Join(dir, "ssh_config")
	_, stderr := run(t, env, nil, ssmproxyBin, "ssh-config", "--output", out, "--ssh-config", conf)
	if !strings.Contains(stderr, `name "db" left out (2 nodes share it)`) || !strings.Contains(stderr, "Include "+out) {
		t.Fatalf("stderr %q: want the shared name listed and the Include line", stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Host web-1 i-0aaaaaaaaaaaaaaa1\n") || strings.Contains(string(b), "Host db") ||
		!strings.Contains(string(b), "Host i-0aaaaaaaaaaaaaaa2\n") || !strings.Contains(string(b), "Host i-* mi-*\n") {
		t.Fatalf("generated file:\n%s", b)
	}
	main := "Include " + out + "\nHost *\n    User " + d.User + "\n    Port " + d.Port + "\n    IdentityFile " + d.UserKey +
		"\n    IdentitiesOnly yes\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n    BatchMode yes\n"
	if err := os.WriteFile(conf, []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := run(t, env, nil, "ssh", "-F", conf, "web-1", "echo via the generated config"); got != "via the generated config\n" {
		t.Fatalf("ssh web-1: %q", got)
	}
	// Again: unchanged, and no Include hint now that conf includes it.
	_, stderr = run(t, env, nil, ssmproxyBin, "ssh-config", "--output", out, "--ssh-config", conf)
	if !strings.Contains(stderr, "unchanged") || strings.Contains(stderr, "Include ") {
		t.Fatalf("second run: %q", stderr)
	}
	if b2, _ := os.ReadFile(out); string(b2) != string(b) {
		t.Fatal("the second run changed the file")
	}
	// Someone else's file of that name: refused, exit 2, untouched.
	if err := os.WriteFile(out, []byte("Host mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCode(t, env, ssmproxyBin, "ssh-config", "--output", out)
	if code != 2 || !strings.Contains(stderr, "not written by ssmproxy") {
		t.Fatalf("foreign file: exit %d, %q", code, stderr)
	}
	if b3, _ := os.ReadFile(out); string(b3) != "Host mine\n" {
		t.Fatal("a foreign file was overwritten")
	}
}

// runCode runs a command with env and returns stdout, stderr and its exit
// code (failing the test only when it cannot run).
func runCode(t *testing.T, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

//go:build unix

// Package e2e runs the real binaries: bin/ssmproxy as ssh's ProxyCommand
// against bin/fakeaws, with the real OpenSSH client and server (and rsync),
// plus a pure-Go SSH variant that needs no OpenSSH server.
//
// OpenSSH tests skip when ssh or sshd is missing, unless
// SSMPROXY_E2E_REQUIRE_OPENSSH=1 (set by make e2e and CI), which turns the
// skip into a failure.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

var (
	ssmproxyBin string
	fakeawsBin  string
	awscliBin   string // e2e/awscli, the stand-in for aws ssm start-session
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ssmproxy-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ssmproxyBin = filepath.Join(dir, "ssmproxy")
	fakeawsBin = filepath.Join(dir, "fakeaws")
	awscliBin = filepath.Join(dir, "awscli")
	for _, b := range [][2]string{{ssmproxyBin, ".."}, {fakeawsBin, "../fakeaws/cmd/fakeaws"}, {awscliBin, "./awscli"}} {
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", b[1], err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireOpenSSH skips (or fails under SSMPROXY_E2E_REQUIRE_OPENSSH=1) when
// the named OpenSSH programs are missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if tool == "sshd" {
				if _, err := rig.SSHDPath(); err == nil {
					continue
				}
			}
			if os.Getenv("SSMPROXY_E2E_REQUIRE_OPENSSH") == "1" {
				t.Fatalf("%s is required (SSMPROXY_E2E_REQUIRE_OPENSSH=1) but not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

// fake is a running bin/fakeaws process; stopping it (at cleanup) fails
// the test on any error-level protocol violation it recorded, except the
// codes in allow.
type fake struct {
	t *testing.T
	*rig.Fake
	env   []string
	url   string
	allow map[string]bool
}

func startFake(t *testing.T, args ...string) *fake {
	t.Helper()
	dir := t.TempDir()
	rf, err := rig.StartFake(fakeawsBin, dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{t: t, Fake: rf, env: rf.Env, url: rf.URL, allow: map[string]bool{}}
	t.Cleanup(f.stop)
	if mode, err := rig.EnvFileMode(dir); err != nil || mode != 0o600 {
		t.Errorf("env file mode %v (%v), want 0600: it holds a secret", mode, err)
	}
	return f
}

func (f *fake) stop() {
	// Violations first, while the fake still answers.
	if vs, err := f.Violations(); err == nil {
		for _, v := range vs {
			if !f.allow[v.Code] {
				f.t.Errorf("fakeaws violation %s: %s (session %s)", v.Code, v.Detail, v.Session)
			}
		}
	} else {
		f.t.Errorf("reading violations: %v", err)
	}
	if !f.Stop() {
		f.t.Errorf("fakeaws did not stop on SIGTERM")
	}
}

func (f *fake) getJSON(path string, v any) error { return f.GetJSON(path, v) }
func (f *fake) post(path, body string) error     { return f.Post(path, body) }

func (f *fake) stats() fakeaws.Stats {
	st, err := f.Stats()
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// environ is the environment for ssmproxy: the fake's endpoints and keys,
// nothing from the developer's own AWS setup.
func (f *fake) environ(extra ...string) []string {
	return f.Environ(f.t.TempDir(), extra...)
}

// sshd is a throwaway OpenSSH server on loopback.
type sshd struct{ *rig.SSHD }

func startSSHD(t *testing.T) *sshd {
	t.Helper()
	requireTools(t, "ssh", "sshd", "ssh-keygen")
	d, err := rig.StartSSHD(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return &sshd{d}
}

// sshConfig writes an ssh_config using ssmproxy (with extra connect flags)
// as the ProxyCommand and returns its path.
func (d *sshd) sshConfig(t *testing.T, proxyArgs string) string {
	p, err := rig.SSHConfig(t.TempDir(), d.User, d.UserKey, d.Port, ssmproxyBin+" connect "+proxyArgs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs a command with env, failing the test on a non-zero exit.
func run(t *testing.T, env []string, stdin io.Reader, name string, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, errb, err := rig.Run(ctx, env, stdin, name, args...)
	if err != nil {
		t.Fatalf("%v\nstdout: %s", err, tail(out))
	}
	return out, errb
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// lineReader helps interactive tests wait for output lines.
type lineReader struct {
	lines chan string
}

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.lines <- sc.Text()
		}
		close(lr.lines)
	}()
	return lr
}

func (lr *lineReader) expect(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	select {
	case got, ok := <-lr.lines:
		if !ok {
			t.Fatalf("output ended, want %q", want)
		}
		if got != want {
			t.Fatalf("got line %q, want %q", got, want)
		}
	case <-time.After(timeout):
		t.Fatalf("no line within %s, want %q", timeout, want)
	}
}

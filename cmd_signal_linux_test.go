//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/internal/testkit"
	"github.com/ssmproxy/ssmproxy/keyring"
)

// onTerminal is ssmproxy (this test binary) running in a session of its own
// whose controlling terminal is a fresh pseudo-terminal.
type onTerminal struct {
	cmd    *exec.Cmd
	master *os.File
	slave  *os.File
	mu     sync.Mutex
	shown  bytes.Buffer
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

// startOnTerminal starts ssmproxy with args on a new pseudo-terminal, as
// the foreground job, with stdin and stdout as pipes (as ssh gives a
// ProxyCommand).
func startOnTerminal(t *testing.T, env []string, args ...string) *onTerminal {
	t.Helper()
	master, slavePath, err := testkit.OpenPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		t.Fatal(err)
	}
	p := &onTerminal{master: master, slave: slave, done: make(chan struct{})}
	go func() {
		b := make([]byte, 256)
		for {
			n, err := master.Read(b)
			p.mu.Lock()
			p.shown.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	a, _ := json.Marshal(args)
	exe, _ := os.Executable()
	p.cmd = exec.Command(exe, "-test.run=^$")
	p.cmd.Env = append(env, envRunArgs+"="+string(a))
	// Stdin and stdout are pipes nobody writes to or reads from (ssh's
	// side of a ProxyCommand before the first byte); the terminal is only
	// the controlling terminal, reached as /dev/tty.
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = &bytes.Buffer{}
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 3}
	p.cmd.ExtraFiles = []*os.File{slave}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		stdin.Close()
		slave.Close()
		master.Close()
	})
	return p
}

func (p *onTerminal) terminal() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shown.String()
}

// echo reports whether the terminal echoes (TCGETS on the master reads the
// slave's settings).
func (p *onTerminal) echo(t *testing.T) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(p.master.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ECHO != 0
}

// wait returns the exit code, or fails when the process does not end in d.
func (p *onTerminal) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.cmd.Process.Signal(syscall.SIGQUIT) // a goroutine dump on stderr
		<-p.done
		t.Fatalf("ssmproxy did not exit within %s; terminal %q\nstderr: %s", d, p.terminal(), p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// mfaPromptEnv is an environment in which ssmproxy must ask for alice's MFA
// code: her key with its device is stored in the file keyring, the role is
// set, and no code comes from the environment or a program.
func mfaPromptEnv(t *testing.T, ts *fakeaws.TestServer) []string {
	t.Helper()
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})
	ts.IAM.AddMFADevice("alice", testSerial)
	dir := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"), "SSMPROXY_LOCK_DIR=" + filepath.Join(dir, "locks"),
		"SSMPROXY_KEYRING_BACKEND=file", "SSMPROXY_FILE_PASSPHRASE=pw", "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL=" + ts.URL(), broker.EnvRoleARN + "=" + ts.IAM.RoleARN(testRole)}
	store, err := keyring.Open(context.Background(), keyring.Options{Backend: "file", Persistent: true,
		FileDir: filepath.Join(dir, "config", "ssmproxy", "keyring"), LockPath: filepath.Join(dir, "locks", "keyring-ssmproxy.lock"),
		Getenv: func(k string) string {
			if k == keyring.EnvFilePassphrase {
				return "pw"
			}
			return ""
		}})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := json.Marshal(broker.SourceKey{AccessKeyID: ts.User.AccessKeyID, SecretAccessKey: ts.User.SecretAccessKey,
		MFASerial: testSerial, ARN: ts.User.ARN()})
	if err := store.Set(context.Background(), keyring.Item{Key: broker.SourceItemKey("default"), Data: key}); err != nil {
		t.Fatal(err)
	}
	return env
}

// TestPromptSignalReleases (docs/credentials.md 5.6, 5.7): SIGTERM while
// "ssmproxy connect" waits at the terminal for an MFA code, under the MFA
// lock that keeps prompts one at a time, ends it with 128+15, the terminal
// echoes again, and a second connect waiting for that lock reaches its own
// prompt at once.
func TestPromptSignalReleases(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	signalAtPrompt(t, mfaPromptEnv(t, ts))
}

// TestPromptSignalReleasesRoleChain: the same for a code the SDK asks for
// while it resolves a role chain (a source_profile with role_arn and
// mfa_serial), under the role lock. The SDK calls ssmproxy's token provider
// without a context, and its credentials cache answers a cancelled caller
// at once while the prompt goes on: before the prompt followed the
// retrieve's context, the process exited with the terminal's echo off.
func TestPromptSignalReleasesRoleChain(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})
	ts.IAM.AddRole(iam.Role{Name: "mid", MaxSession: 12 * time.Hour, RequireMFA: true})
	ts.IAM.AddMFADevice("alice", testSerial)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "aws-config")
	if err := os.WriteFile(cfg, []byte("[profile base]\naws_access_key_id = "+ts.User.AccessKeyID+
		"\naws_secret_access_key = "+ts.User.SecretAccessKey+
		"\n[profile mid]\nrole_arn = "+ts.IAM.RoleARN("mid")+"\nsource_profile = base\nmfa_serial = "+testSerial+
		"\n[profile top]\nrole_arn = "+ts.IAM.RoleARN(testRole)+"\nsource_profile = mid\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signalAtPrompt(t, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"), "SSMPROXY_LOCK_DIR=" + filepath.Join(dir, "locks"),
		"SSMPROXY_KEYRING_BACKEND=file", "SSMPROXY_FILE_PASSPHRASE=pw", "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=" + cfg, "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL=" + ts.URL(), "AWS_PROFILE=top"})
}

// signalAtPrompt starts two connects that need an MFA code; the first
// prompts, the second waits behind it. SIGTERM to the first must end it
// with 143 and echo restored, and let the second reach its prompt, which
// SIGHUP then ends with 129.
func signalAtPrompt(t *testing.T, env []string) {
	t.Helper()
	prompted := func(p *onTerminal) func() bool {
		return func() bool { return strings.Contains(p.terminal(), "MFA code for "+testSerial) }
	}
	first := startOnTerminal(t, env, "connect", fakeaws.DefaultInstance)
	if !waitFor(15*time.Second, prompted(first)) {
		t.Fatalf("no MFA prompt; terminal %q\nstderr: %s", first.terminal(), first.stderr.String())
	}
	if !waitFor(5*time.Second, func() bool { return !first.echo(t) }) {
		t.Fatal("echo is on while the code is asked")
	}
	second := startOnTerminal(t, env, "connect", fakeaws.DefaultInstance)
	// Let the second process reach the lock the first one holds.
	time.Sleep(time.Second)
	if prompted(second)() {
		t.Fatal("the second process prompted while the first one was asking")
	}
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	if code := first.wait(t, 10*time.Second); code != exitSignalBase+int(syscall.SIGTERM) {
		t.Fatalf("exit %d after SIGTERM, want %d\nstderr: %s", code, exitSignalBase+int(syscall.SIGTERM), first.stderr.String())
	}
	if !first.echo(t) {
		t.Fatal("the terminal's echo was not restored")
	}
	// The lock went with the first process: no waiting for its timeout.
	if !waitFor(5*time.Second, prompted(second)) {
		t.Fatalf("the second connect did not reach its prompt; terminal %q\nstderr: %s", second.terminal(), second.stderr.String())
	}
	t.Logf("second prompt %s after the first process got SIGTERM", time.Since(signalled).Round(time.Millisecond))
	_ = second.cmd.Process.Signal(syscall.SIGHUP)
	if code := second.wait(t, 10*time.Second); code != exitSignalBase+int(syscall.SIGHUP) {
		t.Fatalf("second: exit %d after SIGHUP\nstderr: %s", code, second.stderr.String())
	}
	if !second.echo(t) {
		t.Fatal("the second terminal's echo was not restored")
	}
}

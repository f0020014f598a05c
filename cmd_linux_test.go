//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/testkit"
)

// TestCredentialProcessNoTerminal: "ssmproxy credential-process" runs
// inside other programs, often inside ssh's ProxyCommand, while ssh owns the
// terminal. Even with a controlling terminal it never prompts there unless
// --allow-tty is given: without an MFA code from the environment, an MFA
// process or SSH_ASKPASS it fails at once with the fix, printing nothing on
// stdout and nothing on the terminal.
func TestCredentialProcessNoTerminal(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	// alice's key with her MFA device, as "ssmproxy login" stores it.
	env := mfaPromptEnv(t, ts)

	// Default: no prompt on the terminal.
	r := runOnTerminal(t, env, nil, "credential-process", "--target", fakeaws.DefaultInstance)
	if r.code != exitCredentials || r.stdout != "" {
		t.Fatalf("exit %d, stdout %q; want %d and nothing\nstderr: %s\nterminal: %q", r.code, r.stdout, exitCredentials, r.stderr, r.terminal)
	}
	if r.terminal != "" {
		t.Fatalf("credential-process wrote to the terminal: %q", r.terminal)
	}
	if !strings.Contains(r.stderr, testSerial) || !strings.Contains(r.stderr, "SSMPROXY_MFA_PROCESS") {
		t.Fatalf("stderr %q: want the device and the fix", r.stderr)
	}

	// --allow-tty: the code is asked on the terminal.
	r = runOnTerminal(t, env, func(terminal func() string, typeIn func(string)) {
		if waitFor(10*time.Second, func() bool { return strings.Contains(terminal(), "MFA code for "+testSerial) }) {
			typeIn("123456\n")
		}
	}, "credential-process", "--allow-tty", "--target", fakeaws.DefaultInstance)
	var out broker.CredentialProcessOutput
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || out.Version != 1 || out.Expiration == "" {
		t.Fatalf("--allow-tty: exit %d, stdout %q\nstderr: %s\nterminal: %q", r.code, r.stdout, r.stderr, r.terminal)
	}
}

type termResult struct {
	code                     int
	stdout, stderr, terminal string
}

// runOnTerminal runs ssmproxy (this test binary) with args in a new session
// whose controlling terminal is a fresh pseudo-terminal, in the foreground;
// interact may read what the terminal shows and type into it.
func runOnTerminal(t *testing.T, env []string, interact func(terminal func() string, typeIn func(string)), args ...string) termResult {
	t.Helper()
	master, slavePath, err := testkit.OpenPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var shown bytes.Buffer
	go func() {
		b := make([]byte, 256)
		for {
			n, err := master.Read(b)
			mu.Lock()
			shown.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	terminal := func() string { mu.Lock(); defer mu.Unlock(); return shown.String() }
	a, _ := json.Marshal(args)
	exe, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(env, envRunArgs+"="+string(a))
	cmd.Stdin = slave
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) } // a goroutine dump on stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer slave.Close() // open until the end: the master reads EIO once no slave is open
	if interact != nil {
		interact(terminal, func(s string) { _, _ = master.Write([]byte(s)) })
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("ssmproxy %v hung (waiting for the terminal?); terminal shows %q, stderr %q", args, terminal(), stderr.String())
	}
	r := termResult{stdout: stdout.String(), stderr: stderr.String(), terminal: terminal()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

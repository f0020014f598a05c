//go:build linux

package prompt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ssmproxy/ssmproxy/internal/testkit"
)

// ptyReader collects everything the terminal shows.
type ptyReader struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *ptyReader) run(master *os.File) {
	b := make([]byte, 256)
	for {
		n, err := master.Read(b)
		r.mu.Lock()
		r.buf.Write(b[:n])
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (r *ptyReader) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

func waitUntil(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// openTerminal opens a pseudo-terminal for the test: its master, the path
// of its slave, and what the terminal shows.
func openTerminal(t *testing.T) (*os.File, string, *ptyReader) {
	t.Helper()
	master, slave, err := testkit.OpenPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	shown := &ptyReader{}
	go shown.run(master)
	return master, slave, shown
}

// TestPromptTTY drives the terminal prompt through a pseudo-terminal: the
// prompt is written to the terminal, echo is off while the answer is typed
// (the secret never shows), and neither touches stdin or stdout.
func TestPromptTTY(t *testing.T) {
	master, slave, shown := openTerminal(t)
	p := Prompter{TTY: slave, NoAskpass: true}
	done := make(chan struct{})
	var got string
	var perr error
	go func() { defer close(done); got, perr = p.Secret(context.Background(), "ssmproxy: passphrase", "X") }()
	if !waitUntil(10*time.Second, func() bool { return strings.Contains(shown.String(), "ssmproxy: passphrase") }) {
		t.Fatalf("prompt not shown on the terminal: %q", shown.String())
	}
	// TCGETS on the master reads the slave's settings.
	echoOff := func() bool {
		tio, err := unix.IoctlGetTermios(int(master.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&unix.ECHO == 0
	}
	if !waitUntil(10*time.Second, echoOff) {
		t.Fatal("echo is still on while the secret is read")
	}
	if _, err := master.Write([]byte("typed-secret\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("tty prompt did not return")
	}
	if perr != nil || got != "typed-secret" {
		t.Fatalf("tty prompt: %q %v", got, perr)
	}
	// The prompt ends with the newline written after the read; an echo
	// would have come before it.
	if !waitUntil(5*time.Second, func() bool { return strings.HasSuffix(shown.String(), "\n") }) {
		t.Fatalf("no newline after the answer: %q", shown.String())
	}
	if s := shown.String(); strings.Contains(s, "typed-secret") {
		t.Fatalf("the secret was echoed: %q", s)
	}
	if echoOff() {
		t.Fatal("echo was not restored")
	}
}

// TestPromptTTYCancel: cancelling the context ends a terminal read nobody
// answers, promptly, and restores the echo.
func TestPromptTTYCancel(t *testing.T) {
	master, slave, shown := openTerminal(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Prompter{TTY: slave, NoAskpass: true}.Secret(ctx, "ssmproxy: never answered", "X")
		done <- err
	}()
	if !waitUntil(10*time.Second, func() bool { return strings.Contains(shown.String(), "never answered") }) {
		t.Fatalf("prompt not shown on the terminal: %q", shown.String())
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal read did not follow the context")
	}
	tio, err := unix.IoctlGetTermios(int(master.Fd()), unix.TCGETS)
	if err != nil || tio.Lflag&unix.ECHO == 0 {
		t.Fatalf("echo was not restored (%v)", err)
	}
}

// childEnv selects a child mode when the test binary runs itself.
const childEnv = "SSMPROXY_PROMPT_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "bgsession":
		os.Exit(bgSessionChild())
	case "bgprompt":
		os.Exit(bgPromptChild())
	}
	os.Exit(m.Run())
}

// bgSessionChild leads a session whose controlling terminal is the test's
// pseudo-terminal, and runs bgPromptChild in a background process group of
// it, as "ssh -f" or "cmd &" would.
func bgSessionChild() int {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=bgprompt")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		fmt.Println("grandchild:", err)
		return 1
	}
	return 0
}

// bgPromptChild asks through /dev/tty from a background process group.
func bgPromptChild() int {
	_, err := Prompter{NoAskpass: true}.Secret(context.Background(), "ssmproxy: background passphrase", "SSMPROXY_X")
	fmt.Println("result:", err)
	return 0
}

// TestPromptBackgroundProcessGroup: a process in a background process group
// of its terminal does not prompt there (the read would stop it with SIGTTIN,
// or race the foreground job for keystrokes); it falls through to the next
// method and fails with the hint.
func TestPromptBackgroundProcessGroup(t *testing.T) {
	_, slavePath, shown := openTerminal(t)
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	exe, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=bgsession")
	cmd.Stdin = slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("the background prompt hung (stopped by SIGTTIN/SIGTTOU?); terminal shows %q", shown.String())
	}
	if err != nil {
		t.Fatalf("child: %v %s", err, out)
	}
	if !strings.Contains(string(out), "foreground job") || !strings.Contains(string(out), "set SSMPROXY_X") {
		t.Fatalf("want a refusal naming the reason and the hint, got %q", out)
	}
	if strings.Contains(shown.String(), "background passphrase") {
		t.Fatalf("the prompt was written to the terminal: %q", shown.String())
	}
}

// TestSettleRestoresEcho: a prompt still reading when the process is about
// to exit (its goroutine was left behind by a caller that gave up) has its
// terminal's echo restored by Settle.
func TestSettleRestoresEcho(t *testing.T) {
	master, slave, shown := openTerminal(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = Prompter{TTY: slave, NoAskpass: true}.Secret(ctx, "ssmproxy: left behind", "X")
	}()
	echoOff := func() bool {
		tio, err := unix.IoctlGetTermios(int(master.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&unix.ECHO == 0
	}
	if !waitUntil(10*time.Second, func() bool { return strings.Contains(shown.String(), "left behind") && echoOff() }) {
		t.Fatalf("prompt not shown with echo off: %q", shown.String())
	}
	Settle(0)
	if echoOff() {
		t.Fatal("Settle left the echo off")
	}
	cancel()
	<-done
	Settle(time.Second) // nothing left: returns at once
}

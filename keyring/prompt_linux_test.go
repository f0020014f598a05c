//go:build linux

package keyring

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPromptTTY drives the terminal prompt through a pseudo-terminal: the
// prompt is written to the terminal, the answer read from it with echo off,
// and neither touches stdin or stdout.
func TestPromptTTY(t *testing.T) {
	master, slave, err := openPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	out := make(chan string, 1)
	go func() {
		var seen strings.Builder
		buf := make([]byte, 256)
		for !strings.Contains(seen.String(), "passphrase") {
			n, err := master.Read(buf)
			if err != nil {
				break
			}
			seen.Write(buf[:n])
		}
		_, _ = master.Write([]byte("typed-secret\n"))
		out <- seen.String()
	}()
	p := Prompter{TTY: slave, NoAskpass: true}
	done := make(chan struct{})
	var got string
	go func() { defer close(done); got, err = p.Secret(context.Background(), "ssmproxy: passphrase", "X") }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("tty prompt did not return")
	}
	if err != nil || got != "typed-secret" {
		t.Fatalf("tty prompt: %q %v", got, err)
	}
	if shown := <-out; !strings.Contains(shown, "ssmproxy: passphrase") {
		t.Fatalf("prompt not shown on the terminal: %q", shown)
	}
}

// openPTY opens a pseudo-terminal pair and returns the master and the
// slave's path.
func openPTY() (*os.File, string, error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, "", err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, "", err
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, "", err
	}
	return m, fmt.Sprintf("/dev/pts/%d", n), nil
}

//go:build unix

package e2e

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// connect runs `ssmproxy connect args...` with env and stdin, returning
// stdout, stderr and the exit code.
func connect(t *testing.T, env []string, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(ssmproxyBin, append([]string{"connect"}, args...)...)
	cmd.Env = env
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("ssmproxy connect %v hung", args)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// TestCLIExitCodes: every failure class gives one stderr line, nothing on
// stdout and its documented exit code; nothing hangs.
func TestCLIExitCodes(t *testing.T) {
	f := startFake(t, "-offline-target", "i-0fffffffffffffff0")
	port := fakeaws.Listen(t, fakeaws.Echo)
	noCreds := []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_REGION=us-east-1", "AWS_ENDPOINT_URL_SSM=" + f.url}
	badSecret := append(f.environ(), "AWS_SECRET_ACCESS_KEY=wrongwrongwrongwrongwrongwrongwrongwrong")
	// A config line the AWS SDK's ini parser panics on (a lone quote):
	// once a Go stack trace and exit 2 by accident, now one line.
	badConfig := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(badConfig, []byte("[profile p]\nrole_session_name=\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lonely := append(f.environ(), "AWS_CONFIG_FILE="+badConfig, "AWS_PROFILE=p")
	cases := []struct {
		name string
		env  []string
		args []string
		code int
		msg  string
	}{
		{"no arguments", f.environ(), nil, 2, "want TARGET"},
		{"not an instance id", f.environ(), []string{"i-0123"}, 2, "not one"},
		{"no instance by that name", f.environ(), []string{"web-1"}, 2, "no running instance"},
		{"bad port", f.environ(), []string{target, "70000"}, 2, "port"},
		{"unknown flag", f.environ(), []string{"--nope", target}, 2, "flag provided but not defined"},
		{"no region", []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "AWS_CONFIG_FILE=/dev/null"}, []string{target}, 2, "region"},
		{"no credentials", noCreds, []string{target, port}, 3, "credentials"},
		{"wrong secret", badSecret, []string{target, port}, 3, "were refused"},
		{"unknown instance", f.environ(), []string{"i-0aaaaaaaaaaaaaaa0", port}, 5, "not connected to Session Manager"},
		{"agent offline", f.environ(), []string{"i-0fffffffffffffff0", port}, 5, "not connected to Session Manager"},
		{"unknown document", f.environ(), []string{"--document", "No-Such-Doc", target, port}, 6, "document was refused"},
		{"shell document", f.environ(), []string{"--document", "SSM-SessionManagerRunShell", target}, 6, "not defined by document"},
		{"config the SDK cannot parse", lonely, []string{target, port}, 2, "could not be parsed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := connect(t, c.env, strings.NewReader(""), c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, c.code, errOut)
			}
			if out != "" {
				t.Fatalf("stdout must stay empty, got %q", out)
			}
			if lines := strings.Count(strings.TrimSpace(errOut), "\n"); lines != 0 {
				t.Fatalf("want one stderr line, got %q", errOut)
			}
			if !strings.Contains(errOut, c.msg) {
				t.Fatalf("stderr %q does not mention %q", errOut, c.msg)
			}
			if strings.Contains(errOut, "AKIA") || strings.Contains(errOut, "wrongwrong") {
				t.Fatalf("stderr leaks a credential: %q", errOut)
			}
		})
	}
}

// TestCLIStdioEcho: exactly the target's bytes on stdout, nothing on
// stderr, exit 0 after stdin EOF, and TerminateSession called.
func TestCLIStdioEcho(t *testing.T) {
	f := startFake(t)
	port := fakeaws.Listen(t, fakeaws.Echo)
	data := make([]byte, 3<<20)
	rand.Read(data)
	// The echo comes back while we still write; stdin EOF then waits for
	// the acks and terminates, so all of it is echoed before the exit.
	pr, pw := io.Pipe()
	go func() {
		pw.Write(data)
		time.Sleep(2 * time.Second)
		pw.Close()
	}()
	out, errOut, code := connect(t, f.environ(), pr, target, port)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if out != string(data) {
		t.Fatalf("stdout has %d bytes, want exactly the %d echoed", len(out), len(data))
	}
	if n := f.stats().API["TerminateSession"]["200"]; n != 1 {
		t.Fatalf("TerminateSession calls %d", n)
	}
}

// TestCLISignal: SIGTERM ends the session with TerminateSession and exit
// code 128+15.
func TestCLISignal(t *testing.T) {
	f := startFake(t)
	port := fakeaws.Listen(t, fakeaws.Echo)
	cmd := exec.Command(ssmproxyBin, "connect", target, port)
	cmd.Env = f.environ()
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q %v", buf, err)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+15 {
		t.Fatalf("exit: %v", err)
	}
	if n := f.stats().API["TerminateSession"]["200"]; n != 1 {
		t.Fatalf("TerminateSession calls %d", n)
	}
}

// TestCLIStdoutClosed: when ssh closes the read end of ssmproxy's stdout
// while the target's data flows, the write fails (EPIPE) instead of
// SIGPIPE killing the process: the session is terminated and the exit
// code is 0, as for stdin EOF (docs/protocol.md 9.3).
func TestCLIStdoutClosed(t *testing.T) {
	f := startFake(t)
	// A target that sends until the connection goes away, or the test
	// ends: a fake whose client died keeps the agent's connection open,
	// and a write blocked on it must not hang the listener's cleanup.
	stop := make(chan struct{})
	port := fakeaws.Listen(t, func(c net.Conn) {
		go func() { <-stop; c.Close() }()
		buf := bytes.Repeat([]byte("x"), 16<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() { close(stop) }) // runs before the listener's cleanup
	cmd := exec.Command(ssmproxyBin, "connect", target, port)
	cmd.Env = f.environ()
	stdin, err := cmd.StdinPipe() // held open: only stdout closes
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = outW
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Nothing below may hang: past the deadline the process is killed,
	// which also ends a read of its stdout.
	deadline := time.AfterFunc(90*time.Second, func() { _ = cmd.Process.Kill() })
	defer deadline.Stop()
	// Data flows, then the reader goes away.
	if _, err := io.ReadFull(outR, make([]byte, 64<<10)); err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("no data on stdout: %v; stderr %q", err, errb.String())
	}
	outR.Close()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("ssmproxy did not exit within 60 s after its stdout closed; stderr %q", errb.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("killed by %v; stderr %q", ws.Signal(), errb.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d, want 0; stderr %q", code, errb.String())
	}
	if !fakeaws.WaitFor(10*time.Second, func() bool { return f.stats().API["TerminateSession"]["200"] == 1 }) {
		t.Fatalf("TerminateSession calls: %v", f.stats().API["TerminateSession"])
	}
}

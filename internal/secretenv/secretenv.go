// Package secretenv is the one place that knows which environment variables
// carry secrets, and keeps them from child processes (docs/credentials.md 5.9).
//
// ssmproxy's own secrets (the file keyring passphrase, the login key, a
// one-time MFA code) leave the process environment once read (Take), so that
// no child inherits them, including children that libraries start with the
// full os.Environ() (the keyring library's "pass" backend, the SDK's default
// credential_process runner). The children ssmproxy starts itself (Command,
// Shell) also lose the AWS keys: they must use a profile rather than
// inherited keys, and must never see ssmproxy's secrets.
package secretenv

import (
	"context"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// ssmproxy's own secret variables.
const (
	FilePassphrase       = "SSMPROXY_FILE_PASSPHRASE"         // the file keyring's passphrase
	LoginAccessKeyID     = "SSMPROXY_LOGIN_ACCESS_KEY_ID"     // "ssmproxy login" without a prompt
	LoginSecretAccessKey = "SSMPROXY_LOGIN_SECRET_ACCESS_KEY" // "ssmproxy login" without a prompt
	MFAToken             = "SSMPROXY_MFA_TOKEN"               // a one-time code, for scripts
)

// Own lists ssmproxy's own secret variables, for Take.
var Own = []string{FilePassphrase, LoginAccessKeyID, LoginSecretAccessKey, MFAToken}

// Names lists every variable that carries a secret: the AWS keys (including
// the legacy AWS_ACCESS_KEY/AWS_SECRET_KEY spellings) and ssmproxy's own. No
// child process gets them.
var Names = append([]string{
	"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
	"AWS_ACCESS_KEY", "AWS_SECRET_KEY",
}, Own...)

var (
	mu    sync.Mutex
	taken = map[string]string{}
)

// Take moves the named variables from the process environment into memory.
// Variables that are unset are left alone.
func Take(names ...string) {
	mu.Lock()
	defer mu.Unlock()
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok {
			taken[n] = v
			_ = os.Unsetenv(n)
		}
	}
}

// Get returns the variable's value: the taken one, else the environment's.
func Get(name string) string {
	mu.Lock()
	v, ok := taken[name]
	mu.Unlock()
	if ok {
		return v
	}
	return os.Getenv(name)
}

// Scrub returns env without the Names variables.
func Scrub(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(Names, k) {
			out = append(out, kv)
		}
	}
	return out
}

// Command is a child process with stdin null, stderr passed through to the
// user's stderr by way of the redactor, and a scrubbed environment; the
// caller sets Stdout. The child's stderr is text from outside the process: a
// wrapper script run with "sh -x" prints the secrets it handles
// (docs/credentials.md 7.1).
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = nil // the null device
	cmd.Stderr = redactedStderr(ctx)
	cmd.Env = Scrub(os.Environ())
	return cmd
}

// redactedStderr is the write end of a pipe whose read end a goroutine
// copies to os.Stderr through the redactor. It is an *os.File, so the child
// gets it as its stderr and Wait has no copy to wait for: a grandchild that
// keeps it open (an agent the child started) delays nothing. Our own copy of
// the write end is closed when ctx ends (every caller's ctx has a timeout
// and is cancelled when the child is done); the goroutine ends when the last
// writer closes.
func redactedStderr(ctx context.Context) io.Writer {
	pr, pw, err := os.Pipe()
	if err != nil {
		return redact.NewWriter(os.Stderr) // exec's own pipe instead
	}
	dst := os.Stderr
	done := make(chan struct{})
	copiesMu.Lock()
	copies[done] = struct{}{}
	copiesMu.Unlock()
	go func() {
		defer func() {
			copiesMu.Lock()
			delete(copies, done)
			copiesMu.Unlock()
			close(done)
		}()
		defer pr.Close()
		_, _ = io.Copy(redact.NewWriter(dst), pr)
	}()
	context.AfterFunc(ctx, func() { pw.Close() })
	return pw
}

// copies are the stderr copies still running, by their done channels.
var (
	copiesMu sync.Mutex
	copies   = map[chan struct{}]struct{}{}
)

// Drain waits, at most d, until what the children wrote on stderr has
// reached ours: main calls it before its final line, so that a failed
// child's own message comes first and is not lost at exit. A copy that a
// lingering grandchild keeps open is given up on after d.
func Drain(d time.Duration) {
	copiesMu.Lock()
	var running []chan struct{}
	for c := range copies {
		running = append(running, c)
	}
	copiesMu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	for _, c := range running {
		select {
		case <-c:
		case <-t.C:
			return
		}
	}
}

// Shell is Command for a configured command line, run through the
// platform's shell as the AWS CLI runs credential_process.
func Shell(ctx context.Context, line string) *exec.Cmd {
	if runtime.GOOS == "windows" {
		return Command(ctx, "cmd.exe", "/C", line)
	}
	return Command(ctx, "sh", "-c", line)
}

// reset forgets every taken value (tests).
func reset() {
	mu.Lock()
	taken = map[string]string{}
	mu.Unlock()
}

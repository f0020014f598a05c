// Package prompt asks a person for a secret without ever touching stdin or
// stdout: in a ProxyCommand those are the SSH stream, and a prompt there
// would corrupt it or steal its bytes (docs/credentials.md 5.7, 5.9).
//
// The drivers, in order: the terminal, opened explicitly as /dev/tty (it
// exists when ssh was started from a shell, even though stdin is a pipe),
// unless the context forbids it (mid-session: ssh owns the terminal then) or
// this process is in a background process group of it; else the SSH_ASKPASS
// program, started with stdin null; else an error that names the
// environment variable that would have avoided the prompt. Process runs a
// configured program that prints a one-time code (mfa_process).
//
// Every driver follows its context: cancelling it ends a terminal read (where
// the terminal can be polled) and kills a running program.
package prompt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/secretenv"
)

// Prompter asks the user for a secret. The zero value uses /dev/tty and
// $SSH_ASKPASS.
type Prompter struct {
	// TTY is the terminal device (default /dev/tty).
	TTY string
	// NoTTY forbids the terminal (credential-process without --allow-tty).
	// WithoutTerminal forbids it for one context.
	NoTTY bool
	// Askpass is the askpass program (default $SSH_ASKPASS; "" disables).
	Askpass string
	// NoAskpass forbids the askpass program.
	NoAskpass bool
	// Stderr receives the askpass program's stderr (default os.Stderr).
	Stderr io.Writer
	// Timeout bounds an askpass run (default 5 min).
	Timeout time.Duration
}

// ErrNoPrompt is returned (wrapped) when no prompt method is available.
var ErrNoPrompt = errors.New("no way to prompt")

type noTerminalKey struct{}

// WithoutTerminal returns a context in which no prompt uses the terminal.
// Mid-session prompts must not: after authentication ssh has the terminal
// in raw mode and reads it itself, so a prompt would race it for keystrokes
// (docs/credentials.md 5.7).
func WithoutTerminal(ctx context.Context) context.Context {
	return context.WithValue(ctx, noTerminalKey{}, true)
}

// TerminalAllowed reports whether ctx allows the terminal: it is the
// interactive moment before the first SSH byte, or an interactive command.
func TerminalAllowed(ctx context.Context) bool {
	no, _ := ctx.Value(noTerminalKey{}).(bool)
	return !no
}

// Secret asks for a secret with echo off. hint names the environment
// variable that supplies the answer without a prompt; it appears in the
// error when no prompt method works.
func (p Prompter) Secret(ctx context.Context, prompt, hint string) (string, error) {
	return p.ask(ctx, prompt, hint, false)
}

// Line asks for a non-secret value (echo on at the terminal).
func (p Prompter) Line(ctx context.Context, prompt, hint string) (string, error) {
	return p.ask(ctx, prompt, hint, true)
}

// CanAskWithoutTerminal reports whether an askpass program is available:
// then a secret can be asked for mid-session too.
func (p Prompter) CanAskWithoutTerminal() bool { return p.askpass() != "" }

func (p Prompter) askpass() string {
	if p.NoAskpass {
		return ""
	}
	if p.Askpass != "" {
		return p.Askpass
	}
	return os.Getenv("SSH_ASKPASS")
}

func (p Prompter) ask(ctx context.Context, prompt, hint string, echo bool) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var tried []string
	if !p.NoTTY && TerminalAllowed(ctx) {
		tty := p.TTY
		if tty == "" {
			tty = "/dev/tty"
		}
		f, err := os.OpenFile(tty, os.O_RDWR, 0)
		switch {
		case err != nil:
			tried = append(tried, "no terminal ("+tty+" does not open)")
		case inBackground(f):
			f.Close()
			tried = append(tried, "the terminal belongs to the foreground job (ssmproxy runs in the background)")
		default:
			defer f.Close()
			return readTTY(ctx, f, prompt, echo)
		}
	} else {
		tried = append(tried, "the terminal may not be used now")
	}
	if askpass := p.askpass(); askpass != "" {
		return p.runAskpass(ctx, askpass, prompt)
	}
	tried = append(tried, "SSH_ASKPASS is not set")
	msg := fmt.Sprintf("cannot ask %q: %s", strings.TrimSuffix(prompt, ": "), strings.Join(tried, ", "))
	if hint != "" {
		msg += "; set " + hint
	}
	return "", fmt.Errorf("%w: %s", ErrNoPrompt, msg)
}

// runAskpass runs the askpass program with the prompt as its only argument,
// stdin null, stderr passed through, and without inherited AWS credentials,
// and returns its first output line.
func (p Prompter) runAskpass(ctx context.Context, program, prompt string) (string, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := secretenv.Command(ctx, program, prompt)
	if p.Stderr != nil {
		cmd.Stderr = p.Stderr
	}
	out, err := run(cmd)
	if err != nil {
		return "", fmt.Errorf("SSH_ASKPASS program %s: %w", program, err)
	}
	line, _, _ := strings.Cut(out, "\n")
	return strings.TrimRight(line, "\r"), nil
}

// Process runs a command line that prints a one-time code (an mfa_process
// such as "ykman oath accounts code …"; docs/credentials.md 5.7) through the
// shell, with stdin null, no inherited AWS keys and stderr passed through,
// and returns its trimmed output. It gives up after two minutes.
func Process(ctx context.Context, command string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := run(secretenv.Shell(ctx, command))
	return strings.TrimSpace(out), err
}

// maxOutput bounds what a prompt program's output may use, so a runaway
// child cannot exhaust memory.
const maxOutput = 64 << 10

// run runs a prompt program and returns what it printed.
func run(cmd *exec.Cmd) (string, error) {
	var out bytes.Buffer
	cmd.Stdout = &limitedWriter{w: &out, n: maxOutput}
	err := cmd.Run()
	return out.String(), err
}

// limitedWriter keeps at most n bytes and discards the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if l.n <= 0 {
		return len(b), nil
	}
	keep := b
	if len(keep) > l.n {
		keep = keep[:l.n]
	}
	l.n -= len(keep)
	if _, err := l.w.Write(keep); err != nil {
		return 0, err
	}
	return len(b), nil
}

package keyring

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/ssmproxy/ssmproxy/internal/secretenv"
)

// Prompter asks the user for a secret without ever touching stdin or stdout:
// in a ProxyCommand those are the SSH stream, and a prompt there would
// corrupt it or steal its bytes (credentials.md 5.7, 5.9).
//
// The order is: the terminal, opened explicitly as /dev/tty (it exists when
// ssh was started from a shell, even though stdin is a pipe), unless this
// process is in a background process group of it; else the
// SSH_ASKPASS program, started with stdin null; else an error that names the
// environment variable that would have avoided the prompt.
type Prompter struct {
	// TTY is the terminal device (default /dev/tty).
	TTY string
	// NoTTY forbids the terminal. Mid-session prompts must not use it: ssh
	// has the terminal in raw mode and reads it itself.
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

func (p Prompter) ask(ctx context.Context, prompt, hint string, echo bool) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var tried []string
	if !p.NoTTY {
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
			return readTTY(f, prompt, echo)
		}
	} else {
		tried = append(tried, "the terminal may not be used now")
	}
	askpass := p.Askpass
	if askpass == "" && !p.NoAskpass {
		askpass = os.Getenv("SSH_ASKPASS")
	}
	if askpass != "" && !p.NoAskpass {
		return p.runAskpass(ctx, askpass, prompt)
	}
	tried = append(tried, "SSH_ASKPASS is not set")
	msg := fmt.Sprintf("cannot ask %q: %s", strings.TrimSuffix(prompt, ": "), strings.Join(tried, ", "))
	if hint != "" {
		msg += "; set " + hint
	}
	return "", fmt.Errorf("%w: %s", ErrNoPrompt, msg)
}

// readTTY writes the prompt to the terminal and reads one line from it.
// It does not follow ctx: a terminal read cannot be interrupted portably, and
// the user in front of it is the one who ends it.
func readTTY(f *os.File, prompt string, echo bool) (string, error) {
	if !strings.HasSuffix(prompt, " ") {
		prompt += ": "
	}
	if _, err := io.WriteString(f, prompt); err != nil {
		return "", fmt.Errorf("write prompt to terminal: %w", err)
	}
	var line string
	if !echo && term.IsTerminal(int(f.Fd())) {
		b, err := term.ReadPassword(int(f.Fd()))
		_, _ = io.WriteString(f, "\n")
		if err != nil {
			return "", fmt.Errorf("read from terminal: %w", err)
		}
		line = string(b)
	} else {
		s, err := bufio.NewReader(f).ReadString('\n')
		if err != nil && (err != io.EOF || s == "") {
			return "", fmt.Errorf("read from terminal: %w", err)
		}
		line = s
	}
	return strings.TrimRight(line, "\r\n"), nil
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
	var out bytes.Buffer
	cmd.Stdout = &limitedWriter{w: &out, n: 64 << 10}
	if p.Stderr != nil {
		cmd.Stderr = p.Stderr
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("SSH_ASKPASS program %s: %w", program, err)
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	return strings.TrimRight(line, "\r"), nil
}

// limitedWriter keeps at most n bytes and discards the rest, so a runaway
// child cannot exhaust memory.
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

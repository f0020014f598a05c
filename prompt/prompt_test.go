package prompt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPromptFailsWithHint(t *testing.T) {
	p := Prompter{TTY: filepath.Join(t.TempDir(), "no-tty"), NoAskpass: true}
	_, err := p.Secret(context.Background(), "MFA code for arn:aws:iam::1:mfa/a", "SSMPROXY_MFA_TOKEN")
	if !errors.Is(err, ErrNoPrompt) || !strings.Contains(err.Error(), "set SSMPROXY_MFA_TOKEN") {
		t.Fatalf("want ErrNoPrompt naming the variable, got %v", err)
	}
	// Mid-session the terminal is not even tried.
	p = Prompter{NoTTY: true, NoAskpass: true}
	if _, err := p.Secret(context.Background(), "x", "V"); err == nil || !strings.Contains(err.Error(), "may not be used") {
		t.Fatalf("NoTTY: %v", err)
	}
}

// TestPromptAskpass: the askpass program gets the prompt as its argument,
// stdin null and no AWS keys, and its first output line is the answer.
func TestPromptAskpass(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "report")
	script := filepath.Join(dir, "askpass.sh")
	body := fmt.Sprintf(`#!/bin/sh
{ echo "argv=$1"; echo "stdin=$(cat)"; env | grep '^AWS_' ; } > %s
echo "s3cret-answer"
echo "second line ignored"
`, report)
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "inherited-secret")
	t.Setenv("AWS_SESSION_TOKEN", "inherited-token")
	t.Setenv("AWS_REGION", "eu-west-1")
	p := Prompter{TTY: filepath.Join(dir, "no-tty"), Askpass: script, Stderr: io.Discard}
	got, err := p.Secret(context.Background(), "ssmproxy: passphrase", "X")
	if err != nil || got != "s3cret-answer" {
		t.Fatalf("askpass: %q %v", got, err)
	}
	b, _ := os.ReadFile(report)
	r := string(b)
	if !strings.Contains(r, "argv=ssmproxy: passphrase") || !strings.Contains(r, "stdin=\n") {
		t.Fatalf("askpass saw %q", r)
	}
	if strings.Contains(r, "inherited-secret") || strings.Contains(r, "inherited-token") || !strings.Contains(r, "AWS_REGION=eu-west-1") {
		t.Fatalf("askpass environment not scrubbed: %q", r)
	}
}

// TestWithoutTerminal: a mid-session context keeps every prompt off the
// terminal, and says so in the error; askpass still works there.
func TestWithoutTerminal(t *testing.T) {
	ctx := WithoutTerminal(context.Background())
	if TerminalAllowed(ctx) || !TerminalAllowed(context.Background()) {
		t.Fatal("TerminalAllowed does not follow WithoutTerminal")
	}
	_, err := Prompter{NoAskpass: true}.Secret(ctx, "x", "V")
	if !errors.Is(err, ErrNoPrompt) || !strings.Contains(err.Error(), "may not be used") {
		t.Fatalf("want the terminal refused, got %v", err)
	}
	if (Prompter{NoAskpass: true}).CanAskWithoutTerminal() || !(Prompter{Askpass: "/bin/true"}).CanAskWithoutTerminal() {
		t.Fatal("CanAskWithoutTerminal does not follow the askpass settings")
	}
}

// TestProcess: an MFA process runs through the shell with stdin null and no
// inherited secrets, and its output is trimmed; a cancelled context stops it.
func TestProcess(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "inherited-secret")
	got, err := Process(context.Background(), `echo " $(cat) ${AWS_SECRET_ACCESS_KEY:-none} 123456 "`)
	if err != nil || got != "none 123456" {
		t.Fatalf("Process: %q %v", got, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Process(ctx, "sleep 30"); err == nil {
		t.Fatal("a cancelled process must fail")
	}
}

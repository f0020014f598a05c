package broker

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/ssmproxy/ssmproxy/internal/secretenv"
	"github.com/ssmproxy/ssmproxy/prompt"
)

// mfaCodes obtains one-time codes (docs/credentials.md 5.7), for the MFA session
// and for an SDK role chain with mfa_serial. The order: $SSMPROXY_MFA_TOKEN
// (first mint only: a code goes stale), the mfa process, the prompter (the
// terminal only while the context allows it, i.e. before the first SSH
// byte; then SSH_ASKPASS); else one error line naming the device and the fix.
type mfaCodes struct {
	profile  string
	process  string // mfa_process command line; "" for none
	prompter prompt.Prompter
}

var mfaCodePattern = regexp.MustCompile(`^\d{6}$`)

// code returns a six-digit code for the device serial.
func (m *mfaCodes) code(ctx context.Context, serial string) (string, error) {
	if prompt.TerminalAllowed(ctx) {
		if code := strings.TrimSpace(secretenv.Get(EnvMFAToken)); code != "" {
			return checkCode(code, EnvMFAToken)
		}
	}
	if m.process != "" {
		code, err := prompt.Process(ctx, m.process)
		if err != nil {
			return "", fmt.Errorf("MFA process (%s): %w", EnvMFAProcess, err)
		}
		return checkCode(code, "the MFA process")
	}
	code, err := m.prompter.Secret(ctx, "MFA code for "+serial, EnvMFAToken+" or "+EnvMFAProcess)
	if err != nil {
		return "", &SourceError{Profile: m.profile, What: "the MFA session",
			Reason: "needs a new code from " + serial + ", and there is no way to ask for one here (" + noPromptWhy(err) + ")",
			Fix:    fmt.Sprintf("run ssmproxy from a terminal, or set %s (a command printing a code) or %s", EnvMFAProcess, EnvMFAToken)}
	}
	return checkCode(strings.TrimSpace(code), "the prompt")
}

// renewable reports whether a code can be obtained mid-session without the
// terminal, which makes an MFA session renewable.
func (m *mfaCodes) renewable() bool {
	return m.process != "" || m.prompter.CanAskWithoutTerminal()
}

func checkCode(code, from string) (string, error) {
	if !mfaCodePattern.MatchString(code) {
		return "", fmt.Errorf("the MFA code from %s is not six digits", from)
	}
	return code, nil
}

// noPromptWhy extracts the prompter's reasons for the error message.
func noPromptWhy(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, ": cannot ask "); ok {
		if _, why, ok := strings.Cut(after, ": "); ok {
			msg = why
		}
	}
	if i := strings.Index(msg, "; set "); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

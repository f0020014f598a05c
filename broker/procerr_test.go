package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// TestProcessFailureNamesThePart: each way a credential_process can fail
// gives a message that names the failing part and holds nothing the process
// printed; the SDK's own error (which embeds the output) is not wrapped.
func TestProcessFailureNamesThePart(t *testing.T) {
	const secret = "ProcSecretProcSecretProcSecretProcSecr40"
	js := func(exp string) string {
		return `{"Version":1,"AccessKeyId":"ASIAPROC","SecretAccessKey":"` + secret + `","SessionToken":"tok-` + secret + `","Expiration":` + exp + `}`
	}
	cases := []struct{ name, script, want string }{
		{"stray line", "echo hello; echo '" + js(`"2099-01-01T00:00:00Z"`) + "'", "output is not valid JSON"},
		{"trailing junk", "echo '" + js(`"2099-01-01T00:00:00Z"`) + " junk'", "output is not valid JSON"},
		{"bad expiration", "echo '" + js(`"tomorrow `+secret+`"`) + "'", "Expiration is not an RFC 3339 time"},
		{"expiration a number", "echo '" + js(`12`) + "'", "Expiration is not an RFC 3339 time"},
		{"version a string", `echo '{"Version":"1","SecretAccessKey":"` + secret + `"}'`, "Version is not of type int"},
		{"wrong version", `echo '{"Version":2,"SecretAccessKey":"` + secret + `"}'`, "Version is not 1"},
		{"no key id", `echo '{"Version":1,"SecretAccessKey":"` + secret + `"}'`, "missing AccessKeyId"},
		{"no secret", `echo '{"Version":1,"AccessKeyId":"ASIAPROC"}'`, "missing SecretAccessKey"},
		{"exit status", "echo '" + js(`"2099-01-01T00:00:00Z"`) + "'; exit 3", "exited with status 3"},
		// The script runs under "sh -c", which reports its child's death.
		{"killed", "echo '" + secret + "'; kill -9 $$", "exited with status 137"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			script := filepath.Join(t.TempDir(), "proc.sh")
			if err := os.WriteFile(script, []byte("#!/bin/sh\n"+c.script+"\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			src := &sdkSource{profile: "proc", kind: "credential_process",
				provider: processcreds.NewProviderCommand(safeProcess(script), func(o *processcreds.Options) { o.Timeout = time.Minute })}
			_, err := src.provider.Retrieve(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			wrapped := src.wrap(err)
			var pe *ProcessError
			if !errors.As(wrapped, &pe) || errors.Unwrap(wrapped) != nil {
				t.Fatalf("%T %v: want a *ProcessError that wraps nothing", wrapped, wrapped)
			}
			msg := wrapped.Error()
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, `profile "proc"`) {
				t.Errorf("%q, want %q", msg, c.want)
			}
			if strings.Contains(msg, "ProcSecret") || strings.Contains(msg, "hello") || strings.Contains(msg, "junk") || strings.Contains(msg, "tomorrow") {
				t.Errorf("message shows the output: %q", msg)
			}
		})
	}
}

// TestBrokerRegistersSecrets: the credentials the broker handles (the
// source's and the minted ones) are known to the redactor once it has them.
func TestBrokerRegistersSecrets(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	b := e.preparedBroker()
	c := b.cur.Credentials
	for _, s := range []string{e.ts.User.SecretAccessKey, c.SecretAccessKey, c.SessionToken} {
		// Wrapped in characters that defeat the shape rules: only the
		// registry can remove them.
		if got := redact.String("x_" + s + "_x"); strings.Contains(got, s) {
			t.Errorf("%s… not registered: %q", s[:6], got)
		}
	}
}

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// Recognisable secrets printed by a broken credential_process: shaped like
// real ones (40 characters of base64, a long token) and like nothing else.
const (
	leakSecret = "LeakSecretLeakSecretLeakSecretLeakSecr40"
	leakToken  = "LeakTokenLeakToken+LeakTokenLeakToken/LeakTokenLeakTokenLeakTokenLeakTokenLeakTokenLeakTokenLeakTokenLeakTokenLeakToken=="
)

// TestCLISecretScanBrokenCredentialProcess: a credential_process whose
// output does not parse (a stray line before the JSON, an Expiration that is
// not RFC 3339, a non-zero exit after printing) makes the AWS SDK put the
// whole output into its error. ssmproxy must say which part failed, exit 3,
// and never print what the process printed: not on stderr, not in the log.
func TestCLISecretScanBrokenCredentialProcess(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo)
	f := startFake(t, "-role", brokerRole)
	good := fmt.Sprintf(`{"Version":1,"AccessKeyId":"ASIALEAKLEAKLEAK0001","SecretAccessKey":"%s","SessionToken":"%s","Expiration":"%%s"}`,
		leakSecret, leakToken)
	cases := []struct {
		name, script, want string
	}{
		{"stray line", "echo 'hello from the wrapper'\nprintf '%s\\n' '" + fmt.Sprintf(good, "2099-01-01T00:00:00Z") + "'\n",
			"credential_process output is not valid JSON"},
		{"bad expiration", "printf '%s\\n' '" + fmt.Sprintf(good, "tomorrow "+leakSecret) + "'\n",
			"Expiration is not an RFC 3339 time"},
		{"control characters", "printf '\\033]0;pwned\\007\\033[2J%s\\r\\n' '" + fmt.Sprintf(good, "2099-01-01T00:00:00Z") + "'\n",
			"credential_process output is not valid JSON"},
		{"exit status", "printf '%s\\n' '" + fmt.Sprintf(good, "2099-01-01T00:00:00Z") + "'\nexit 4\n",
			"exited with status 4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newBrokerWorld(t, f)
			script := filepath.Join(w.dir, "proc.sh")
			if err := os.WriteFile(script, []byte("#!/bin/sh\n"+c.script), 0o700); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(w.dir, "aws-config")
			if err := os.WriteFile(cfg, []byte("[profile proc]\nregion = us-east-1\ncredential_process = "+script+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			logFile := filepath.Join(w.dir, "ssmproxy.log")
			env := append(without(w.base, "AWS_CONFIG_FILE"), "AWS_CONFIG_FILE="+cfg)
			out, stderr, code := connect(t, env, strings.NewReader("x\n"), "-v", "-v", "--log-file", logFile, "--profile", "proc", target, port)
			t.Logf("exit %d, stderr: %s", code, stderr)
			log, _ := os.ReadFile(logFile)
			for where, text := range map[string]string{"stdout": out, "stderr": stderr, "log": string(log)} {
				for _, s := range []string{leakSecret, leakToken, "LeakSecretLeak", "LeakTokenLeak", "hello from the wrapper", "\x1b", "\a", "\r"} {
					if strings.Contains(text, s) {
						t.Errorf("%s contains %q:\n%s", where, s, text)
					}
				}
			}
			if code != 3 || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, stderr %q; want 3 and %q", code, stderr, c.want)
			}
		})
	}
}

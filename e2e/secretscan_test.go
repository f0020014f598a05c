//go:build unix

package e2e

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
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
		// A wrapper traced with "sh -x" prints what it handles on stderr,
		// which goes to the user's terminal through the redactor.
		{"stderr trace", "echo '+ export AWS_SECRET_ACCESS_KEY=" + leakSecret + " AWS_SESSION_TOKEN=" + leakToken + "' >&2\n" +
			"printf 'wrapper gives up\\033[2J\\n' >&2\nexit 2\n", "wrapper gives up\\x1b[2J\nssmproxy: credentials of profile \"proc\": credential_process exited with status 2"},
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

// scanRun is one "connect -v -v --log-file" through the echo target, with
// everything it left behind to scan.
type scanRun struct {
	stdout, stderr string
	code           int
	log            string
}

// connectScan runs ssmproxy connect -v -v --log-file with extra flags,
// sends input and waits for its echo.
func connectScan(t *testing.T, w *brokerWorld, env []string, port, input string, flags ...string) scanRun {
	t.Helper()
	logFile := filepath.Join(w.dir, "ssmproxy.log")
	args := append([]string{"-v", "-v", "--log-file", logFile}, flags...)
	out, stderr, code := connectArgs(t, env, input, append(args, target, port)...)
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("no log file: %v (stderr %s)", err, stderr)
	}
	return scanRun{stdout: out, stderr: stderr, code: code, log: string(log)}
}

// issuedSecrets lists every secret the fake's IAM store holds or issued,
// with whether ssmproxy minted it for the broker's role (session name
// alice): the one kind the credential cache may hold (docs/credentials.md
// 5.3, 7.1).
func issuedSecrets(t *testing.T, f *fake) (all []string, minted map[string]bool) {
	t.Helper()
	var creds []fakeaws.IssuedCredential
	if err := f.getJSON("/_fake/credentials", &creds); err != nil {
		t.Fatal(err)
	}
	minted = map[string]bool{}
	for _, c := range creds {
		isMinted := strings.HasSuffix(c.Principal, ":assumed-role/"+brokerRole+"/alice")
		for _, s := range []string{c.SecretAccessKey, c.SessionToken} {
			if s != "" {
				all = append(all, s)
				minted[s] = isMinted
			}
		}
	}
	return all, minted
}

// scanForSecrets fails the test for every secret found in the run's
// stdout, stderr and log, in the extra files, or (other than a minted one)
// in any file under the cache directory.
func scanForSecrets(t *testing.T, w *brokerWorld, r scanRun, secrets []string, minted map[string]bool, extra ...string) {
	t.Helper()
	texts := map[string]string{"stdout": r.stdout, "stderr": r.stderr, "the log file": r.log}
	for _, p := range extra {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		texts[p] = string(b)
	}
	cacheFiles := 0
	_ = filepath.WalkDir(filepath.Join(w.dir, "cache"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			texts["cache:"+p] = string(b)
			cacheFiles++
		}
		return nil
	})
	if len(secrets) == 0 || len(r.log) == 0 {
		t.Fatalf("nothing to scan: %d secrets, %d bytes of log", len(secrets), len(r.log))
	}
	found := 0
	for where, text := range texts {
		for _, s := range secrets {
			if strings.HasPrefix(where, "cache:") && minted[s] {
				continue // the cache holds the scoped credentials it was made for
			}
			if strings.Contains(text, s) {
				found++
				t.Errorf("%s holds the secret %s…", where, s[:8])
			}
		}
		for _, c := range []string{"\x1b", "\a", "\r"} {
			if !strings.HasPrefix(where, "cache:") && strings.Contains(text, c) {
				t.Errorf("%s holds the control character %q", where, c)
			}
		}
	}
	t.Logf("scanned %d texts (%d cache files, log %d bytes) for %d secrets: %d found", len(texts), cacheFiles, len(r.log), len(secrets), found)
}

// TestCLISecretScan: for each kind of credential source, a verbose run with
// a log file leaves no secret on stdout, stderr, in the log, in the cache
// directory (beyond the scoped credentials it caches) or in a child's
// argv and environment.
func TestCLISecretScan(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo)
	f := startFake(t, "-role", brokerRole)
	kinds := []struct {
		name  string
		setup func(t *testing.T, w *brokerWorld) (env []string, extra []string)
	}{
		{"keyring key with role", func(t *testing.T, w *brokerWorld) ([]string, []string) {
			w.login("default")
			return w.base, nil
		}},
		{"role from profile", func(t *testing.T, w *brokerWorld) ([]string, []string) {
			id, secret := w.fakeKey()
			cfg, creds := filepath.Join(w.dir, "aws-config"), filepath.Join(w.dir, "aws-credentials")
			writeFile(t, cfg, fmt.Sprintf("[profile chain]\nregion = us-east-1\nrole_arn = %s\nsource_profile = base\n", brokerRoleARN))
			writeFile(t, creds, fmt.Sprintf("[base]\naws_access_key_id = %s\naws_secret_access_key = %s\n", id, secret))
			return append(without(w.base, "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "SSMPROXY_ROLE_ARN"),
				"AWS_CONFIG_FILE="+cfg, "AWS_SHARED_CREDENTIALS_FILE="+creds, "AWS_PROFILE=chain"), nil
		}},
		{"credential_process", func(t *testing.T, w *brokerWorld) ([]string, []string) {
			id, secret := w.fakeKey()
			c := mintSessionCreds(t, f, id, secret)
			js := filepath.Join(w.dir, "process.json")
			writeFile(t, js, fmt.Sprintf(`{"Version":1,"AccessKeyId":%q,"SecretAccessKey":%q,"SessionToken":%q,"Expiration":%q}`,
				c.AccessKeyID, c.SecretAccessKey, c.SessionToken, c.Expires.UTC().Format(time.RFC3339)))
			dump := filepath.Join(w.dir, "child.dump")
			script := filepath.Join(w.dir, "proc.sh")
			writeFile(t, script, fmt.Sprintf("#!/bin/sh\n{ echo \"argv: $0 $*\"; env; } >> %s\ncat %s\n", dump, js))
			_ = os.Chmod(script, 0o700)
			cfg := filepath.Join(w.dir, "aws-config")
			writeFile(t, cfg, "[profile proc]\nregion = us-east-1\ncredential_process = "+script+" --flag value\n")
			return append(without(w.base, "AWS_CONFIG_FILE"), "AWS_CONFIG_FILE="+cfg, "AWS_PROFILE=proc"), []string{dump}
		}},
		{"exported environment", func(t *testing.T, w *brokerWorld) ([]string, []string) {
			id, secret := w.fakeKey()
			c := mintSessionCreds(t, f, id, secret)
			return append(w.base, "AWS_ACCESS_KEY_ID="+c.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+c.SecretAccessKey,
				"AWS_SESSION_TOKEN="+c.SessionToken, "AWS_CREDENTIAL_EXPIRATION="+c.Expires.UTC().Format(time.RFC3339)), nil
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			w := newBrokerWorld(t, f)
			env, extra := k.setup(t, w)
			for _, p := range extra { // the child's dump must be there to be worth scanning
				defer func() {
					if b, _ := os.ReadFile(p); !strings.Contains(string(b), "argv: ") || !strings.Contains(string(b), "--flag value") ||
						!strings.Contains(string(b), "PATH=") {
						t.Errorf("child dump %q", b)
					}
				}()
			}
			const input = "secret scan\n"
			r := connectScan(t, w, env, port, input)
			if r.code != 0 || r.stdout != input {
				t.Fatalf("exit %d, stdout %q, stderr %s\nlog:\n%s", r.code, r.stdout, r.stderr, r.log)
			}
			secrets, minted := issuedSecrets(t, f)
			scanForSecrets(t, w, r, secrets, minted, extra...)
		})
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCLISecretScanServiceText: text the service sends (here the
// channel_closed output of a terminated session) reaches the log and stderr
// only through the redactor: no secret-shaped value, no raw control
// character that could drive the terminal.
func TestCLISecretScanServiceText(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo)
	f := startFake(t)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "ssmproxy.log")
	cmd := exec.Command(ssmproxyBin, "connect", "-v", "-v", "--log-file", logFile, target, port)
	cmd.Env = f.environ()
	in, _ := cmd.StdinPipe()
	defer in.Close()
	out, _ := cmd.StdoutPipe()
	var stderr rig.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_, _ = in.Write([]byte("ping\n"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatalf("echo: %v (stderr %s)", err, stderr.String())
	}
	var sessions []fakeaws.SessionInfo
	if err := f.getJSON("/_fake/sessions", &sessions); err != nil || len(sessions) != 1 {
		t.Fatalf("sessions %v %v", sessions, err)
	}
	reason := "bye \x1b]0;pwned\x07\x1b[2J\r\n" + leakSecret + ` {"SessionToken":"` + leakToken + `"}` + "\u009b31m"
	if err := f.post("/_fake/sessions/"+sessions[0].ID+"/terminate?reason="+url.QueryEscape(reason), ""); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, out)
	_ = cmd.Wait()
	log, _ := os.ReadFile(logFile)
	if !strings.Contains(string(log), `bye \\x1b]0;pwned\\x07`) {
		t.Errorf("the log lacks the escaped service text:\n%s", log)
	}
	for where, text := range map[string]string{"stderr": stderr.String(), "log": string(log)} {
		for _, s := range []string{leakSecret, "LeakTokenLeak", "\x1b", "\a", "\r", "\u009b"} {
			if strings.Contains(text, s) {
				t.Errorf("%s holds %q:\n%s", where, s, text)
			}
		}
	}
}

package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/internal/rig"
	"github.com/ssmproxy/ssmproxy/internal/testkit"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
)

const (
	testTarget = fakeaws.DefaultInstance
	testRole   = "ssmproxy-session"
	testSerial = "arn:aws:iam::123456789012:mfa/alice"
)

// testEnv is an in-process fake AWS plus everything a Broker needs, with a
// clean AWS environment: nothing from the developer's own setup leaks in.
type testEnv struct {
	t                    *testing.T
	ts                   *fakeaws.TestServer
	cacheDir, lockDir    string
	persistent, volatile *keyring.Memory
	notice, logs         *rig.SyncBuffer
	roleARN              string
}

func newTestEnv(t *testing.T, o fakeaws.Options) *testEnv {
	t.Helper()
	ts := fakeaws.StartTest(t, o)
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})
	testkit.CleanAWSEnv(t, ts.URL(), EnvRoleARN, EnvMFAToken, EnvMFAProcess, EnvMFASessionDuration, EnvSourceIdentity)
	return &testEnv{t: t, ts: ts, cacheDir: filepath.Join(t.TempDir(), "creds"), lockDir: filepath.Join(t.TempDir(), "locks"),
		persistent: keyring.NewMemory(), volatile: keyring.NewMemory(), notice: &rig.SyncBuffer{}, logs: &rig.SyncBuffer{},
		roleARN: ts.IAM.RoleARN(testRole)}
}

// options returns broker options for the test env; mods adjust them.
func (e *testEnv) options(mods ...func(*Options)) Options {
	o := Options{
		Target: testTarget, RoleARN: e.roleARN, CacheDir: e.cacheDir, LockDir: e.lockDir,
		Keyring: func(_ context.Context, persistent bool) (keyring.Store, error) {
			if persistent {
				return e.persistent, nil
			}
			return e.volatile, nil
		},
		Prompter: prompt.Prompter{NoTTY: true, NoAskpass: true},
		Notice:   e.notice,
		Log:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mods {
		m(&o)
	}
	return o
}

// login stores alice's long-term key for profile in the persistent store.
func (e *testEnv) login(profile, serial string) {
	e.t.Helper()
	k := SourceKey{AccessKeyID: e.ts.User.AccessKeyID, SecretAccessKey: e.ts.User.SecretAccessKey, MFASerial: serial,
		ARN: e.ts.User.ARN(), Created: time.Now()}
	data, _ := json.Marshal(k)
	if err := e.persistent.Set(context.Background(), keyring.Item{Key: SourceItemKey(profile), Data: data}); err != nil {
		e.t.Fatal(err)
	}
}

// loginWithMFA gives alice her MFA device, stores her key with it for
// profile, and exports a one-time code for the first mint.
func (e *testEnv) loginWithMFA(profile string) {
	e.t.Helper()
	e.ts.IAM.AddMFADevice("alice", testSerial)
	e.login(profile, testSerial)
	e.t.Setenv(EnvMFAToken, "123456")
}

func (e *testEnv) newBroker(mods ...func(*Options)) *Broker {
	e.t.Helper()
	b, err := New(context.Background(), e.options(mods...))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(b.Close)
	return b
}

// preparedBroker is newBroker after a successful Prepare.
func (e *testEnv) preparedBroker(mods ...func(*Options)) *Broker {
	e.t.Helper()
	b := e.newBroker(mods...)
	if err := b.Prepare(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// sts counts the fake's STS calls of one action.
func (e *testEnv) sts(action string) int64 { return e.ts.Stats().STS[action] }

// calls returns the recorded STS calls of one action.
func (e *testEnv) calls(action string) []iam.Call {
	var out []iam.Call
	for _, c := range e.ts.IAM.Calls() {
		if c.Action == action {
			out = append(out, c)
		}
	}
	return out
}

// sessionCreds mints temporary credentials for alice from the fake, as a
// user would before exporting them.
func (e *testEnv) sessionCreds() aws.Credentials { return e.sessionCredsFor(e.ts.User) }

// sessionCredsFor mints temporary credentials for the owner of key.
func (e *testEnv) sessionCredsFor(key iam.Credential) aws.Credentials {
	e.t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey, "")))
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(e.ts.URL()) }).
		GetSessionToken(context.Background(), &sts.GetSessionTokenInput{})
	if err != nil {
		e.t.Fatal(err)
	}
	c := out.Credentials
	return aws.Credentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey, SessionToken: *c.SessionToken,
		CanExpire: true, Expires: *c.Expiration}
}

// exportCreds puts credentials in the environment as a user would.
func (e *testEnv) exportCreds(c aws.Credentials) {
	e.t.Setenv("AWS_ACCESS_KEY_ID", c.AccessKeyID)
	e.t.Setenv("AWS_SECRET_ACCESS_KEY", c.SecretAccessKey)
	e.t.Setenv("AWS_SESSION_TOKEN", c.SessionToken)
	if c.CanExpire {
		e.t.Setenv(EnvCredentialExpiration, c.Expires.UTC().Format(time.RFC3339))
	}
}

// secrets lists every secret the fake issued, for leak checks.
func (e *testEnv) secrets() []string {
	var out []string
	for _, c := range e.ts.IAM.Issued() {
		out = append(out, c.SecretAccessKey)
		if c.SessionToken != "" {
			out = append(out, c.SessionToken)
		}
	}
	return out
}

func (e *testEnv) assertNoSecrets(where string, texts ...string) {
	e.t.Helper()
	for _, s := range e.secrets() {
		for _, txt := range texts {
			if strings.Contains(txt, s) {
				e.t.Fatalf("a secret appears in %s", where)
			}
		}
	}
}

// writeAWSFiles writes the shared config and credentials files.
func (e *testEnv) writeAWSFiles(config, credentials string) {
	e.t.Helper()
	if err := os.WriteFile(os.Getenv("AWS_CONFIG_FILE"), []byte(config), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv("AWS_SHARED_CREDENTIALS_FILE"), []byte(credentials), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// processScript writes a credential_process script that prints session
// credentials with a new access key id at every run (ASIAPROCESSKEY000N,
// counting its runs in a file) and the expiry read from expFile, and
// returns its path and a function counting its runs.
func processScript(t *testing.T, expFile string, sameKey bool) (string, func() int) {
	t.Helper()
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	key := "ASIAPROCESSKEY000$n"
	if sameKey {
		key = "ASIAPROCESSKEY0000"
	}
	script := filepath.Join(dir, "proc.sh")
	body := fmt.Sprintf(`#!/bin/sh
n=$(( $(cat %[1]s 2>/dev/null || echo 0) + 1 ))
echo $n > %[1]s
printf '{"Version":1,"AccessKeyId":"%%s","SecretAccessKey":"secret-%%s","SessionToken":"token-%%s","Expiration":"%%s"}\n' "%[2]s" $n $n "$(cat %[3]s)"
`, count, key, expFile)
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	return script, func() int {
		b, _ := os.ReadFile(count)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
}

func writeExpiry(t *testing.T, path string, at time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(at.UTC().Format(time.RFC3339)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// useCABundle points AWS_CA_BUNDLE at a real (self-signed) PEM certificate,
// as a corporate TLS proxy setup would.
func useCABundle(t *testing.T) {
	t.Helper()
	t.Setenv("AWS_CA_BUNDLE", testkit.WriteCABundle(t))
}

package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/keyring"
)

const (
	testTarget = fakeaws.DefaultInstance
	testRole   = "ssmproxy-session"
	testSerial = "arn:aws:iam::123456789012:mfa/alice"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testEnv is an in-process fake AWS plus everything a Broker needs, with a
// clean AWS environment: nothing from the developer's own setup leaks in.
type testEnv struct {
	t                    *testing.T
	ts                   *fakeaws.TestServer
	cacheDir, lockDir    string
	persistent, volatile *keyring.Memory
	notice, logs         *syncBuffer
	roleARN              string
}

func newTestEnv(t *testing.T, o fakeaws.Options) *testEnv {
	t.Helper()
	ts := fakeaws.StartTest(t, o)
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
		"AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", EnvCredentialExpiration, EnvRoleARN,
		EnvMFAToken, EnvMFAProcess, EnvMFASessionDuration, EnvSourceIdentity, "SSH_ASKPASS", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SSM"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "credentials"))
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ENDPOINT_URL_STS", ts.URL())
	return &testEnv{t: t, ts: ts, cacheDir: filepath.Join(t.TempDir(), "creds"), lockDir: filepath.Join(t.TempDir(), "locks"),
		persistent: keyring.NewMemory(), volatile: keyring.NewMemory(), notice: &syncBuffer{}, logs: &syncBuffer{},
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
		Prompter: keyring.Prompter{NoTTY: true, NoAskpass: true},
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

func (e *testEnv) newBroker(mods ...func(*Options)) *Broker {
	e.t.Helper()
	b, err := New(context.Background(), e.options(mods...))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(b.Close)
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
func (e *testEnv) sessionCreds() aws.Credentials {
	e.t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(e.ts.User.AccessKeyID, e.ts.User.SecretAccessKey, "")))
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

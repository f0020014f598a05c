package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/internal/lockfile"
	"github.com/ssmproxy/ssmproxy/internal/testkit"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
	"github.com/ssmproxy/ssmproxy/ssm"
)

// envRunArgs makes the test binary run ssmproxy itself with these
// (JSON-encoded) arguments, as a child process of a test.
const envRunArgs = "SSMPROXY_MAIN_TEST_ARGS"

// envRunArgv makes the test binary run ssmproxy with its own argv: a
// stand-in for the ssmproxy binary that shell completion scripts call.
const envRunArgv = "SSMPROXY_MAIN_TEST_ARGV"

func TestMain(m *testing.M) {
	if os.Getenv(envRunArgv) == "1" {
		os.Exit(run(os.Args[1:]))
	}
	if v := os.Getenv(envRunArgs); v != "" {
		var args []string
		if err := json.Unmarshal([]byte(v), &args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(100)
		}
		os.Exit(run(args))
	}
	os.Exit(m.Run())
}

const (
	testRole   = "ssmproxy-session"
	testSerial = "arn:aws:iam::123456789012:mfa/alice"
)

// brokerEnv is a clean AWS environment pointed at the fake.
func brokerEnv(t *testing.T, ts *fakeaws.TestServer) {
	t.Helper()
	testkit.CleanAWSEnv(t, ts.URL(), broker.EnvMFAToken, broker.EnvMFAProcess, broker.EnvRoleARN)
}

func testBroker(t *testing.T, ts *fakeaws.TestServer, mods ...func(*broker.Options)) *broker.Broker {
	t.Helper()
	store := keyring.NewMemory()
	o := broker.Options{Target: fakeaws.DefaultInstance, RoleARN: ts.IAM.RoleARN(testRole),
		CacheDir: filepath.Join(t.TempDir(), "creds"), LockDir: filepath.Join(t.TempDir(), "locks"),
		Keyring:  func(context.Context, bool) (keyring.Store, error) { return store, nil },
		Prompter: prompt.Prompter{NoTTY: true, NoAskpass: true}}
	for _, m := range mods {
		m(&o)
	}
	b, err := broker.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// TestSetupFailureExitCodes: at startup only credential problems exit 3. STS
// refusing AssumeRole (trust policy, MFA) is access denied (4), an
// unreachable STS a network failure (7), a lock held too long by another
// ssmproxy an internal failure (1). The same classes hold when ssm reports
// them from a resume.
func TestSetupFailureExitCodes(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	brokerEnv(t, ts)
	t.Setenv("AWS_ACCESS_KEY_ID", ts.User.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", ts.User.SecretAccessKey)
	prepare := func(mods ...func(*broker.Options)) error {
		return setupFailure(testBroker(t, ts, mods...).Prepare(context.Background()))
	}

	// The trust policy admits only bob.
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour, TrustedUsers: []string{"bob"}})
	err := prepare()
	if code := exitCode(err); code != exitAccessDenied || !strings.Contains(err.Error(), "denied") {
		t.Errorf("AssumeRole refused by the trust policy: exit %d (%v), want %d", code, err, exitAccessDenied)
	}
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})

	// STS unreachable.
	err = prepare(func(o *broker.Options) { o.STSEndpoint = "http://127.0.0.1:1" })
	if code := exitCode(err); code != exitChannelLost || !strings.Contains(err.Error(), "could not be reached") {
		t.Errorf("STS unreachable: exit %d (%v), want %d", code, err, exitChannelLost)
	}

	// Credentials refused: still 3.
	t.Setenv("AWS_SECRET_ACCESS_KEY", strings.Repeat("w", 40))
	if code := exitCode(prepare()); code != exitCredentials {
		t.Errorf("refused key: exit %d, want %d", code, exitCredentials)
	}

	// A setting that cannot work is a usage error.
	_, err = broker.New(context.Background(), broker.Options{RoleARN: ts.IAM.RoleARN(testRole), RoleDuration: 20 * time.Hour})
	if code := exitCode(setupFailure(err)); code != exitUsage {
		t.Errorf("role duration of 20h: exit %d (%v), want %d", code, err, exitUsage)
	}

	// Lock timeout, as the broker reports it.
	lockErr := fmt.Errorf("gave up waiting for another ssmproxy process to refresh credentials (lock role-x.lock: %w after 2m0s)", lockfile.ErrTimeout)
	if code := exitCode(setupFailure(lockErr)); code != exitInternal {
		t.Errorf("lock timeout: exit %d, want %d", code, exitInternal)
	}
	// A refused StreamUrl, from Start or from a resume.
	if code := exitCode(fmt.Errorf("start: %w", &ssm.StreamURLError{SessionID: "s", Reason: "foreign host"})); code != exitChannelLost {
		t.Errorf("refused StreamUrl: exit %d, want %d", code, exitChannelLost)
	}
	// The same classes through ssm (a resume that needed credentials).
	for want, inner := range map[int]error{
		exitAccessDenied: &broker.AccessDeniedError{Op: "AssumeRole r", Code: "AccessDenied"},
		exitChannelLost:  &broker.NetworkError{Op: "AssumeRole r", Err: errors.New("connection refused")},
		exitCredentials:  &broker.SourceError{What: "x"},
		exitInternal:     lockErr,
	} {
		err := &ssm.ResumeError{Last: &ssm.CredentialsError{Err: inner}}
		if code := exitCode(err); code != want {
			t.Errorf("resume failing on %T: exit %d, want %d", inner, code, want)
		}
	}
}

package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ssmsdk "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// TestMintScopedRole: a long-term key from the keyring, AssumeRole with the
// session policy, the user name as RoleSessionName and SourceIdentity; the
// credentials can start a session on the target and nowhere else.
func TestMintScopedRole(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	b := e.newBroker()
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := b.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.AccessKeyID, "ASIA") || !c.CanExpire || time.Until(c.Expires) < 50*time.Minute {
		t.Fatalf("want 1-hour session credentials, got %v", c.Expires)
	}
	calls := e.calls("AssumeRole")
	if len(calls) != 1 {
		t.Fatalf("AssumeRole calls %d, want 1", len(calls))
	}
	f := calls[0].Fields
	if f.Get("RoleSessionName") != "alice" || f.Get("SourceIdentity") != "alice" || f.Get("DurationSeconds") != "3600" {
		t.Fatalf("AssumeRole fields %v", f)
	}
	policy := f.Get("Policy")
	for _, want := range []string{
		"arn:aws:ec2:us-east-1:123456789012:instance/" + testTarget,
		"arn:aws:ssm:us-east-1::document/AWS-StartSSHSession",
		"arn:aws:ssm:us-east-1:123456789012:session/alice-*",
		"ssm:SessionDocumentAccessCheck",
	} {
		if !strings.Contains(policy, want) {
			t.Errorf("session policy lacks %s: %s", want, policy)
		}
	}
	if e.sts("GetCallerIdentity") != 0 {
		t.Errorf("the user name is stored with the key; GetCallerIdentity should not be needed")
	}
	// The fake SSM enforces the session policy.
	api := ssmsdk.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: b}, func(o *ssmsdk.Options) { o.BaseEndpoint = aws.String(e.ts.URL()) })
	out, err := api.StartSession(context.Background(), &ssmsdk.StartSessionInput{Target: aws.String(testTarget),
		DocumentName: aws.String("AWS-StartSSHSession"), Parameters: map[string][]string{"portNumber": {"22"}}})
	if err != nil {
		t.Fatalf("StartSession on the scoped target: %v", err)
	}
	if !strings.HasPrefix(aws.ToString(out.SessionId), "alice-") {
		t.Fatalf("session id %s", aws.ToString(out.SessionId))
	}
	if _, err := api.TerminateSession(context.Background(), &ssmsdk.TerminateSessionInput{SessionId: out.SessionId}); err != nil {
		t.Fatalf("TerminateSession of an own session: %v", err)
	}
	e.ts.AddTarget(fakeaws.Target{ID: "i-0fedcba9876543210", Connected: true})
	_, err = api.StartSession(context.Background(), &ssmsdk.StartSessionInput{Target: aws.String("i-0fedcba9876543210"),
		DocumentName: aws.String("AWS-StartSSHSession")})
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("StartSession on another instance: %v, want AccessDenied", err)
	}
	e.assertNoSecrets("logs and notices", e.logs.String(), e.notice.String(), fmt.Sprintf("%v %+v %#v %v", b.cur, b.cur, *b.cur, b.cur.Credentials))
}

// TestCacheSharedAndInvalidate: a second broker (another process) takes the
// credentials from the cache file; Invalidate forces a real mint, not a
// re-read of the same credentials.
func TestCacheSharedAndInvalidate(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	ctx := context.Background()
	b1 := e.preparedBroker()
	b2 := e.preparedBroker()
	c1, _ := b1.Retrieve(ctx)
	c2, _ := b2.Retrieve(ctx)
	if c1.AccessKeyID != c2.AccessKeyID || e.sts("AssumeRole") != 1 {
		t.Fatalf("second broker minted again (AssumeRole %d)", e.sts("AssumeRole"))
	}
	b1.Invalidate()
	c3, err := b1.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c3.AccessKeyID == c1.AccessKeyID || e.sts("AssumeRole") != 2 {
		t.Fatalf("Invalidate did not mint (same key %v, AssumeRole %d)", c3.AccessKeyID == c1.AccessKeyID, e.sts("AssumeRole"))
	}
	ent, err := b1.chain.cache.file.read(b1.chain.cache.key)
	if err != nil || ent == nil || ent.Credentials.AccessKeyID != c3.AccessKeyID {
		t.Fatalf("the cache file does not hold the new credentials: %v", err)
	}
	// A third process now reads the re-minted ones.
	b3 := e.preparedBroker()
	if c, _ := b3.Retrieve(ctx); c.AccessKeyID != c3.AccessKeyID {
		t.Fatal("third broker did not adopt the re-minted credentials")
	}
}

// TestSingleMinterGoroutines: many brokers (as many processes would be) start
// at once against a slow STS and make exactly one AssumeRole.
func TestSingleMinterGoroutines(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	e.ts.IAM.SetSTSDelay(300 * time.Millisecond)
	var wg sync.WaitGroup
	keys := make(chan string, 20)
	for i := 0; i < 20; i++ {
		b, err := New(context.Background(), e.options())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Prepare(context.Background()); err != nil {
				t.Error(err)
				return
			}
			c, _ := b.Retrieve(context.Background())
			keys <- c.AccessKeyID
		}()
	}
	wg.Wait()
	close(keys)
	distinct := map[string]bool{}
	for k := range keys {
		distinct[k] = true
	}
	if n := e.sts("AssumeRole"); n != 1 || len(distinct) != 1 {
		t.Fatalf("AssumeRole %d, distinct credentials %d; want 1 and 1", n, len(distinct))
	}
}

// TestDirectRoleDuration: from a long-term key without MFA the call is not
// chained, so the configured duration (up to the role's maximum) applies.
func TestDirectRoleDuration(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	b := e.newBroker(func(o *Options) { o.RoleDuration = 2 * time.Hour })
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ar := e.calls("AssumeRole"); len(ar) != 1 || ar[0].Fields.Get("DurationSeconds") != "7200" {
		t.Fatalf("AssumeRole %+v", ar)
	}
}

// TestExportedCredentialsRefused: exported session credentials are the only
// source; when STS refuses them (revoked, expired), the failure is permanent
// and says what and how to fix it.
func TestExportedCredentialsRefused(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	src := e.sessionCreds()
	e.exportCreds(src)
	b := e.newBroker()
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ar := e.calls("AssumeRole"); len(ar) != 1 || ar[0].Fields.Get("SourceIdentity") != "" || ar[0].Fields.Get("RoleSessionName") != "alice" {
		t.Fatalf("chained AssumeRole from exported credentials: %+v", ar)
	}
	if e.sts("GetCallerIdentity") != 1 {
		t.Fatalf("GetCallerIdentity %d, want 1 (the user name)", e.sts("GetCallerIdentity"))
	}
	// 12 h away: no connect-time notice (docs/credentials.md 5.8: under 8 h only).
	if e.notice.String() != "" {
		t.Fatalf("unexpected notice %q", e.notice.String())
	}
	e.ts.IAM.ExpireNow(src.AccessKeyID)
	b.Invalidate()
	_, err := b.Retrieve(context.Background())
	var se *SourceError
	if !errors.As(err, &se) || !se.Permanent() {
		t.Fatalf("want a permanent SourceError, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"the environment's session credentials", "ExpiredToken", "export fresh credentials"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	e.assertNoSecrets("the error", msg, fmt.Sprintf("%+v", err))
}

// TestExportedCredentialsExpire: with a short lifetime the exported source
// dies at its stated expiry; the connect notice names it, and once the last
// role credentials minted from it are spent the error is permanent.
func TestExportedCredentialsExpire(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{CredTTL: 3 * time.Second})
	src := e.sessionCreds()
	e.exportCreds(src)
	b := e.newBroker()
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	notice := e.notice.String()
	if !strings.Contains(notice, "are temporary (the environment's session credentials) and expire at "+src.Expires.Local().Format(time.RFC3339)) {
		t.Fatalf("connect notice %q", notice)
	}
	if !fakeaws.WaitFor(15*time.Second, func() bool {
		_, err := b.Retrieve(context.Background())
		return err != nil
	}) {
		t.Fatal("credentials kept working past the source's expiry")
	}
	_, err := b.Retrieve(context.Background())
	var se *SourceError
	if !errors.As(err, &se) || !se.Permanent() || !strings.Contains(err.Error(), "expired at "+src.Expires.Local().Format(time.RFC3339)) {
		t.Fatalf("want the deadline in a permanent error, got %v", err)
	}
}

// TestProfileCredentialProcessWithoutRole: a shared-config profile with
// credential_process (printing session credentials) as the source and no
// role: used directly, never written to the cache file (ssmproxy did not
// mint them: docs/credentials.md 5.3), and the child gets stdin null and no
// inherited keys.
func TestProfileCredentialProcessWithoutRole(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	report := t.TempDir() + "/report"
	sc := e.sessionCreds()
	out, _ := json.Marshal(map[string]any{"Version": 1, "AccessKeyId": sc.AccessKeyID, "SecretAccessKey": sc.SecretAccessKey,
		"SessionToken": sc.SessionToken, "Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	script := t.TempDir() + "/proc.sh"
	os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\n{ echo \"stdin=$(cat)\"; env | grep '^AWS_'; } > %s\necho '%s'\n", report, out)), 0o700)
	os.WriteFile(os.Getenv("AWS_CONFIG_FILE"), []byte("[profile proc]\nregion = us-east-1\ncredential_process = "+script+"\n"), 0o600)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-for-children")
	b := e.newBroker(func(o *Options) { o.Profile, o.RoleARN = "proc", "" })
	// An entry an earlier version wrote for these credentials is removed.
	old := &entry{Version: cacheVersion, Key: b.chain.cache.key, Profile: "proc", Region: "us-east-1",
		Credentials: fromAWS(sc, time.Now())}
	if err := b.chain.cache.file.write(old); err != nil {
		t.Fatal(err)
	}
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := b.Retrieve(context.Background())
	if err != nil || c.AccessKeyID != sc.AccessKeyID {
		t.Fatalf("retrieve: %v", err)
	}
	r, _ := os.ReadFile(report)
	if strings.Contains(string(r), "not-for-children") || !strings.Contains(string(r), "stdin=\n") {
		t.Fatalf("credential_process child saw %q", r)
	}
	if n := len(b.chain.cache.file.list()); n != 0 {
		t.Fatalf("%d cache entries: unscoped credentials from an external credential_process were written to the cache file", n)
	}
	if !strings.Contains(b.chain.src.src.describe(), `profile "proc" (credential_process)`) {
		t.Fatalf("source %q", b.chain.src.src.describe())
	}
}

// TestCredentialProcessOutput: Expiration is reported early; a long-term key
// is never handed out.
func TestCredentialProcessOutput(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	b := e.newBroker(func(o *Options) { o.Target = "" })
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, err := b.CredentialProcess(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	exp, _ := time.Parse(time.RFC3339, out.Expiration)
	real := b.cur.Credentials.Expires
	if out.Version != 1 || !exp.Before(real.Add(-4*time.Minute)) || exp.Before(real.Add(-6*time.Minute)) {
		t.Fatalf("Expiration %v for real %v: want about 5 minutes early", exp, real)
	}
	if s := fmt.Sprintf("%v %+v %#v", out, out, out); strings.Contains(s, out.SecretAccessKey) {
		t.Fatal("CredentialProcessOutput prints its secret")
	}
	policy := e.calls("AssumeRole")[0].Fields.Get("Policy")
	if !strings.Contains(policy, "instance/*") {
		t.Fatalf("no target: the policy should allow any instance: %s", policy)
	}
	nb := e.newBroker(func(o *Options) { o.RoleARN = "" })
	if err := nb.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := nb.CredentialProcess(context.Background()); err == nil {
		t.Fatal("credential-process handed out a long-term key")
	}
}

// TestSessionNameReusedAcrossProcesses: the user name learned with
// GetCallerIdentity is recorded in the cache entry, so the next minter (here
// a second broker, as another process would be) does not ask again.
func TestSessionNameReusedAcrossProcesses(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.exportCreds(aws.Credentials{AccessKeyID: e.ts.User.AccessKeyID, SecretAccessKey: e.ts.User.SecretAccessKey})
	ctx := context.Background()
	e.preparedBroker()
	b2 := e.preparedBroker()
	b2.Invalidate()
	if _, err := b2.Retrieve(ctx); err != nil {
		t.Fatal(err)
	}
	if e.sts("AssumeRole") != 2 || e.sts("GetCallerIdentity") != 1 {
		t.Fatalf("AssumeRole %d, GetCallerIdentity %d; want 2 and 1", e.sts("AssumeRole"), e.sts("GetCallerIdentity"))
	}
	if ar := e.calls("AssumeRole"); ar[1].Fields.Get("RoleSessionName") != "alice" || ar[1].Fields.Get("SourceIdentity") != "alice" {
		t.Fatalf("second mint fields %v", ar[1].Fields)
	}
}

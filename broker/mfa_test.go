package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// TestMFAChain: long-term key + MFA → GetSessionToken (cached in the keyring)
// → chained AssumeRole capped at one hour. A second broker reuses the MFA
// session without asking for a code.
func TestMFAChain(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.ts.IAM.AddMFADevice("alice", testSerial)
	e.ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour, RequireMFA: true})
	e.login("default", testSerial)
	t.Setenv(EnvMFAToken, "123456")
	ctx := context.Background()
	b := e.newBroker(func(o *Options) { o.RoleDuration = 2 * time.Hour })
	if err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	gst := e.calls("GetSessionToken")
	if len(gst) != 1 || gst[0].Fields.Get("SerialNumber") != testSerial || gst[0].Fields.Get("DurationSeconds") != "43200" {
		t.Fatalf("GetSessionToken calls %+v", gst)
	}
	ar := e.calls("AssumeRole")
	if len(ar) != 1 || ar[0].Result != "OK" || ar[0].Fields.Get("DurationSeconds") != "3600" {
		t.Fatalf("AssumeRole must be chained from the MFA session and capped at 1h: %+v", ar)
	}
	if !strings.HasPrefix(ar[0].CallerKeyID, "ASIA") {
		t.Fatalf("AssumeRole was signed with %s, want the MFA session", ar[0].CallerKeyID)
	}
	keys, _ := e.volatile.Keys(ctx)
	if len(keys) != 1 || !strings.HasPrefix(keys[0], "mfa-session:default:") {
		t.Fatalf("MFA session not in the keyring: %v", keys)
	}
	// The cache file never holds the full-power MFA session.
	ents := b.chain.cache.file.list()
	if len(ents) != 1 || ents[0].Credentials.AccessKeyID == gst[0].IssuedKeyID {
		t.Fatalf("cache entries %v", ents)
	}
	if d := ents[0].Deadline; d == nil || d.What != "the MFA session" {
		t.Fatalf("the MFA session's end is the hard deadline, got %+v", d)
	}

	// A new process with no code available reuses the stored session.
	t.Setenv(EnvMFAToken, "")
	e.cacheDir = t.TempDir()
	b2 := e.newBroker()
	if err := b2.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if e.sts("GetSessionToken") != 1 || e.sts("AssumeRole") != 2 {
		t.Fatalf("second broker: GetSessionToken %d, AssumeRole %d", e.sts("GetSessionToken"), e.sts("AssumeRole"))
	}

	// Without a stored session and no way to ask: one clear, permanent error.
	_ = e.volatile.Remove(ctx, keys[0])
	e.cacheDir = t.TempDir()
	b3 := e.newBroker()
	err := b3.Prepare(ctx)
	var se *SourceError
	if !errors.As(err, &se) || !se.Permanent() || !strings.Contains(err.Error(), testSerial) || !strings.Contains(err.Error(), EnvMFAProcess) {
		t.Fatalf("want a SourceError naming the device and the fix, got %v", err)
	}
	t.Logf("no way to ask for a code: %v", err)
}

// TestMFAProcess: the mfa process runs with stdin null, no inherited AWS
// keys, and no secret in its argv.
func TestMFAProcess(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.ts.IAM.AddMFADevice("alice", testSerial)
	e.login("default", testSerial)
	exported := e.sessionCreds()
	e.exportCreds(exported) // present in the environment, must not reach the child
	report := t.TempDir() + "/report"
	t.Setenv(EnvMFAProcess, fmt.Sprintf(`{ echo "argv=$0 $*"; echo "stdin=$(cat)"; env | grep '^AWS_'; } > %s; echo 123456`, report))
	b := e.newBroker()
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(report)
	r := string(got)
	if !strings.Contains(r, "stdin=\n") {
		t.Fatalf("the MFA process saw stdin: %q", r)
	}
	for _, s := range append(e.secrets(), exported.AccessKeyID) {
		if strings.Contains(r, s) {
			t.Fatalf("the MFA process saw a credential: %q", r)
		}
	}
	if e.sts("GetSessionToken") != 2 { // one by the test, one by the broker
		t.Fatalf("GetSessionToken %d", e.sts("GetSessionToken"))
	}
}

// TestRevokedKeys: a stored login key that STS refuses is a permanent
// failure naming the fix; a refused MFA session is discarded, so the next
// mint asks for a new code instead of reusing it.
func TestRevokedKeys(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.loginWithMFA("default")
	ctx := context.Background()
	b := e.newBroker()
	if err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	gst := e.calls("GetSessionToken")
	e.ts.IAM.ExpireNow(gst[0].IssuedKeyID) // the MFA session dies early
	b.Invalidate()
	if _, err := b.Retrieve(ctx); err == nil || isPermanent(err) {
		t.Fatalf("a refused MFA session: %v, want a temporary error", err)
	}
	if keys, _ := e.volatile.Keys(ctx); len(keys) != 0 {
		t.Fatalf("the refused MFA session is still stored: %v", keys)
	}
	// Next process: a new code, a new MFA session.
	e.cacheDir = t.TempDir()
	if err := e.newBroker().Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.sts("GetSessionToken"); n != 2 {
		t.Fatalf("GetSessionToken %d, want 2", n)
	}

	// The login key itself revoked: permanent, with the fix.
	e.ts.IAM.ExpireNow(e.ts.User.AccessKeyID)
	_ = e.volatile.Remove(ctx, mfaItemKey("default", testSerial))
	e.cacheDir = t.TempDir()
	err := e.newBroker().Prepare(ctx)
	var se *SourceError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), `ssmproxy login --profile default`) {
		t.Fatalf("revoked login key: %v", err)
	}
}

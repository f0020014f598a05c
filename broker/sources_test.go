package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// TestSDKSourcesWithCABundle: with AWS_CA_BUNDLE set (a corporate TLS
// proxy), every source the AWS SDK resolves still works: static keys in the
// shared credentials file, role_arn + source_profile, the default chain (here
// the container credentials endpoint) and credential_process.
func TestSDKSourcesWithCABundle(t *testing.T) {
	cases := []struct {
		name    string
		profile string
		setup   func(e *testEnv)
	}{
		{"static keys", "static", func(e *testEnv) {
			e.writeAWSFiles("", fmt.Sprintf("[static]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
				e.ts.User.AccessKeyID, e.ts.User.SecretAccessKey))
		}},
		{"source_profile", "chain", func(e *testEnv) {
			e.writeAWSFiles(fmt.Sprintf("[profile chain]\nrole_arn = %s\nsource_profile = base\n", e.roleARN),
				fmt.Sprintf("[base]\naws_access_key_id = %s\naws_secret_access_key = %s\n", e.ts.User.AccessKeyID, e.ts.User.SecretAccessKey))
		}},
		{"default chain", "", func(e *testEnv) {
			c := e.sessionCreds()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewEncoder(w).Encode(map[string]string{"AccessKeyId": c.AccessKeyID, "SecretAccessKey": c.SecretAccessKey,
					"Token": c.SessionToken, "Expiration": c.Expires.UTC().Format(time.RFC3339)})
			}))
			t.Cleanup(srv.Close)
			t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", srv.URL+"/creds")
		}},
		{"credential_process", "proc", func(e *testEnv) {
			exp := filepath.Join(t.TempDir(), "exp")
			writeExpiry(t, exp, time.Now().Add(time.Hour))
			script, _ := processScript(t, exp, false)
			e.writeAWSFiles("[profile proc]\ncredential_process = "+script+"\n", "")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEnv(t, fakeaws.Options{})
			useCABundle(t)
			c.setup(e)
			role := e.roleARN
			if c.name == "credential_process" {
				role = "" // its keys are not the fake's: use them directly
			}
			b := e.newBroker(func(o *Options) { o.Profile, o.RoleARN = c.profile, role })
			if _, ok := b.chain.src.src.(*sdkSource); !ok {
				t.Fatalf("source %s, want an SDK source", b.chain.src.src.describe())
			}
			if err := b.Prepare(context.Background()); err != nil {
				t.Fatalf("with AWS_CA_BUNDLE: %v", err)
			}
			if role != "" && e.sts("AssumeRole") != 1 {
				t.Fatalf("AssumeRole %d", e.sts("AssumeRole"))
			}
		})
	}
}

// TestSDKSourceKeepsIssueTime: credentials from an SDK source are re-minted
// 10-15 minutes before they expire, as everything else: the SDK's cache
// returns the same ones at every call, which must not make them look
// freshly issued (and their refresh window tiny).
func TestSDKSourceKeepsIssueTime(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	t0 := time.Now().Truncate(time.Second)
	fc := clock.NewFake(t0)
	exp := filepath.Join(t.TempDir(), "exp")
	writeExpiry(t, exp, t0.Add(time.Hour))
	script, runs := processScript(t, exp, false)
	e.writeAWSFiles("[profile proc]\ncredential_process = "+script+"\n", "")
	b := e.newBroker(func(o *Options) {
		o.Profile, o.RoleARN, o.Clock, o.Jitter = "proc", "", fc, func() float64 { return 0 }
	})
	ctx := context.Background()
	if err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	due := t0.Add(50 * time.Minute) // 10 minutes before expiry (jitter 0)
	if !fc.WaitForNext(due, 5*time.Second) {
		next, _ := fc.Next()
		t.Fatalf("re-mint scheduled at %s, want %s", next, due)
	}
	// Halfway through, other calls must not shorten the schedule.
	fc.Set(t0.Add(30 * time.Minute))
	if c, err := b.Retrieve(ctx); err != nil || c.AccessKeyID != "ASIAPROCESSKEY0001" {
		t.Fatalf("retrieve: %v %v", c.AccessKeyID, err)
	}
	writeExpiry(t, exp, t0.Add(2*time.Hour))
	fc.Set(due.Add(time.Second))
	if !fakeaws.WaitFor(5*time.Second, func() bool {
		c, _ := b.Retrieve(ctx)
		return c.AccessKeyID == "ASIAPROCESSKEY0002"
	}) {
		t.Fatalf("no new credentials 10 minutes before expiry (credential_process ran %d times)", runs())
	}
	b.mu.Lock()
	next := b.due
	b.mu.Unlock()
	if want := t0.Add(110 * time.Minute); !next.Equal(want) {
		t.Fatalf("next re-mint %s, want %s", next, want)
	}
}

// TestStaticKeysNeverCached: an SDK source yielding a long-term key and no
// role: the key is used directly but never written to the plain cache file.
func TestStaticKeysNeverCached(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.writeAWSFiles("", fmt.Sprintf("[static]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
		e.ts.User.AccessKeyID, e.ts.User.SecretAccessKey))
	b := e.newBroker(func(o *Options) { o.Profile, o.RoleARN = "static", "" })
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c, err := b.Retrieve(context.Background()); err != nil || c.AccessKeyID != e.ts.User.AccessKeyID {
		t.Fatalf("retrieve: %v", err)
	}
	_ = filepath.WalkDir(e.cacheDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if data, _ := os.ReadFile(p); strings.Contains(string(data), e.ts.User.SecretAccessKey) {
				t.Errorf("the long-term key was written to %s", p)
			}
		}
		return nil
	})
	if n := len(b.chain.cache.file.list()); n != 0 {
		t.Fatalf("%d cache entries for a long-term key", n)
	}
}

// TestCacheKeyedBySource: two users export their own credentials under the
// same profile name; the second never gets the first one's role
// credentials from the cache, and its deadline is its own.
func TestCacheKeyedBySource(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	bob := e.ts.IAM.AddUser("bob")
	ctx := context.Background()
	alice := e.sessionCreds()
	alice.Expires = time.Now().Add(3 * time.Hour).Truncate(time.Second)
	e.exportCreds(alice)
	a := e.newBroker()
	if err := a.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	bobs := e.sessionCredsFor(bob)
	bobs.Expires = time.Now().Add(5 * time.Hour).Truncate(time.Second)
	e.exportCreds(bobs)
	b := e.newBroker()
	if err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	ca, _ := a.Retrieve(ctx)
	cb, _ := b.Retrieve(ctx)
	if ca.AccessKeyID == cb.AccessKeyID || e.sts("AssumeRole") != 2 {
		t.Fatalf("bob got alice's cached role credentials (AssumeRole %d)", e.sts("AssumeRole"))
	}
	if ar := e.calls("AssumeRole"); ar[1].CallerKeyID != bobs.AccessKeyID || ar[1].Fields.Get("RoleSessionName") != "bob" {
		t.Fatalf("second mint by %s as %s", ar[1].CallerKeyID, ar[1].Fields.Get("RoleSessionName"))
	}
	if d := b.cur.Deadline; !d.Known() || !d.At.Equal(bobs.Expires) {
		t.Fatalf("bob's deadline %+v, want %s", d, bobs.Expires)
	}
	// Alice again (a third process): her own entry, no new mint.
	e.exportCreds(alice)
	a2 := e.newBroker()
	if err := a2.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := a2.Retrieve(ctx); c.AccessKeyID != ca.AccessKeyID || e.sts("AssumeRole") != 2 {
		t.Fatalf("alice's second process: same credentials %v, AssumeRole %d", c.AccessKeyID == ca.AccessKeyID, e.sts("AssumeRole"))
	}
}

// TestNoRoleInvalidateRefetches: without a role the credentials are the
// source's own. When the service refuses them, the source is made to read
// afresh (the SDK's cache would hand back the same ones); only a source
// that has nothing else fails, permanently.
func TestNoRoleInvalidateRefetches(t *testing.T) {
	for _, same := range []bool{false, true} {
		t.Run(fmt.Sprintf("same=%v", same), func(t *testing.T) {
			e := newTestEnv(t, fakeaws.Options{})
			exp := filepath.Join(t.TempDir(), "exp")
			writeExpiry(t, exp, time.Now().Add(time.Hour))
			script, runs := processScript(t, exp, same)
			e.writeAWSFiles("[profile proc]\ncredential_process = "+script+"\n", "")
			b := e.newBroker(func(o *Options) { o.Profile, o.RoleARN = "proc", "" })
			ctx := context.Background()
			if err := b.Prepare(ctx); err != nil {
				t.Fatal(err)
			}
			first, _ := b.Retrieve(ctx)
			b.Invalidate()
			c, err := b.Retrieve(ctx)
			if runs() != 2 {
				t.Fatalf("credential_process ran %d times, want 2 (once more after the refusal)", runs())
			}
			if !same {
				if err != nil || c.AccessKeyID == first.AccessKeyID {
					t.Fatalf("after Invalidate: %v %v, want new credentials", c.AccessKeyID, err)
				}
				return
			}
			var se *SourceError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), "were refused") {
				t.Fatalf("the source has nothing else: %v, want a permanent SourceError", err)
			}
		})
	}
}

// TestSDKStaticKeyRefusedIsPermanent: a long-term key in the shared
// credentials file that STS does not know is final, not retried forever.
func TestSDKStaticKeyRefusedIsPermanent(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.writeAWSFiles("", "[gone]\naws_access_key_id = AKIAGONEGONEGONEGONE\naws_secret_access_key = "+strings.Repeat("x", 40)+"\n")
	b := e.newBroker(func(o *Options) { o.Profile = "gone" })
	err := b.Prepare(context.Background())
	var se *SourceError
	if !errors.As(err, &se) || !isPermanent(err) || se.Code != "InvalidClientTokenId" {
		t.Fatalf("want a permanent SourceError (InvalidClientTokenId), got %v", err)
	}
	if !strings.Contains(err.Error(), `profile "gone"`) || !strings.Contains(err.Error(), "replace the key") {
		t.Fatalf("message %q", err)
	}
}

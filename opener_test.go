package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/ssm"
)

// openerEnv points this process at the fake with alice's long-term key as
// the source, a file keyring and caches of its own.
func openerEnv(t *testing.T, ts *fakeaws.TestServer) {
	t.Helper()
	brokerEnv(t, ts)
	for _, kv := range ts.Env(ts.User) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv("SSMPROXY_LOCK_DIR", filepath.Join(dir, "locks"))
	t.Setenv("SSMPROXY_KEYRING_BACKEND", "file")
	t.Setenv("SSMPROXY_FILE_PASSPHRASE", "opener test passphrase")
}

func sshRequest(target string, hooks ...preSessionHook) sessionRequest {
	return sessionRequest{
		target: target, document: ssm.DocumentSSH,
		parameters: map[string][]string{"portNumber": {"22"}},
		tuning:     sessionTuning{handshakeTimeout: ssm.DefaultHandshakeTimeout, resumeBudget: ssm.DefaultResumeBudget, clientVersion: ssm.DefaultClientVersion},
		hooks:      hooks, log: slog.New(slog.DiscardHandler),
	}
}

// TestOpenSessionSteps: the opener resolves the target, scopes credentials
// to it, runs the pre-session hooks in order with the resolved instance and
// working credentials, and only then calls StartSession; a hook's error
// aborts the open before any session exists.
func TestOpenSessionSteps(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	openerEnv(t, ts)
	ctx := context.Background()

	var order []string
	record := func(name string) preSessionHook {
		return func(ctx context.Context, rt resolvedTarget) error {
			creds, err := rt.AWS.Credentials.Retrieve(ctx)
			if err != nil || creds.AccessKeyID == "" {
				t.Errorf("hook %s: no credentials (%v)", name, err)
			}
			if rt.InstanceID != fakeaws.DefaultInstance || rt.AWS.Region == "" {
				t.Errorf("hook %s: target %q region %q", name, rt.InstanceID, rt.AWS.Region)
			}
			order = append(order, name)
			return nil
		}
	}
	refused := errors.New("key push refused")
	_, err := openSession(ctx, sshRequest(fakeaws.DefaultInstance, record("first"),
		func(context.Context, resolvedTarget) error { return refused }, record("never")))
	if !errors.Is(err, refused) {
		t.Fatalf("open with a failing hook: %v, want the hook's error", err)
	}
	if strings.Join(order, ",") != "first" {
		t.Fatalf("hooks ran %v, want only the first before the failing one", order)
	}
	if n := len(ts.Stats().API["StartSession"]); n != 0 {
		t.Fatalf("StartSession was called (%v) although a hook failed", ts.Stats().API["StartSession"])
	}

	order = nil
	sess, err := openSession(ctx, sshRequest(fakeaws.DefaultInstance, record("a"), record("b")))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if sess.Instance != fakeaws.DefaultInstance || strings.Join(order, ",") != "a,b" {
		t.Fatalf("opened %q after hooks %v", sess.Instance, order)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	sess.release()
	if got := ts.Stats().API["StartSession"]["200"]; got != 1 {
		t.Fatalf("StartSession 200 ×%d, want 1", got)
	}
}

// TestOpenSessionBadTarget: a target that is neither an instance id nor
// a name, tag, address or DNS name is a usage error before any credentials
// are touched.
func TestOpenSessionBadTarget(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	openerEnv(t, ts)
	for _, bad := range []string{"i-0123", "web 1", "tag:env"} {
		_, err := openSession(context.Background(), sshRequest(bad))
		if code := exitCode(err); code != exitUsage {
			t.Fatalf("%q: exit %d (%v), want %d", bad, code, err, exitUsage)
		}
	}
	if st := ts.Stats(); len(st.API) != 0 || len(st.STS) != 0 {
		t.Fatalf("calls were made for a bad target: API %v STS %v", st.API, st.STS)
	}
}

// TestOpenSessionByName: step 1 resolves a Name tag to the instance the
// session then starts on, and a name without exactly one Online match
// fails with exit 2 (none, several) or 5 (offline) before any session.
func TestOpenSessionByName(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	for _, spec := range []string{"i-0aaaaaaaaaaaaaaa1,name=web-1", "i-0aaaaaaaaaaaaaaa2,name=db", "i-0aaaaaaaaaaaaaaa3,name=db",
		"i-0aaaaaaaaaaaaaaa4,name=batch,ping=ConnectionLost"} {
		tg, err := fakeaws.ParseTargetSpec(spec)
		if err != nil {
			t.Fatal(err)
		}
		ts.AddTarget(tg)
	}
	openerEnv(t, ts)
	sess, err := openSession(context.Background(), sshRequest("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	if sess.Instance != "i-0aaaaaaaaaaaaaaa1" {
		t.Errorf("session on %s", sess.Instance)
	}
	_ = sess.Close()
	sess.release()
	for name, want := range map[string]int{"db": exitUsage, "nosuch": exitUsage, "batch": exitNotConnected} {
		if _, err := openSession(context.Background(), sshRequest(name)); exitCode(err) != want {
			t.Errorf("%s: exit %d (%v), want %d", name, exitCode(err), err, want)
		}
	}
	if got := ts.Stats().API["StartSession"]["200"]; got != 1 {
		t.Fatalf("StartSession 200 ×%d, want 1", got)
	}
}

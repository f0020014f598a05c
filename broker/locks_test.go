package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/internal/lockfile"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// TestMFAPromptOutsideRoleLock: while one process waits for a human to
// provide an MFA code, the role lock is free (nobody times out behind the
// prompt); a second process waits for the MFA lock instead, says so once,
// and then uses the session the first one minted.
func TestMFAPromptOutsideRoleLock(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.ts.IAM.AddMFADevice("alice", testSerial)
	e.ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour, RequireMFA: true})
	e.login("default", testSerial)
	dir := t.TempDir()
	asking, answer := filepath.Join(dir, "asking"), filepath.Join(dir, "answer")
	// The "human" answers when the test creates the answer file (or gives
	// up after 30 s, so that a failing test leaves nothing running).
	t.Setenv(EnvMFAProcess, fmt.Sprintf("touch %s; i=0; while [ ! -e %s ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done; echo 123456",
		asking, answer))
	t.Cleanup(func() { _ = os.WriteFile(answer, nil, 0o600) })
	ctx := context.Background()
	first := e.newBroker()
	errs := make(chan error, 2)
	go func() { errs <- first.Prepare(ctx) }()
	if !fakeaws.WaitFor(10*time.Second, func() bool { _, err := os.Stat(asking); return err == nil }) {
		t.Fatal("the MFA process was not started")
	}
	release, err := lockfile.Acquire(ctx, first.chain.locks.path("role-"+first.chain.cache.key), lockfile.Options{Timeout: 2 * time.Second, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("the role lock is held while a code is asked for: %v", err)
	}
	release()

	secondNotice := &rig.SyncBuffer{}
	second := e.newBroker(func(o *Options) { o.Notice = secondNotice })
	second.chain.locks.noticeAfter = 20 * time.Millisecond
	go func() { errs <- second.Prepare(ctx) }()
	if !fakeaws.WaitFor(10*time.Second, func() bool { return strings.Contains(secondNotice.String(), "waiting for another ssmproxy process") }) {
		t.Fatalf("the waiting process says nothing: %q", secondNotice.String())
	}
	if err := os.WriteFile(answer, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(secondNotice.String(), "waiting for another"); n != 1 {
		t.Fatalf("%d waiting lines, want 1: %q", n, secondNotice.String())
	}
	if e.sts("GetSessionToken") != 1 || e.sts("AssumeRole") != 1 {
		t.Fatalf("GetSessionToken %d, AssumeRole %d: want 1 and 1", e.sts("GetSessionToken"), e.sts("AssumeRole"))
	}
}

// TestLockTimeoutIsNotCredentials: when another process holds the role lock
// for too long, the error says so, and is neither a credentials problem nor
// permanent.
func TestLockTimeoutIsNotCredentials(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	b := e.newBroker()
	b.chain.cache.lockWait, b.chain.locks.noticeAfter = 200*time.Millisecond, 50*time.Millisecond
	release, err := lockfile.Acquire(context.Background(), b.chain.locks.path("role-"+b.chain.cache.key), lockfile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	err = b.Prepare(context.Background())
	var se *SourceError
	if !errors.Is(err, lockfile.ErrTimeout) || errors.As(err, &se) || isPermanent(err) ||
		!strings.Contains(err.Error(), "another ssmproxy process") {
		t.Fatalf("want a lock timeout naming the other process, got %v", err)
	}
	if !strings.Contains(e.notice.String(), "waiting for another ssmproxy process to refresh credentials") {
		t.Fatalf("notice %q", e.notice.String())
	}
}

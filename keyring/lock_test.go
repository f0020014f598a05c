package keyring

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/lockfile"
)

// TestPassphrasePromptOutsideLock: while the user is being asked for the
// file keyring's passphrase, the keyring lock is free, so other processes
// do not time out behind the prompt; the call then completes with it.
func TestPassphrasePromptOutsideLock(t *testing.T) {
	ctx := context.Background()
	o := fileOpts(t, filepath.Join(t.TempDir(), "kr"), filepath.Join(t.TempDir(), "kr.lock"), "")
	asking, answer := make(chan struct{}), make(chan string)
	o.Prompt = func(context.Context, string) (string, error) { close(asking); return <-answer, nil }
	k, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- k.Set(ctx, Item{Key: "source:dev", Data: []byte("v")}) }()
	select {
	case <-asking:
	case err := <-done:
		t.Fatalf("Set returned without asking: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no prompt")
	}
	release, err := lockfile.Acquire(ctx, o.LockPath, lockfile.Options{Timeout: 2 * time.Second, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("the keyring lock is held during the passphrase prompt: %v", err)
	}
	release()
	answer <- "typed"
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if it, err := k.Get(ctx, "source:dev"); err != nil || string(it.Data) != "v" {
		t.Fatalf("get: %v", err)
	}
}

// TestLockWaitNotice: a call waiting for another process's keyring call
// says so once.
func TestLockWaitNotice(t *testing.T) {
	ctx := context.Background()
	o := fileOpts(t, filepath.Join(t.TempDir(), "kr"), filepath.Join(t.TempDir(), "kr.lock"), "pw")
	noticed := make(chan struct{}, 4)
	o.Notice, o.LockNoticeAfter = func() { noticed <- struct{}{} }, 20*time.Millisecond
	k, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	release, err := lockfile.Acquire(ctx, o.LockPath, lockfile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := k.Keys(ctx); done <- err }()
	select {
	case <-noticed:
	case <-time.After(10 * time.Second):
		t.Fatal("no waiting notice")
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(noticed) != 0 {
		t.Fatalf("%d extra notices", len(noticed))
	}
}

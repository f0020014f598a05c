package lockfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

func TestExclusiveAcrossGoroutines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locks", "x.lock")
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := Acquire(context.Background(), path, Options{Poll: 5 * time.Millisecond, Timeout: 10 * time.Second})
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for {
				m := maxInside.Load()
				if n <= m || maxInside.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
			inside.Add(-1)
			release()
			release() // idempotent
		}()
	}
	wg.Wait()
	if maxInside.Load() != 1 {
		t.Fatalf("%d holders at once", maxInside.Load())
	}
}

func TestTimeoutAndNotice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "y.lock")
	release, err := Acquire(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	notices := 0
	start := time.Now()
	_, err = Acquire(context.Background(), path, Options{Timeout: 300 * time.Millisecond, NoticeAfter: 100 * time.Millisecond,
		Poll: 10 * time.Millisecond, Notice: func() { notices++ }})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	if notices != 1 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("notices %d after %s", notices, time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Acquire(ctx, path, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestFileLockHeldElsewhere: the lock held through another descriptor (as
// another process would hold it) blocks Acquire, which gives notice once and
// gets the lock as soon as it is released.
func TestFileLockHeldElsewhere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "z.lock")
	other := flock.New(path)
	if err := other.Lock(); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(400 * time.Millisecond); _ = other.Unlock() }()
	notices := 0
	start := time.Now()
	release, err := Acquire(context.Background(), path, Options{NoticeAfter: 150 * time.Millisecond, Poll: 20 * time.Millisecond,
		Notice: func() { notices++ }})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if waited := time.Since(start); waited < 350*time.Millisecond || notices != 1 {
		t.Fatalf("waited %s with %d notices", waited, notices)
	}
}

// TestDirIgnoresRuntimeDir: the lock directory is one per user, the same
// whether or not a process has XDG_RUNTIME_DIR; only SSMPROXY_LOCK_DIR moves it.
func TestDirIgnoresRuntimeDir(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv("HOME", t.TempDir())
	t.Setenv(EnvDir, "")
	c, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(c, "ssmproxy", "locks")
	for _, runtime := range []string{"", t.TempDir()} {
		t.Setenv("XDG_RUNTIME_DIR", runtime)
		if got, err := Dir(); err != nil || got != want {
			t.Fatalf("XDG_RUNTIME_DIR=%q: Dir() = %q, %v; want %q", runtime, got, err, want)
		}
	}
	t.Setenv(EnvDir, "/explicit/locks")
	if got, _ := Dir(); got != "/explicit/locks" {
		t.Fatalf("override: %q", got)
	}
}

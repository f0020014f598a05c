// Package lockfile serialises work across goroutines and processes with an
// advisory lock file (flock(2) on Unix, LockFileEx on Windows), as the
// credential broker and the keyring need: one minter at a time, one keyring
// writer at a time.
//
// The kernel drops a flock when its process dies, even on SIGKILL, so a
// crashed holder never leaves a stale lock behind. Lock files belong in a
// per-user directory (Dir), never in the shared temp directory, where another
// user could create or hold them.
package lockfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// Defaults used when Options leave a field zero.
const (
	DefaultPoll        = 100 * time.Millisecond
	DefaultNoticeAfter = 5 * time.Second
	DefaultTimeout     = 2 * time.Minute
)

// Options tune Acquire.
type Options struct {
	// Timeout bounds the whole wait (default DefaultTimeout).
	Timeout time.Duration
	// Poll is the interval between attempts (default DefaultPoll).
	Poll time.Duration
	// NoticeAfter is how long to wait before calling Notice once
	// (default DefaultNoticeAfter).
	NoticeAfter time.Duration
	// Notice, if set, is called once when the lock has not been obtained
	// after NoticeAfter, so a waiting user learns why nothing happens.
	Notice func()
}

// ErrTimeout is returned (wrapped) when the lock was not obtained in time.
var ErrTimeout = errors.New("timed out waiting for the lock")

// Dir returns the per-user directory for lock files: $SSMPROXY_LOCK_DIR,
// else os.UserCacheDir()/ssmproxy/locks. There is exactly one location per
// user, whatever else differs between the processes' environments (a
// ProxyCommand started by an IDE may lack XDG_RUNTIME_DIR while a shell has
// it): two processes that computed different directories would each hold
// "the" lock and mint at once.
//
// Acquire checks the directory (CheckDir) every time it takes a lock.
func Dir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		if !filepath.IsAbs(d) {
			// A relative path names a different directory in every
			// working directory: no lock at all.
			return "", fmt.Errorf("%w: %s=%q is not an absolute path", ErrUnsafe, EnvDir, d)
		}
		return d, nil
	}
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("locate lock directory: %w", err)
	}
	return filepath.Join(c, "ssmproxy", "locks"), nil
}

// EnvDir overrides the lock directory.
const EnvDir = "SSMPROXY_LOCK_DIR"

// inProcess holds one semaphore per lock path. flock already excludes two
// descriptors of one process from each other on Linux, but not every
// platform's lock does, and a semaphore makes the in-process wait cheap.
var inProcess sync.Map // path -> chan struct{}

func semaphore(path string) chan struct{} {
	v, _ := inProcess.LoadOrStore(path, make(chan struct{}, 1))
	return v.(chan struct{})
}

// Acquire takes the exclusive lock at path (creating the file 0600 and its
// directory 0700), polling until it is free, ctx ends or the timeout passes.
// It refuses a directory CheckDir refuses, and a lock file that is a
// symbolic link (it is opened with O_NOFOLLOW) or not the user's own
// private regular file. The returned function releases it.
func Acquire(ctx context.Context, path string, o Options) (release func(), err error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.NoticeAfter <= 0 {
		o.NoticeAfter = DefaultNoticeAfter
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	if err := CheckDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := refuseLink(path); err != nil {
		return nil, err
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	start := time.Now()
	noticed := false
	notice := func() {
		if !noticed && o.Notice != nil && time.Since(start) >= o.NoticeAfter {
			noticed = true
			o.Notice()
		}
	}
	wrap := func(err error) error {
		if parent.Err() == nil {
			return fmt.Errorf("lock %s: %w after %s", filepath.Base(path), ErrTimeout, o.Timeout)
		}
		return fmt.Errorf("lock %s: %w", filepath.Base(path), parent.Err())
	}

	// In-process first: wait for the semaphore with the same notice.
	sem := semaphore(path)
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
acquireSem:
	for {
		select {
		case sem <- struct{}{}:
			break acquireSem
		case <-ctx.Done():
			return nil, wrap(ctx.Err())
		case <-tick.C:
			notice()
		}
	}

	// Then the file lock: poll with TryLockContext, first until the notice
	// is due, then until the timeout.
	fl := flock.New(path, flock.SetPermissions(0o600), flock.SetFlag(openFlag()))
	noticeCtx, cancelNotice := context.WithTimeout(ctx, max(0, o.NoticeAfter-time.Since(start)))
	ok, err := fl.TryLockContext(noticeCtx, o.Poll)
	cancelNotice()
	if !ok && err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		notice()
		ok, err = fl.TryLockContext(ctx, o.Poll)
	}
	if !ok {
		<-sem
		if ctx.Err() != nil {
			return nil, wrap(ctx.Err())
		}
		return nil, fmt.Errorf("lock %s: %w", filepath.Base(path), err)
	}
	// Checked through the locked descriptor: what was opened, not what the
	// path names now.
	st, err := fl.Stat()
	if err == nil {
		err = checkFile(path, st)
	}
	if err != nil {
		_ = fl.Unlock()
		<-sem
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = fl.Unlock()
			<-sem
		})
	}, nil
}

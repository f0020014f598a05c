package broker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/lockfile"
)

// locker takes the cross-process locks that make one process mint at a time
// (docs/credentials.md 5.6): role-<key>.lock around a role mint, mfa-<profile>.lock
// around an MFA prompt. They live in the user's own lock directory, never in
// the shared temp directory.
type locker struct {
	dir string
	// noticeAfter is how long a wait lasts before the notice (zero: the
	// lockfile default; tests shorten it).
	noticeAfter time.Duration
	note        *notifier
}

// acquire takes the named lock, telling the user once when it has to wait
// for another process to finish doing activity.
func (l *locker) acquire(ctx context.Context, name string, timeout time.Duration, activity string) (func(), error) {
	path := l.path(name)
	release, err := lockfile.Acquire(ctx, path, lockfile.Options{
		Timeout: timeout, NoticeAfter: l.noticeAfter, Notice: l.note.waiting(activity),
	})
	if err != nil {
		if errors.Is(err, lockfile.ErrTimeout) {
			return nil, fmt.Errorf("gave up waiting for another ssmproxy process to %s (%w); "+
				"if no other ssmproxy is running, some other program holds %s", activity, err, path)
		}
		if errors.Is(err, lockfile.ErrUnsafe) {
			// A lock directory or file to fix (5.6), not a wait.
			return nil, &ConfigError{err}
		}
		return nil, fmt.Errorf("wait for another ssmproxy process to %s: %w", activity, err)
	}
	return release, nil
}

// path is a lock file in the lock directory.
func (l *locker) path(name string) string {
	return filepath.Join(l.dir, name+".lock")
}

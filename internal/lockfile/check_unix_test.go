//go:build unix

package lockfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUnsafeLockDirRefused (docs/credentials.md 5.6): a lock directory that
// another user owns, that others may write, or that is a symbolic link is
// refused with an error naming the problem and the fix; nothing is created
// in it. A private directory of the user's own is used.
func TestUnsafeLockDirRefused(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, want string
		setup      func(t *testing.T) string
	}{
		{"other user's", "belongs to another user (uid 1234)", func(t *testing.T) string {
			if os.Getuid() != 0 {
				t.Skip("chown to another user needs root")
			}
			d := filepath.Join(base, "theirs")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d, 1234, 1234); err != nil {
				t.Fatal(err)
			}
			return d
		}},
		{"world-writable", "writable by others", func(t *testing.T) string {
			d := filepath.Join(base, "open")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, 0o777); err != nil {
				t.Fatal(err)
			}
			return d
		}},
		{"group-writable", "writable by others", func(t *testing.T) string {
			d := filepath.Join(base, "group")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, 0o770); err != nil {
				t.Fatal(err)
			}
			return d
		}},
		{"symlink", "is a symbolic link", func(t *testing.T) string {
			d := filepath.Join(base, "link")
			if err := os.Symlink(real, d); err != nil {
				t.Fatal(err)
			}
			return d
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := c.setup(t)
			_, err := Acquire(context.Background(), filepath.Join(dir, "role-x.lock"), Options{Timeout: 5 * time.Second})
			if err == nil || !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), EnvDir) {
				t.Fatalf("got %v; want ErrUnsafe saying %q and naming %s", err, c.want, EnvDir)
			}
			if _, err := os.Lstat(filepath.Join(dir, "role-x.lock")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a lock file was created in the refused directory (%v)", err)
			}
		})
	}
	// Readable by others is fine: lock files carry no secret.
	readable := filepath.Join(base, "readable")
	if err := os.Mkdir(readable, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(readable, 0o755)
	release, err := Acquire(context.Background(), filepath.Join(readable, "a.lock"), Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("a 0755 directory of the user's own: %v", err)
	}
	release()
}

// TestLockFileSymlinkRefused: a lock file that is a symbolic link is not
// followed (O_NOFOLLOW), whether its target exists or not; nothing is
// created at the target. A lock file others may open is refused too, since
// they could flock it.
func TestLockFileSymlinkRefused(t *testing.T) {
	dir := t.TempDir()
	elsewhere := t.TempDir()
	existing := filepath.Join(elsewhere, "existing")
	if err := os.WriteFile(existing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(elsewhere, "missing")
	for _, target := range []string{existing, missing} {
		path := filepath.Join(dir, "role-"+filepath.Base(target)+".lock")
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		_, err := Acquire(context.Background(), path, Options{Timeout: 5 * time.Second})
		if err == nil || !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("symlink to %s: got %v", target, err)
		}
	}
	if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the link's target was created (%v)", err)
	}

	// The race the Lstat check cannot see: O_NOFOLLOW itself refuses.
	path := filepath.Join(dir, "raced.lock")
	if err := os.Symlink(existing, path); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(path, openFlag(), 0o600); err == nil {
		f.Close()
		t.Fatal("openFlag follows symbolic links")
	}

	open := filepath.Join(dir, "open.lock")
	if err := os.WriteFile(open, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(context.Background(), open, Options{Timeout: 5 * time.Second}); err == nil || !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "open to others") {
		t.Fatalf("0644 lock file: got %v", err)
	}
	// The lock was let go: a private file at another path still works.
	release, err := Acquire(context.Background(), filepath.Join(dir, "fine.lock"), Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	release()
}

// TestRelativeLockDirRefused: a relative SSMPROXY_LOCK_DIR would name a
// different directory in every working directory.
func TestRelativeLockDirRefused(t *testing.T) {
	t.Setenv(EnvDir, "locks")
	if _, err := Dir(); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("got %v", err)
	}
}

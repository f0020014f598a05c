package lockfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
)

// The lock directory gets the cache directory's checks
// (docs/credentials.md 5.6, 7): whoever else can create, replace or open
// the lock files there can hold ssmproxy's locks, and make every connect
// of the user wait out a lock timeout. Lock files carry no secret, so the
// directory may be readable by others; it may not be a symbolic link,
// belong to another user or be writable by anyone else. The lock files
// themselves are opened without following a symbolic link and must be the
// user's own regular files that nobody else may open.

// ErrUnsafe is wrapped by every refusal of a lock directory or lock file:
// a setting or a file for the user to fix, not a reason to retry.
var ErrUnsafe = errors.New("unsafe lock location")

// CheckDir refuses dir as a lock directory unless it is a real directory
// (not a symbolic link) owned by this user and writable by nobody else.
func CheckDir(dir string) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("lock directory: %w", err)
	}
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: lock directory %s is a symbolic link; not using it (%s)", ErrUnsafe, dir, fixDir)
	case !st.IsDir():
		return fmt.Errorf("%w: lock directory %s is not a directory; not using it (%s)", ErrUnsafe, dir, fixDir)
	}
	if uid, mine := owner(st); !mine {
		return fmt.Errorf("%w: lock directory %s belongs to another user (uid %d); not using it, "+
			"since that user could hold ssmproxy's locks (%s)", ErrUnsafe, dir, uid, fixDir)
	}
	if checkModes && st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: lock directory %s has mode %04o, writable by others; not using it, "+
			"since they could create or replace its lock files (run \"chmod go-w %s\", or %s)",
			ErrUnsafe, dir, uint32(st.Mode().Perm()), dir, fixDir)
	}
	return nil
}

const fixDir = "set " + EnvDir + " to a directory of your own, or unset it"

// checkFile refuses a lock file that is not this user's own regular file,
// or that others may open (and so flock).
func checkFile(path string, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: lock file %s is not a regular file; remove it", ErrUnsafe, path)
	}
	if uid, mine := owner(st); !mine {
		return fmt.Errorf("%w: lock file %s belongs to another user (uid %d); remove it", ErrUnsafe, path, uid)
	}
	if checkModes && st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: lock file %s has mode %04o, open to others; run \"chmod 600 %s\" or remove it",
			ErrUnsafe, path, uint32(st.Mode().Perm()), path)
	}
	return nil
}

// refuseLink gives a clear error for a lock file that is a symbolic link,
// before opening it without following links turns it into a bare ELOOP.
func refuseLink(path string) error {
	if st, err := os.Lstat(path); err == nil && st.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%w: lock file %s is a symbolic link; not following it (remove it)", ErrUnsafe, path)
	}
	return nil
}

// openFlag is how a lock file is opened: created if missing, never through
// a symbolic link, read-only where an exclusive flock allows it (as the
// flock library does by default).
func openFlag() int {
	switch runtime.GOOS {
	case "aix", "solaris", "illumos":
		return os.O_CREATE | os.O_RDWR | noFollow
	}
	return os.O_CREATE | os.O_RDONLY | noFollow
}

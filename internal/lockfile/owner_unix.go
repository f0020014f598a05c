//go:build unix

package lockfile

import (
	"io/fs"
	"os"
	"syscall"
)

// noFollow makes opening a lock file fail on a symbolic link.
const noFollow = syscall.O_NOFOLLOW

// owner returns the file's owner and whether this user owns it.
func owner(st fs.FileInfo) (uid int, mine bool) {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, true
	}
	return int(s.Uid), int(s.Uid) == os.Getuid()
}

// checkModes: on Unix the mode bits say who else may use a file.
const checkModes = true

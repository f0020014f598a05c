//go:build unix

package keyring

import (
	"os"

	"golang.org/x/sys/unix"
)

// inBackground reports whether this process is in a background process
// group of the terminal f (ssh -f, "cmd &", a ControlPersist master): the
// terminal belongs to whoever is in the foreground, and a read would stop
// the process with SIGTTIN. A terminal that is not our controlling terminal
// (its foreground group cannot be read) is not a job-control conflict.
func inBackground(f *os.File) bool {
	fg, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	if err != nil {
		return false
	}
	return fg != unix.Getpgrp()
}

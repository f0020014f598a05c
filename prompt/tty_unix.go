//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package prompt

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
	bg := false
	_ = control(f, func(fd int) error {
		fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		bg = err == nil && fg != unix.Getpgrp()
		return nil
	})
	return bg
}

// echoOff turns the terminal's echo off (keeping line editing and signals)
// and returns the function that restores the previous modes.
func echoOff(f *os.File) (func(), error) {
	var old *unix.Termios
	err := control(f, func(fd int) error {
		var err error
		if old, err = unix.IoctlGetTermios(fd, ioctlGetTermios); err != nil {
			return err
		}
		t := *old
		t.Lflag &^= unix.ECHO
		t.Lflag |= unix.ICANON | unix.ISIG
		t.Iflag |= unix.ICRNL
		return unix.IoctlSetTermios(fd, ioctlSetTermios, &t)
	})
	if err != nil {
		return nil, err
	}
	return func() {
		_ = control(f, func(fd int) error { return unix.IoctlSetTermios(fd, ioctlSetTermios, old) })
	}, nil
}

// control runs fn on f's descriptor without f.Fd(), which would switch it
// to blocking mode and make the read impossible to cancel.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

//go:build unix

package main

import (
	"net"
	"syscall"
)

// listenUnixPrivate creates a unix socket only its owner can connect to
// (mode 0600, set through the umask so there is no window with wider
// permissions). forward binds before any other goroutine creates files.
func listenUnixPrivate(path string) (*net.UnixListener, error) {
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}

//go:build !unix

package main

import "net"

// listenUnixPrivate: no umask here; the socket takes the directory's
// permissions.
func listenUnixPrivate(path string) (*net.UnixListener, error) {
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}

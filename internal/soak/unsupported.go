//go:build !unix

// The soak program drives OpenSSH's sshd, ssh and rsync and reads process
// CPU times from getrusage: it runs on Linux and macOS only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "soak: runs on Linux and macOS only (it drives OpenSSH and rsync)")
	os.Exit(1)
}

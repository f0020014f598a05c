//go:build !unix

package keyring

import "os"

// inBackground cannot be told here; the terminal is used as is.
func inBackground(*os.File) bool { return false }

//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package prompt

import (
	"errors"
	"os"
)

// inBackground cannot be told here; the terminal is used as is.
func inBackground(*os.File) bool { return false }

// echoOff is not available here: readTTY falls back to x/term.
func echoOff(*os.File) (func(), error) { return nil, errors.ErrUnsupported }

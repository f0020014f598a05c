package prompt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// readTTY writes the prompt to the terminal and reads one line from it, with
// echo off unless echo is set. Cancelling ctx ends the read: the terminal is
// polled (its descriptor is never switched to blocking mode), so a read
// deadline interrupts it. The echo setting is restored in every case, and
// Settle restores it should the process exit before this function returns.
func readTTY(ctx context.Context, f *os.File, prompt string, echo bool) (string, error) {
	if !strings.HasSuffix(prompt, " ") {
		prompt += ": "
	}
	if _, err := io.WriteString(f, prompt); err != nil {
		return "", fmt.Errorf("write prompt to terminal: %w", err)
	}
	if !echo {
		restore, err := echoOff(f)
		switch {
		case err == nil:
			// Tracked until restored, so that Settle can restore the
			// modes should the process exit before this read ends.
			restore = track(restore)
			defer func() {
				restore()
				_, _ = io.WriteString(f, "\n")
			}()
		case errors.Is(err, errors.ErrUnsupported) && term.IsTerminal(int(f.Fd())):
			return readPassword(f)
		}
		// Not a terminal (a file or a pipe in tests): nothing to hide.
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	line, err := bufio.NewReader(f).ReadString('\n')
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err != nil && (err != io.EOF || line == "") {
		return "", fmt.Errorf("read from terminal: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// readPassword is the fallback where the terminal's modes cannot be set
// here: x/term hides the echo, but its read cannot be cancelled.
func readPassword(f *os.File) (string, error) {
	b, err := term.ReadPassword(int(f.Fd()))
	_, _ = io.WriteString(f, "\n")
	if err != nil {
		return "", fmt.Errorf("read from terminal: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// outsideText is what a service or a child might say: a secret-shaped key,
// a token field, and terminal control sequences.
const outsideText = "bad answer: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY \"SessionToken\":\"abc\" \x1b]0;pwned\x07\x1b[2J\r\nnext"

func assertClean(t *testing.T, where, s string) {
	t.Helper()
	for _, bad := range []string{"wJalrXUtnFEMI", `"abc"`, "\x1b", "\a", "\r"} {
		if strings.Contains(s, bad) {
			t.Errorf("%s has %q: %q", where, bad, s)
		}
	}
}

// TestLoggerRedacts: both loggers newLogger builds (the log file here)
// pass every record through the redactor.
func TestLoggerRedacts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	log, closeLog, err := newLogger(2, p)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn(outsideText, "err", errors.New(outsideText), "output", outsideText)
	closeLog()
	b, _ := os.ReadFile(p)
	if strings.Count(string(b), "[redacted]") < 6 {
		t.Errorf("log %q", b)
	}
	assertClean(t, "the log file", string(b))
}

// TestReportRedacts: the one stderr line for a failure passes the redactor.
func TestReportRedacts(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	code := report(context.Background(), errors.New(outsideText))
	os.Stderr = saved
	w.Close()
	buf := make([]byte, 4096)
	n, _ := r.Read(buf)
	line := string(buf[:n])
	if code != exitInternal || !strings.HasPrefix(line, "ssmproxy: bad answer: [redacted]") || strings.Count(line, "\n") != 1 {
		t.Errorf("exit %d, line %q", code, line)
	}
	assertClean(t, "the stderr line", line)
}

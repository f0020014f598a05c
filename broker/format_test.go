package broker

import (
	"strings"
	"testing"
	"time"
)

// TestFormatWhen: the one formatter for "when" (creds output, notices).
func TestFormatWhen(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	if got := FormatWhen(time.Time{}, now); got != "never" {
		t.Fatalf("zero: %q", got)
	}
	at := now.Add(38*time.Minute + 400*time.Millisecond)
	if got := FormatWhen(at, now); got != fmtTime(at)+" (in 38m0s)" {
		t.Fatalf("future: %q", got)
	}
	if got := FormatWhen(now.Add(-5*time.Second), now); !strings.HasSuffix(got, "(5s ago)") {
		t.Fatalf("past: %q", got)
	}
}

// TestProcessDepth: the nesting guard of credential-process.
func TestProcessDepth(t *testing.T) {
	for v, want := range map[string]int{"": 0, "1": 1, " 2 ": 2, "x": 0, "-3": 0} {
		t.Setenv(EnvProcessDepth, v)
		if got := ProcessDepth(); got != want {
			t.Errorf("%q: %d, want %d", v, got, want)
		}
	}
	t.Setenv(EnvProcessDepth, "1")
	if nextDepth() != "2" {
		t.Fatalf("nextDepth %s", nextDepth())
	}
}

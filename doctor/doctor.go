// Package doctor runs ssmproxy's checks one at a time and reports each
// (docs/doctor.md): a failure of one check never stops the others; a check
// that needs an earlier one's answer says so and is skipped.
package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// Status of one check.
type Status string

const (
	Pass Status = "pass"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Result is one line of the report.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Check is one named step. Run gets a context bounded by the check's
// timeout; it returns the result's status, detail and fix.
type Check struct {
	Name    string
	Timeout time.Duration // default DefaultTimeout
	Run     func(ctx context.Context) Result
}

// DefaultTimeout bounds a check: none may hang the doctor.
const DefaultTimeout = 20 * time.Second

// Run runs the checks in order and returns their results. Every text from
// outside the process passes the redactor.
func Run(ctx context.Context, checks []Check) []Result {
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		t := c.Timeout
		if t <= 0 {
			t = DefaultTimeout
		}
		cctx, cancel := context.WithTimeout(ctx, t)
		done := make(chan Result, 1)
		go func() { done <- c.Run(cctx) }()
		var r Result
		select {
		case r = <-done:
		case <-cctx.Done():
			r = Result{Status: Fail, Detail: fmt.Sprintf("no answer within %s", t), Fix: "check the network path to AWS (proxy, VPN, firewall)"}
		}
		cancel()
		r.Check = c.Name
		r.Detail = redact.String(r.Detail)
		r.Fix = redact.String(r.Fix)
		out = append(out, r)
	}
	return out
}

// OK reports whether no check failed.
func OK(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return false
		}
	}
	return true
}

// Print writes one line per check: ✓, ✗ or –, the check, the detail, and
// for a failure the fix on the next line.
func Print(w io.Writer, rs []Result) {
	width := 0
	for _, r := range rs {
		width = max(width, len(r.Check))
	}
	for _, r := range rs {
		mark := map[Status]string{Pass: "✓", Fail: "✗", Skip: "–"}[r.Status]
		fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, r.Check, r.Detail)
		if r.Status == Fail && r.Fix != "" {
			fmt.Fprintf(w, "  %*s  fix: %s\n", width, "", r.Fix)
		}
	}
}

// PrintJSON writes the results as a JSON array (a stable shape for
// scripts).
func PrintJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rs)
}

// Passf, Failf and Skipf build results.
func Passf(format string, a ...any) Result {
	return Result{Status: Pass, Detail: fmt.Sprintf(format, a...)}
}
func Skipf(format string, a ...any) Result {
	return Result{Status: Skip, Detail: fmt.Sprintf(format, a...)}
}
func Failf(fix, format string, a ...any) Result {
	return Result{Status: Fail, Detail: fmt.Sprintf(format, a...), Fix: fix}
}

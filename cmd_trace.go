package main

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/spf13/cobra"

	"github.com/ssmproxy/ssmproxy/trace"
)

// The flight recorder's CLI side (docs/trace.md): connect --trace FILE and
// forward --trace FILE record, ssmproxy trace FILE summarises.

// openTrace creates FILE (0600, replacing an earlier trace) and starts a
// recorder on it. The returned stop writes the last line and closes it.
func openTrace(path string) (*trace.Recorder, func(), error) {
	if path == "" {
		return nil, func() {}, nil
	}
	if path == "-" {
		return nil, nil, usagef("--trace: give a file name (stdout is not for traces)")
	}
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return nil, nil, usagef("--trace: %s is not a regular file", path)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, usagef("--trace: %v", err)
	}
	rec := trace.NewRecorder(f, "ssmproxy "+version, nil)
	return rec, func() { _ = rec.Close(); _ = f.Close() }, nil
}

// tracedCredentials records each credential retrieval a session makes (at
// StartSession, ResumeSession, TerminateSession, a signed dial): when the
// credentials expire and whether they are new since the last retrieval.
// Never a key: "new" compares the access key id in memory only.
type tracedCredentials struct {
	inner aws.CredentialsProvider
	rec   *trace.Recorder
	mu    sync.Mutex // Retrieve runs from several goroutines (resume, terminate)
	last  string
}

func (c *tracedCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	cr, err := c.inner.Retrieve(ctx)
	if err != nil {
		c.rec.Event("credentials", "err", err)
		return cr, err
	}
	c.mu.Lock()
	attrs := []any{"new", c.last != "" && c.last != cr.AccessKeyID}
	c.last = cr.AccessKeyID
	c.mu.Unlock()
	if cr.CanExpire {
		attrs = append(attrs, "expires", cr.Expires.UTC().Format(time.RFC3339), "left", time.Until(cr.Expires).Round(time.Second))
	}
	c.rec.Event("credentials", attrs...)
	return cr, nil
}

// Invalidate passes on to the broker (ssm invalidates refused credentials).
func (c *tracedCredentials) Invalidate() {
	if inv, ok := c.inner.(interface{ Invalidate() }); ok {
		inv.Invalidate()
		c.rec.Event("credentials-invalidated")
	}
}

func newTraceCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "trace [flags] FILE",
		Short: "summarise a flight recorder trace (connect/forward --trace FILE)",
		Long: `Reads a trace written by "ssmproxy connect --trace FILE" or "ssmproxy forward
--trace FILE" and prints: the sessions, frames and stream bytes each way,
throughput per second, retransmissions (which sequence numbers), duplicates,
pause_publication, each lost data channel with why and how long its resume took,
the longest time without an inbound frame and the events just before it,
credential refreshes, and how the session ended.

A trace holds frame headers and events, never a payload byte, token or key
(docs/trace.md): it is safe to attach to a bug report.
`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("trace: want one FILE, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return usagef("trace: %v", err)
			}
			defer f.Close()
			s, err := trace.Summarize(f)
			if err != nil {
				return usagef("trace: %s: %v", args[0], err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			s.Format(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}

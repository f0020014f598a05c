package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// Build stamps, set by the Makefile's -ldflags -X (make build, make dist).
// date is the commit's date, not the build's, so that two builds of one
// commit are the same bytes (docs/platforms.md 1).
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

// versionLine is what "ssmproxy version" prints.
func versionLine() string {
	return fmt.Sprintf("ssmproxy %s (commit %s, %s, %s, %s/%s)", version, commit, date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version, commit, commit date, Go version and platform",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), versionLine())
			return err
		},
	}
}

package main

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/target"
)

// Shell completion (docs/cli.md 2). "ssmproxy completion SHELL" prints
// cobra's script; the script calls "ssmproxy __complete ..." for each
// word, which answers from local files only: completing must never call
// AWS, prompt for an MFA code or wait on the network.

// noArgs refuses positional arguments with a usage error (exit 2).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s: unexpected argument %q (see ssmproxy help %s)", cmd.Name(), args[0], cmd.Name())
	}
	return nil
}

// completeFlags registers completions for the flags of cmd that have a
// known set of values.
func completeFlags(cmd *cobra.Command) {
	fixed := map[string][]string{
		"keyring-backend": {"keychain", "wincred", "secret-service", "kwallet", "keyctl", "pass", "file"},
		"document":        {ssm.DocumentSSH},
	}
	for name, values := range fixed {
		if cmd.Flags().Lookup(name) != nil {
			_ = cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	if cmd.Flags().Lookup("profile") != nil {
		_ = cmd.RegisterFlagCompletionFunc("profile", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return awsProfiles(), cobra.ShellCompDirectiveNoFileComp
		})
	}
	if cmd.Flags().Lookup("via") != nil {
		_ = cmd.RegisterFlagCompletionFunc("via", completeTarget)
	}
}

// completeTarget offers the instance ids and names earlier lookups saw
// (target.Known), for the first positional argument only.
func completeTarget(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	dir, err := target.DefaultCacheDir()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return target.Known(dir), cobra.ShellCompDirectiveNoFileComp
}

// awsProfiles lists the profile names of the shared config and
// credentials files ($AWS_CONFIG_FILE, $AWS_SHARED_CREDENTIALS_FILE, else
// ~/.aws/config and ~/.aws/credentials). Only section headers are read.
func awsProfiles() []string {
	home, _ := os.UserHomeDir()
	files := map[string]string{ // path → prefix of its profile sections
		envOr("AWS_CONFIG_FILE", filepath.Join(home, ".aws", "config")):                  "profile ",
		envOr("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, ".aws", "credentials")): "",
	}
	seen := map[string]bool{}
	for path, prefix := range files {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if !strings.HasPrefix(l, "[") || !strings.HasSuffix(l, "]") {
				continue
			}
			name := strings.TrimSpace(l[1 : len(l)-1])
			if name == "default" {
				seen[name] = true
			} else if n, ok := strings.CutPrefix(name, prefix); ok && prefix != "" || prefix == "" && !strings.Contains(name, " ") {
				if n = strings.TrimSpace(n); n != "" && !strings.ContainsAny(n, " \t") {
					seen[n] = true
				}
			}
		}
		f.Close()
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

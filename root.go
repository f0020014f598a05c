package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The command line is cobra's (github.com/spf13/cobra): help generated from
// the flag definitions with the code's defaults, completion scripts for
// bash, zsh, fish and PowerShell, and the conventions of kubectl, gh and
// docker that people already type. kong was the other candidate; it has no
// PowerShell completion of its own and its completion add-on is a separate
// module (docs/cli.md 1).
//
// Each command's run function returns an error; report (main.go) turns it
// into the one stderr line and the exit code (exitcodes.go).

const rootLong = `ssmproxy carries SSH (and other TCP) over AWS Session Manager. It speaks the
Session Manager data channel itself: no AWS CLI, no session-manager-plugin.

In ~/.ssh/config:
  Host i-* mi-*
      ProxyCommand ssmproxy connect %h %p

Run "ssmproxy help connect" for the flags and exit codes, "ssmproxy help creds"
for the credential settings.`

// newRootCmd builds the command tree.
func newRootCmd(ctx context.Context) *cobra.Command {
	root := &cobra.Command{
		Use:           "ssmproxy",
		Short:         "SSH over AWS Session Manager, in one binary",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Unknown commands are usage errors (exit 2), in our words; no
		// command at all prints the overview on stderr and exits 2.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				cmd.SetOut(cmd.ErrOrStderr())
				_ = cmd.Help()
				return errHelpShown
			}
			return usagef("unknown command %q (try \"ssmproxy help\")", args[0])
		},
	}
	root.SetContext(ctx)
	root.SetFlagErrorFunc(flagError)
	root.SetHelpFunc(func(c *cobra.Command, _ []string) { _, _ = io.WriteString(c.OutOrStdout(), helpText(c)) })
	root.CompletionOptions.HiddenDefaultCmd = false
	root.AddCommand(
		newConnectCmd(runConnect),
		newForwardCmd(runForward),
		newLoginCmd(),
		newLogoutCmd(),
		newCredsCmd(),
		newCredentialProcessCmd(),
		newVersionCmd(),
		newTraceCmd(),
		newDoctorCmd(),
		newSSHConfigCmd(),
	)
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Short = "print a shell completion script (bash, zsh, fish, powershell)"
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return usagef("completion: name a shell: bash, zsh, fish or powershell (see ssmproxy help completion)")
				}
				return usagef("completion: no script for %q: bash, zsh, fish or powershell", args[0])
			}
		}
	}
	return root
}

// execute runs the command line args through the tree.
func execute(ctx context.Context, args []string) error {
	root := newRootCmd(ctx)
	root.SetArgs(singleDashCompat(root, args))
	return root.Execute()
}

var errHelpShown = errors.New("help shown")

// flagError words pflag's errors as the std flag package did, which the
// previous versions printed and scripts may match ("flag provided but not
// defined"), and makes them usage errors (exit 2).
func flagError(c *cobra.Command, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "unknown flag: "); ok {
		msg = "flag provided but not defined: " + name
	} else if strings.HasPrefix(msg, "unknown shorthand flag: ") {
		msg = "flag provided but not defined: " + msg[len("unknown shorthand flag: "):]
	}
	return usagef("%s: %s (see ssmproxy help %s)", c.Name(), msg, c.Name())
}

// singleDashCompat rewrites -name to --name for the long flags of the
// command args name, so command lines written for the std flag package
// (which took both) keep working: "-profile p", "-resume-budget=1m".
// Single letters stay shorthands (-v, -L, -D, and clusters like -vv); a
// flag's value is never rewritten, nor anything after "--".
func singleDashCompat(root *cobra.Command, args []string) []string {
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root || len(rest) == len(args) {
		return args
	}
	fs := cmd.Flags()
	out := append([]string(nil), args...)
	for i := len(args) - len(rest); i < len(out); i++ {
		a := out[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue
		}
		var f *pflag.Flag
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case strings.HasPrefix(a, "--"):
			f = fs.Lookup(name)
		case len(name) == 1:
			f = fs.ShorthandLookup(name)
			hasValue = hasValue || len(a) > 2
		default:
			// A known long flag, or a word that is no cluster of
			// shorthands: the error then names the whole word.
			if f = fs.Lookup(name); f != nil || fs.ShorthandLookup(name[:1]) == nil {
				out[i] = "-" + a
			}
		}
		// The next word is this flag's value: leave it alone.
		if f != nil && !hasValue && f.NoOptDefVal == "" {
			i++
		}
	}
	return out
}

// Help layout: usage lines, the command's prose, its own flags, the
// credential flags (annotated groupCredentials) with their prose, then the
// command's footer (environment, exit codes). Flag lines and their
// defaults come from the definitions.
const (
	annUsage         = "ssmproxy/usage"  // extra usage lines
	annFooter        = "ssmproxy/footer" // text after the flags
	annGroup         = "ssmproxy/group"  // flag annotation: which block
	groupCredentials = "credentials"
)

func helpText(c *cobra.Command) string {
	var b strings.Builder
	if !c.HasParent() {
		fmt.Fprintf(&b, "%s: %s.\n\n%s\n\nCommands:\n", c.Name(), c.Short, c.Long)
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() || s.Name() == "help" {
				fmt.Fprintf(&b, "  %-20s %s\n", s.Name(), s.Short)
			}
		}
		return b.String()
	}
	fmt.Fprintf(&b, "Usage: %s\n", c.UseLine())
	if extra := c.Annotations[annUsage]; extra != "" {
		for _, l := range strings.Split(extra, "\n") {
			fmt.Fprintf(&b, "       %s\n", l)
		}
	}
	if c.Long != "" {
		fmt.Fprintf(&b, "\n%s\n", strings.TrimRight(c.Long, "\n"))
	} else if c.Short != "" {
		fmt.Fprintf(&b, "\n%s.\n", strings.ToUpper(c.Short[:1])+c.Short[1:])
	}
	own, creds := pflag.NewFlagSet("own", pflag.ContinueOnError), pflag.NewFlagSet("creds", pflag.ContinueOnError)
	own.SortFlags, creds.SortFlags = false, false
	// In the order the command defines them.
	c.Flags().SortFlags = false
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || c.InheritedFlags().Lookup(f.Name) != nil {
			return
		}
		if len(f.Annotations[annGroup]) > 0 && f.Annotations[annGroup][0] == groupCredentials {
			creds.AddFlag(f)
		} else {
			own.AddFlag(f)
		}
	})
	if own.HasFlags() {
		fmt.Fprintf(&b, "\nFlags:\n%s", own.FlagUsagesWrapped(100))
	}
	if creds.HasFlags() {
		fmt.Fprintf(&b, "\nCredential flags (ssmproxy-only settings; the rest comes from the profile):\n%s\n%s",
			creds.FlagUsagesWrapped(100), credentialsHelp)
	}
	if footer := c.Annotations[annFooter]; footer != "" {
		fmt.Fprintf(&b, "\n%s", footer)
	}
	return b.String()
}

// parseWith runs cmd's parsing and checks on args as the full command line
// would (single-dash compatibility included); tests give cmd a run
// function that keeps the options instead of acting on them.
func parseWith(cmd *cobra.Command, args []string) error {
	root := &cobra.Command{Use: "ssmproxy", SilenceErrors: true, SilenceUsage: true}
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(cmd)
	all := append([]string{cmd.Name()}, args...)
	root.SetArgs(singleDashCompat(root, all))
	return root.Execute()
}

package main

import (
	"context"

	"github.com/spf13/cobra"
)

// newRootCmd builds the command tree. Flags are defined with pflag (cobra)
// and the help text is generated from them, so defaults shown are the
// code's own. Each command's run function returns an error; report turns
// it into the one stderr line and the exit code (exitcodes.go).
//
// Commands not yet migrated keep their own flag parsing: cobra hands them
// their arguments untouched (DisableFlagParsing).
func newRootCmd(ctx context.Context) *cobra.Command {
	root := &cobra.Command{
		Use:           "ssmproxy",
		Short:         "SSH over AWS Session Manager, in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Unknown commands are usage errors (exit 2), in our words.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return usagef("unknown command %q (try \"ssmproxy help\")", args[0])
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usagef("%s: %v", c.Name(), err)
	})
	root.SetContext(ctx)
	root.AddCommand(
		legacyCmd("connect", "carry stdin/stdout to TARGET:PORT (ssh ProxyCommand)", cmdConnect),
		legacyCmd("forward", "forward local ports through the instance, no sshd needed", cmdForward),
		legacyCmd("login", "store a long-term key in the keyring as the credential source", cmdLogin),
		legacyCmd("logout", "remove it, its MFA session and its cached credentials", cmdLogout),
		legacyCmd("creds", "show where credentials come from and when they expire", cmdCreds),
		legacyCmd("credential-process", "credential_process JSON for the AWS CLI and SDK tools", cmdCredentialProcess),
	)
	return root
}

// legacyCmd wraps a command that parses its own flags.
func legacyCmd(name, short string, fn func(context.Context, []string) error) *cobra.Command {
	return &cobra.Command{
		Use:                name,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return fn(cmd.Context(), args)
		},
	}
}

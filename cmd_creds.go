package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/ssmproxy/ssmproxy/broker"
	targetpkg "github.com/ssmproxy/ssmproxy/target"
)

const credsLong = `Shows where the credentials of profile P come from, the keyring backend in
use, the MFA session, the cached scoped credentials with their expiry and the
window in which a running ssmproxy re-mints them, and the hard deadline (the
moment after which nothing can be minted without you). Secrets are never
printed. Nothing is minted.
`

const credProcLong = `Prints credentials in the credential_process format (JSON, Version 1) so the
AWS CLI, the session-manager-plugin and other SDK tools can use the broker:

  [profile ssm]
  credential_process = ssmproxy credential-process --profile work --target i-0123456789abcdef0

The credentials are the broker's scoped ones (shared with every ssmproxy
process through the cache), and Expiration is reported a few minutes early,
because the consumer's SDK uses them up to that instant. Without --target the
session policy allows every instance of the account (still only the
document and your own sessions). A long-term key is never printed: a role or
an MFA device must be configured.

It never prompts on the terminal by default: it runs inside other programs
(the AWS CLI, the session-manager-plugin, often itself inside ssh's
ProxyCommand), where ssh or the caller owns the terminal. An MFA code comes
from SSMPROXY_MFA_TOKEN, --mfa-process or SSH_ASKPASS, the file keyring's
passphrase from SSMPROXY_FILE_PASSPHRASE or SSH_ASKPASS; --allow-tty permits
the terminal when you run it by hand.
`

// profileFlags are --profile and --region, as every command but connect
// and forward takes them.
type profileFlags struct{ profile, region string }

func (p *profileFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&p.profile, "profile", "", "AWS profile `NAME` (default: $AWS_PROFILE, else \"default\")")
	fs.StringVar(&p.region, "region", "", "AWS `REGION` (default: $AWS_REGION, else the profile's)")
}

func newCredsCmd() *cobra.Command {
	var pf profileFlags
	var bf brokerFlags
	cmd := &cobra.Command{
		Use:   "creds [flags]",
		Short: "show where credentials come from and when they expire",
		Long:  credsLong,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCreds(cmd.Context(), pf, bf)
		},
	}
	pf.register(cmd.Flags())
	bf.register(cmd.Flags())
	completeFlags(cmd)
	return cmd
}

func runCreds(ctx context.Context, pf profileFlags, bf brokerFlags) error {
	profile := resolveProfile(ctx, pf.profile)
	b, err := broker.New(ctx, brokerOptions(profile, pf.region, bf, "", nil, slog.New(slog.DiscardHandler), os.Stderr))
	if err != nil {
		return setupFailure(err)
	}
	defer b.Close()
	printStatus(os.Stdout, b.Status(ctx), time.Now())
	return nil
}

// printStatus renders Status for people. It holds no secret to print.
func printStatus(w io.Writer, st broker.Status, now time.Time) {
	where := ""
	if !st.InConfig {
		where = " (not in the AWS config files)"
	}
	fmt.Fprintf(w, "profile:        %s%s\n", st.Profile, where)
	fmt.Fprintf(w, "region:         %s\n", st.Region)
	fmt.Fprintf(w, "source:         %s\n", st.Source)
	if st.RoleARN != "" {
		fmt.Fprintf(w, "role:           %s\n", st.RoleARN)
	} else {
		fmt.Fprintf(w, "role:           none (the source credentials are used directly)\n")
	}
	fmt.Fprintf(w, "keyring:        %s (long-term keys), %s (MFA sessions)\n", orNone(st.KeyringBackend), orNone(st.MFAKeyringBackend))
	if st.MFASerial != "" {
		mfa := "no valid session stored (a code is asked at the next connect)"
		if !st.MFASessionExpires.IsZero() {
			mfa = "session valid until " + broker.FormatWhen(st.MFASessionExpires, now)
		}
		fmt.Fprintf(w, "MFA:            %s, %s\n", st.MFASerial, mfa)
	}
	switch d := st.Deadline; {
	case d == nil || d.Renewable:
		fmt.Fprintf(w, "hard deadline:  none (the source renews itself)\n")
	case !d.Known():
		fmt.Fprintf(w, "hard deadline:  unknown: %s may expire at any time; %s\n", d.What, d.Fix)
	default:
		fmt.Fprintf(w, "hard deadline:  %s: %s; %s\n", broker.FormatWhen(d.At, now), d.What, d.Fix)
	}
	if len(st.Entries) == 0 {
		fmt.Fprintf(w, "scoped credentials: none cached in %s\n", st.CacheDir)
		return
	}
	fmt.Fprintf(w, "scoped credentials (cached in %s):\n", st.CacheDir)
	for _, e := range st.Entries {
		target := e.Target
		switch {
		case e.Lookup:
			target = "target lookups (describe only)"
		case target == "":
			target = "any instance"
		}
		state := "fresh"
		if !e.Fresh {
			state = "due for re-mint"
		}
		if !e.Expires.After(now) {
			state = "expired"
		}
		fmt.Fprintf(w, "  - %s, %s, session name %s, key %s\n", target, orNone(e.Document), orNone(e.RoleSessionName), e.AccessKeyID)
		fmt.Fprintf(w, "    expires %s [%s]\n", broker.FormatWhen(e.Expires, now), state)
		if !e.ReMintFrom.IsZero() {
			fmt.Fprintf(w, "    next re-mint between %s and %s\n", e.ReMintFrom.Local().Format(time.RFC3339), e.ReMintBy.Local().Format(time.RFC3339))
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

type credProcOptions struct {
	profileFlags
	target, document string
	allowTTY         bool
	broker           brokerFlags
}

func newCredentialProcessCmd() *cobra.Command {
	o := &credProcOptions{}
	cmd := &cobra.Command{
		Use:   "credential-process [flags]",
		Short: "credential_process JSON for the AWS CLI and SDK tools",
		Long:  credProcLong,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCredentialProcess(cmd.Context(), *o)
		},
	}
	fs := cmd.Flags()
	o.profileFlags.register(fs)
	fs.StringVar(&o.target, "target", "", "instance `ID` the credentials may start sessions on (default: every instance)")
	fs.StringVar(&o.document, "document", "", "session document `D` (default AWS-StartSSHSession)")
	fs.BoolVar(&o.allowTTY, "allow-tty", false, "allow prompts on the terminal (/dev/tty)")
	o.broker.register(fs)
	completeFlags(cmd)
	return cmd
}

func runCredentialProcess(ctx context.Context, co credProcOptions) error {
	// stdout carries the JSON and nothing else: keep it, and point os.Stdout
	// and os.Stdin away from the consumer's pipes for everything else.
	stdout := os.Stdout
	os.Stdout = os.Stderr
	if devnull, err := os.Open(os.DevNull); err == nil {
		os.Stdin = devnull
	}
	profile, region, target, document, allowTTY, bf := co.profile, co.region, co.target, co.document, co.allowTTY, co.broker
	if target != "" && !targetpkg.IsID(target) {
		return usagef("credential-process: --target %q is not an instance id", target)
	}
	if broker.ProcessDepth() >= 2 {
		return usagef("credential-process: called recursively (a credential_process of the source profile runs ssmproxy credential-process again)")
	}
	profile = resolveProfile(ctx, profile)
	o := brokerOptions(profile, region, bf, target, documentList(document), slog.New(slog.DiscardHandler), os.Stderr)
	// Non-interactive unless asked: the caller (or an ssh around it) owns
	// the terminal.
	o.Prompter.NoTTY = !allowTTY
	b, err := broker.New(ctx, o)
	if err != nil {
		return setupFailure(err)
	}
	defer b.Close()
	if err := b.Prepare(ctx); err != nil {
		return setupFailure(err)
	}
	out, err := b.CredentialProcess(ctx)
	if err != nil {
		return setupFailure(err)
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	return nil
}

// credsError is a failure to obtain credentials (exit code 3, unless a more
// specific cause inside it has its own).
type credsError struct{ err error }

func (e *credsError) Error() string { return e.err.Error() }
func (e *credsError) Unwrap() error { return e.err }

// documentList is a one-document scope, or none (the broker's default).
func documentList(doc string) []string {
	if doc == "" {
		return nil
	}
	return []string{doc}
}

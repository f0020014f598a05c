package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/internal/redact"
	"github.com/ssmproxy/ssmproxy/internal/secretenv"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
)

const loginLong = `Stores a long-term IAM user key (AKIA…) for profile P (default $AWS_PROFILE or
"default") in the keyring, as the source the credential broker mints scoped,
short-lived credentials from. It replaces the profile's previous key and
forgets its MFA session and cached credentials.

The key is read from the terminal (/dev/tty, the secret without echo; or the
SSH_ASKPASS program), or for scripts from SSMPROXY_LOGIN_ACCESS_KEY_ID and
SSMPROXY_LOGIN_SECRET_ACCESS_KEY. Never from the command line.
`

const loginFooter = `Environment: SSMPROXY_FILE_PASSPHRASE (file keyring), AWS_ENDPOINT_URL_STS.
`

type loginOptions struct {
	profile, serial, backend, region string
	noVerify                         bool
}

func newLoginCmd() *cobra.Command {
	o := &loginOptions{}
	cmd := &cobra.Command{
		Use:         "login [flags]",
		Short:       "store a long-term key in the keyring as the credential source",
		Long:        loginLong,
		Annotations: map[string]string{annFooter: loginFooter},
		Args:        noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLogin(cmd.Context(), *o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.profile, "profile", "", "profile `P` to store the key for")
	fs.StringVar(&o.serial, "mfa-serial", "", "MFA device `ARN` of the user; ssmproxy then asks for a code and mints a 12-hour MFA session (GetSessionToken) once a day")
	keyringBackendFlag(fs, &o.backend)
	fs.StringVar(&o.region, "region", "", "`REGION` for the verification call")
	fs.BoolVar(&o.noVerify, "no-verify", false, "skip asking STS whose key it is (GetCallerIdentity)")
	completeFlags(cmd)
	return cmd
}

func newLogoutCmd() *cobra.Command {
	var profile, backend string
	cmd := &cobra.Command{
		Use:   "logout [flags]",
		Short: "remove the stored key, its MFA session and its cached credentials",
		Long:  "Removes the profile's stored key, its MFA session and its cached credentials.\n",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLogout(cmd.Context(), profile, backend)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&profile, "profile", "", "profile `P` (default $AWS_PROFILE or \"default\")")
	keyringBackendFlag(fs, &backend)
	completeFlags(cmd)
	return cmd
}

// Environment variables login reads the key from, for scripts.
const (
	envLoginKeyID  = secretenv.LoginAccessKeyID
	envLoginSecret = secretenv.LoginSecretAccessKey
)

func runLogin(ctx context.Context, o loginOptions) error {
	profile, serial, backend, region, noVerify := o.profile, o.serial, o.backend, o.region, o.noVerify
	if serial != "" && !strings.HasPrefix(serial, "arn:") && !strings.HasPrefix(serial, "GAHT") {
		return usagef("login: --mfa-serial %q is not an MFA device ARN", serial)
	}
	profile = broker.ProfileName(resolveProfile(ctx, profile))

	key := broker.SourceKey{AccessKeyID: secretenv.Get(envLoginKeyID), SecretAccessKey: secretenv.Get(envLoginSecret), MFASerial: serial}
	if key.AccessKeyID == "" || key.SecretAccessKey == "" {
		p := prompt.Prompter{}
		hint := envLoginKeyID + " and " + envLoginSecret
		var err error
		if key.AccessKeyID, err = p.Line(ctx, fmt.Sprintf("AWS access key id for profile %q", profile), hint); err != nil {
			return &loginError{err}
		}
		if key.SecretAccessKey, err = p.Secret(ctx, "AWS secret access key", hint); err != nil {
			return &loginError{err}
		}
	}
	redact.Register(key.SecretAccessKey) // no message about this login shows it
	store, err := openStore(ctx, backend, true)
	if err != nil {
		return err
	}
	stored, err := broker.Login(ctx, store, "", broker.LoginOptions{Profile: profile, Key: key, Verify: !noVerify, Region: region})
	if err != nil {
		return &loginError{err}
	}
	who := ""
	if stored.ARN != "" {
		who = " (" + stored.ARN + ")"
	}
	fmt.Printf("Stored the key %s%s for profile %q in the %s keyring.\n", broker.MaskKeyID(stored.AccessKeyID), who, profile, store.Backend())
	if stored.MFASerial != "" {
		fmt.Printf("MFA device %s: ssmproxy asks for a code when it needs a new MFA session.\n", stored.MFASerial)
	}
	return nil
}

func runLogout(ctx context.Context, profile, backend string) error {
	profile = broker.ProfileName(resolveProfile(ctx, profile))
	var stores []keyring.Store
	for _, persistent := range []bool{true, false} {
		st, err := openStore(ctx, backend, persistent)
		if err != nil {
			if persistent {
				return err
			}
			continue
		}
		if len(stores) == 0 || stores[0].Backend() != st.Backend() {
			stores = append(stores, st)
		}
	}
	removed, err := broker.Logout(ctx, stores, "", profile, true)
	if err != nil {
		return err
	}
	if len(removed) == 0 {
		fmt.Printf("Nothing stored for profile %q.\n", profile)
		return nil
	}
	fmt.Printf("Removed for profile %q: %s.\n", profile, strings.Join(removed, ", "))
	return nil
}

// loginError is a credentials failure at login (exit code 3).
type loginError struct{ err error }

func (e *loginError) Error() string { return "login: " + e.err.Error() }
func (e *loginError) Unwrap() error { return e.err }

package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/internal/redact"
	"github.com/ssmproxy/ssmproxy/internal/secretenv"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
)

const loginHelp = `Usage: ssmproxy login [--profile P] [--mfa-serial ARN] [--keyring-backend B] [--no-verify]

Stores a long-term IAM user key (AKIA…) for profile P (default $AWS_PROFILE or
"default") in the keyring, as the source the credential broker mints scoped,
short-lived credentials from. It replaces the profile's previous key and
forgets its MFA session and cached credentials.

The key is read from the terminal (/dev/tty, the secret without echo; or the
SSH_ASKPASS program), or for scripts from SSMPROXY_LOGIN_ACCESS_KEY_ID and
SSMPROXY_LOGIN_SECRET_ACCESS_KEY. Never from the command line.

Flags:
  --profile P           profile to store the key for
  --mfa-serial ARN      MFA device of the user; ssmproxy then asks for a code and
                        mints a 12-hour MFA session (GetSessionToken) once a day
  --keyring-backend B   where to store it ($SSMPROXY_KEYRING_BACKEND); the default
                        never picks the volatile keyctl for long-term keys
  --region R            region for the verification call
  --no-verify           skip asking STS whose key it is (GetCallerIdentity)

Environment: SSMPROXY_FILE_PASSPHRASE (file keyring), AWS_ENDPOINT_URL_STS.
`

const logoutHelp = `Usage: ssmproxy logout [--profile P] [--keyring-backend B]

Removes the profile's stored key, its MFA session and its cached credentials.
`

// Environment variables login reads the key from, for scripts.
const (
	envLoginKeyID  = secretenv.LoginAccessKeyID
	envLoginSecret = secretenv.LoginSecretAccessKey
)

func cmdLogin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	var profile, serial, backend, region string
	var noVerify bool
	fs.StringVar(&profile, "profile", "", "")
	fs.StringVar(&serial, "mfa-serial", "", "")
	fs.StringVar(&backend, "keyring-backend", "", "")
	fs.StringVar(&region, "region", "", "")
	fs.BoolVar(&noVerify, "no-verify", false, "")
	if err := parseFlags(fs, args, loginHelp); err != nil {
		return err
	}
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

func cmdLogout(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("logout", flag.ContinueOnError)
	var profile, backend string
	fs.StringVar(&profile, "profile", "", "")
	fs.StringVar(&backend, "keyring-backend", "", "")
	if err := parseFlags(fs, args, logoutHelp); err != nil {
		return err
	}
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

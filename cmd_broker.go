package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
)

// brokerFlags are the ssmproxy-only credential settings shared by connect,
// creds and credential-process. Settings with a standard ~/.aws/config key
// (role_arn, source_profile, mfa_serial, duration_seconds, role_session_name,
// external_id, region) come from the profile.
type brokerFlags struct {
	roleARN, roleSessionName, keyringBackend, mfaProcess string
	roleDuration, mfaSessionDuration                     time.Duration
	noSourceIdentity                                     bool
}

func (f *brokerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.roleARN, "role-arn", "", "")
	fs.StringVar(&f.roleSessionName, "role-session-name", "", "")
	fs.StringVar(&f.keyringBackend, "keyring-backend", "", "")
	fs.StringVar(&f.mfaProcess, "mfa-process", "", "")
	fs.DurationVar(&f.roleDuration, "role-duration", 0, "")
	fs.DurationVar(&f.mfaSessionDuration, "mfa-session-duration", 0, "")
	fs.BoolVar(&f.noSourceIdentity, "no-source-identity", false, "")
}

// brokerHelp documents the flags and variables above; every command that
// takes them prints it.
const brokerHelp = `Credential flags (ssmproxy-only settings; the rest comes from the profile):
  --role-arn ARN           role to assume when the profile has no role_arn ($SSMPROXY_ROLE_ARN).
                           Without any role the source credentials are used directly.
  --role-session-name N    RoleSessionName (default: role_session_name, else the user name)
  --role-duration D        role session length (default: duration_seconds, else 1h; chained: max 1h)
  --mfa-session-duration D GetSessionToken length with mfa_serial (default 12h,
                           $SSMPROXY_MFA_SESSION_DURATION; at most 36h)
  --mfa-process CMD        command printing a one-time MFA code, run with stdin null
                           ($SSMPROXY_MFA_PROCESS), e.g. "ykman oath accounts code -s aws"
  --no-source-identity     do not set SourceIdentity ($SSMPROXY_SOURCE_IDENTITY=off)
  --keyring-backend B      keychain, wincred, secret-service, kwallet, keyctl, pass or file
                           ($SSMPROXY_KEYRING_BACKEND; default: the first that works here;
                           long-term keys never go to keyctl unless chosen explicitly)

Profile keys read from ~/.aws/config: region, role_arn, source_profile,
credential_source, mfa_serial, duration_seconds, role_session_name, external_id,
and everything the AWS SDK resolves (SSO, credential_process, web identity).

Sources, in this order: the key stored by "ssmproxy login" for the profile (or
its source_profile); the named profile's own credentials; exported
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN (with
AWS_CREDENTIAL_EXPIRATION); the default chain.

Environment:
  SSMPROXY_MFA_TOKEN       a one-time code for scripts (first mint only)
  SSMPROXY_FILE_PASSPHRASE passphrase of the file keyring (else a prompt on the terminal
                           or through SSH_ASKPASS; never stdin)
  SSH_ASKPASS              prompt program used when there is no terminal
  SSMPROXY_LOCK_DIR        directory of the lock files (default <user cache dir>/ssmproxy/locks,
                           the same for every process of the user); an absolute path to a
                           directory of your own that nobody else may write
`

// brokerOptions assembles broker.Options for a command.
func brokerOptions(profile, region string, f brokerFlags, target string, documents []string, log *slog.Logger, notice io.Writer) broker.Options {
	return broker.Options{
		Profile: profile, Region: region, RoleARN: f.roleARN, RoleSessionName: f.roleSessionName,
		RoleDuration: f.roleDuration, MFASessionDuration: f.mfaSessionDuration, MFAProcess: f.mfaProcess,
		NoSourceIdentity: f.noSourceIdentity, Target: target, Documents: documents,
		KeyringBackend: f.keyringBackend, Log: log, Notice: notice,
	}
}

// resolveProfile returns the profile to use and makes $AWS_PROFILE safe for
// the SDK: a profile that exists only in ssmproxy's keyring would make every
// LoadDefaultConfig fail when named in $AWS_PROFILE, so it is passed
// explicitly instead and removed from this process's environment.
func resolveProfile(ctx context.Context, flagProfile string) string {
	if flagProfile != "" {
		return flagProfile
	}
	env := os.Getenv("AWS_PROFILE")
	if env == "" {
		return ""
	}
	if !broker.InSharedConfig(ctx, env) {
		_ = os.Unsetenv("AWS_PROFILE")
	}
	return env
}

// openStore opens the keyring for the login commands, which may prompt on
// the terminal (they are interactive commands, not a ProxyCommand).
func openStore(ctx context.Context, backend string, persistent bool) (keyring.Store, error) {
	var once sync.Once
	return keyring.Open(ctx, keyring.Options{Backend: backend, Persistent: persistent,
		Prompt: keyring.PassphrasePrompt(prompt.Prompter{}),
		Notice: func() {
			once.Do(func() {
				_, _ = io.WriteString(os.Stderr, "ssmproxy: waiting for another ssmproxy process to finish with the keyring…\n")
			})
		}})
}

// parseFlags parses a command's flags, refusing positional arguments.
func parseFlags(fs *flag.FlagSet, args []string, help string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			_, _ = io.WriteString(os.Stderr, help)
			return errHelpShown
		}
		return usagef("%s: %v", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q (see ssmproxy help %s)", fs.Name(), fs.Arg(0), fs.Name())
	}
	return nil
}

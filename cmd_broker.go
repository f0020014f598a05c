package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spf13/pflag"
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

// register defines the credential flags on fs, in the credentials help
// group. The environment variables named are read by the broker
// (broker/settings.go) when the flag is not given.
func (f *brokerFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.roleARN, "role-arn", "", "`ARN` of the role to assume when the profile has no role_arn ($SSMPROXY_ROLE_ARN); without any role the source credentials are used directly")
	fs.StringVar(&f.roleSessionName, "role-session-name", "", "RoleSessionName (default: role_session_name, else the user name)")
	fs.DurationVar(&f.roleDuration, "role-duration", 0, "role session length (default: duration_seconds, else 1h; chained: max 1h)")
	fs.DurationVar(&f.mfaSessionDuration, "mfa-session-duration", 0, "GetSessionToken length with mfa_serial (default 12h, $SSMPROXY_MFA_SESSION_DURATION; at most 36h)")
	fs.StringVar(&f.mfaProcess, "mfa-process", "", "command printing a one-time MFA code, run with stdin null ($SSMPROXY_MFA_PROCESS), e.g. \"ykman oath accounts code -s aws\"")
	fs.BoolVar(&f.noSourceIdentity, "no-source-identity", false, "do not set SourceIdentity ($SSMPROXY_SOURCE_IDENTITY=off)")
	keyringBackendFlag(fs, &f.keyringBackend)
	for _, n := range []string{"role-arn", "role-session-name", "role-duration", "mfa-session-duration", "mfa-process", "no-source-identity", "keyring-backend"} {
		_ = fs.SetAnnotation(n, annGroup, []string{groupCredentials})
	}
}

// keyringBackendFlag defines --keyring-backend (credential flags, login
// and logout).
func keyringBackendFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "keyring-backend", "", "keyring: keychain, wincred, secret-service, kwallet, keyctl, pass or file ($SSMPROXY_KEYRING_BACKEND; default: the first that works here; long-term keys never go to keyctl unless chosen explicitly)")
}

// credentialsHelp follows the credential flags in every command's help.
const credentialsHelp = `Profile keys read from ~/.aws/config: region, role_arn, source_profile,
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

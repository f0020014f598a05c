package broker

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/internal/secretenv"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
)

// Environment variables for ssmproxy-only broker settings. Settings with a
// standard ~/.aws/config key (role_arn, source_profile, mfa_serial,
// duration_seconds, role_session_name, external_id, region) are read from
// the profile; these cover what the shared config cannot express.
const (
	EnvRoleARN            = "SSMPROXY_ROLE_ARN"             // role to assume when the profile has none
	EnvMFAToken           = secretenv.MFAToken              // a one-time code, for scripts (first mint only)
	EnvMFAProcess         = "SSMPROXY_MFA_PROCESS"          // command printing a one-time code
	EnvMFASessionDuration = "SSMPROXY_MFA_SESSION_DURATION" // GetSessionToken duration (default 12h)
	EnvSourceIdentity     = "SSMPROXY_SOURCE_IDENTITY"      // "off" disables SourceIdentity
	// EnvCredentialExpiration is the expiry of exported session credentials,
	// as the AWS CLI's "configure export-credentials" writes it.
	EnvCredentialExpiration = "AWS_CREDENTIAL_EXPIRATION"
)

// Defaults.
const (
	DefaultRoleDuration       = time.Hour
	DefaultMFASessionDuration = 12 * time.Hour
	// chainedMax caps a role session assumed with temporary credentials.
	chainedMax = time.Hour
	// roleLockTimeout bounds the wait for another process minting role
	// credentials; mfaLockTimeout is longer because the holder may be
	// waiting for a human to type a code.
	roleLockTimeout = 2 * time.Minute
	mfaLockTimeout  = 10 * time.Minute
)

// Options configure a Broker. Zero values mean the documented defaults.
type Options struct {
	// Profile is the broker profile: --profile, else $AWS_PROFILE, else
	// "default". It need not exist in ~/.aws/config when its source key is
	// in the keyring.
	Profile string
	// Region overrides the profile's and the environment's region.
	Region string
	// RoleARN is the role to assume when the profile has no role_arn
	// (--role-arn, $SSMPROXY_ROLE_ARN). Without any role the source
	// credentials are used directly.
	RoleARN string
	// RoleSessionName overrides role_session_name and the user name.
	RoleSessionName string
	// RoleDuration overrides duration_seconds (default 1 h; chained role
	// sessions are capped at 1 h by STS).
	RoleDuration time.Duration
	// MFASessionDuration is the GetSessionToken duration (default 12 h,
	// or $SSMPROXY_MFA_SESSION_DURATION).
	MFASessionDuration time.Duration
	// MFAProcess is a command that prints a one-time code
	// ($SSMPROXY_MFA_PROCESS). It runs with stdin null.
	MFAProcess string
	// NoSourceIdentity leaves SourceIdentity unset ($SSMPROXY_SOURCE_IDENTITY=off).
	NoSourceIdentity bool

	// Target and Documents scope the session policy. An empty Target allows
	// every instance of the account (credential-process without --target);
	// no Documents means DefaultDocument. `forward` names both
	// port-forwarding documents when its listeners need them, so that one
	// broker serves every session of the process.
	Target    string
	Documents []string
	// Lookup asks for the read-only scope of target lookups
	// (LookupPolicy) instead: Target and Documents are then ignored.
	Lookup bool
	// PushKeyUser adds EC2 Instance Connect's SendSSHPublicKey on Target
	// for this OS user to the session policy (Scope.PushKeyUser).
	PushKeyUser string

	// Keyring opens the secret store; persistent excludes volatile backends
	// (for long-term keys). Default: keyring.Open with KeyringBackend.
	Keyring        func(ctx context.Context, persistent bool) (keyring.Store, error)
	KeyringBackend string
	// Prompter asks for MFA codes and the file keyring passphrase. Its
	// terminal is used only while Prepare runs (before the first SSH byte),
	// and never with Prompter.NoTTY (credential-process without --allow-tty).
	Prompter prompt.Prompter

	// CacheDir is the credential cache (default os.UserCacheDir()/ssmproxy/creds).
	CacheDir string
	// LockDir holds the lock files (default lockfile.Dir(): one place per
	// user, $SSMPROXY_LOCK_DIR or the user cache directory).
	LockDir string
	// STSEndpoint, if set, is the STS client's BaseEndpoint (tests). The
	// usual overrides (AWS_ENDPOINT_URL_STS, profile endpoint_url) apply
	// without it.
	STSEndpoint string
	// HTTPClient for STS and the SDK-resolved sources (default the SDK's
	// buildable client, restricted to TLS except on loopback). With a custom
	// CA bundle (AWS_CA_BUNDLE, ca_bundle) it must be an
	// *awshttp.BuildableClient, the only kind the SDK can add the bundle to.
	HTTPClient aws.HTTPClient

	Clock clock.Clock
	// Jitter returns a uniform value in [0, 1) (default math/rand/v2).
	Jitter func() float64
	Log    *slog.Logger
	// Notice receives the user-facing lines (connect-time deadline, warnings,
	// "waiting for another ssmproxy process"); ssmproxy passes stderr.
	Notice io.Writer
}

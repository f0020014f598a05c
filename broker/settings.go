package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/ssmproxy/ssmproxy/internal/awsconf"
)

// settings are the resolved broker settings for one profile.
type settings struct {
	profile         string // the broker profile
	profileExplicit bool   // named by --profile or AWS_PROFILE
	inConfig        bool   // the profile exists in the shared config files
	shared          config.SharedConfig

	roleARN         string
	roleFromProfile bool
	externalID      string
	sessionName     string // configured; "" means the user name
	roleDuration    time.Duration
	mfaSerial       string // from the profile; a keyring source may add one
	mfaDuration     time.Duration
	mfaProcess      string
	sourceIdentity  bool

	region string
	scope  Scope

	// base is the aws.Config STS clients are built from: region, endpoint
	// overrides and HTTP client, but no credentials of its own.
	base aws.Config
	// sdkHTTP is the HTTP client passed to config.LoadDefaultConfig for the
	// SDK-resolved sources: it must be a *BuildableClient for the SDK to add
	// a custom CA bundle (AWS_CA_BUNDLE, ca_bundle) to it.
	sdkHTTP aws.HTTPClient
}

// ProfileName is the broker profile ssmproxy uses for explicit (may be
// empty): explicit, else $AWS_PROFILE, else "default".
func ProfileName(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if p := os.Getenv("AWS_PROFILE"); p != "" {
		return p
	}
	return "default"
}

// InSharedConfig reports whether the profile exists in the shared config or
// credentials files. A profile that exists only in the keyring does not.
func InSharedConfig(ctx context.Context, profile string) bool {
	_, err := loadShared(ctx, profile)
	var nf config.SharedConfigProfileNotExistError
	return err == nil || !errors.As(err, &nf) || nf.Profile != profile
}

func loadShared(ctx context.Context, profile string) (config.SharedConfig, error) {
	return awsconf.LoadSharedConfigProfile(ctx, profile, func(o *config.LoadSharedConfigOptions) {
		if f := os.Getenv("AWS_CONFIG_FILE"); f != "" {
			o.ConfigFiles = []string{f}
		}
		if f := os.Getenv("AWS_SHARED_CREDENTIALS_FILE"); f != "" {
			o.CredentialsFiles = []string{f}
		}
	})
}

func resolveSettings(ctx context.Context, o Options) (*settings, error) {
	s := &settings{
		profile:         ProfileName(o.Profile),
		profileExplicit: o.Profile != "" || os.Getenv("AWS_PROFILE") != "",
		sessionName:     o.RoleSessionName,
		roleDuration:    o.RoleDuration,
		mfaDuration:     o.MFASessionDuration,
		mfaProcess:      o.MFAProcess,
		sourceIdentity:  !o.NoSourceIdentity && !strings.EqualFold(os.Getenv(EnvSourceIdentity), "off"),
	}
	shared, err := loadShared(ctx, s.profile)
	var nf config.SharedConfigProfileNotExistError
	switch {
	case err == nil:
		s.inConfig, s.shared = true, shared
	case errors.As(err, &nf) && nf.Profile == s.profile:
		// Keyring-only or environment-only profile.
	case errors.As(err, new(*awsconf.FileError)):
		return nil, &ConfigError{err}
	default:
		return nil, fmt.Errorf("profile %q: %w (a source_profile must hold credentials; "+
			"for a key stored with \"ssmproxy login\", leave source_profile out)", s.profile, err)
	}

	if s.shared.RoleARN != "" && s.shared.WebIdentityTokenFile == "" {
		s.roleARN, s.roleFromProfile = s.shared.RoleARN, true
	} else {
		s.roleARN = o.RoleARN
		if s.roleARN == "" {
			s.roleARN = os.Getenv(EnvRoleARN)
		}
	}
	s.externalID = s.shared.ExternalID
	if s.sessionName == "" {
		s.sessionName = s.shared.RoleSessionName
	}
	if s.sessionName != "" && sanitizeSessionName(s.sessionName) != s.sessionName {
		return nil, configErrorf("role session name %q: use 2 to 64 of the characters [A-Za-z0-9_+=,.@-]", s.sessionName)
	}
	if s.roleDuration == 0 && s.shared.RoleDurationSeconds != nil {
		s.roleDuration = *s.shared.RoleDurationSeconds
	}
	if s.roleDuration == 0 {
		s.roleDuration = DefaultRoleDuration
	}
	if s.roleDuration < 15*time.Minute || s.roleDuration > 12*time.Hour {
		return nil, configErrorf("role session duration %s is outside STS's 15m-12h", s.roleDuration)
	}
	s.mfaSerial = s.shared.MFASerial
	if s.mfaDuration == 0 {
		if v := os.Getenv(EnvMFASessionDuration); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, configErrorf("%s=%q: %w", EnvMFASessionDuration, v, err)
			}
			s.mfaDuration = d
		}
	}
	if s.mfaDuration == 0 {
		s.mfaDuration = DefaultMFASessionDuration
	}
	if s.mfaDuration < 15*time.Minute || s.mfaDuration > 36*time.Hour {
		return nil, configErrorf("MFA session duration %s is outside STS's 15m-36h", s.mfaDuration)
	}
	if s.mfaProcess == "" {
		s.mfaProcess = os.Getenv(EnvMFAProcess)
	}

	// The base configuration: region and endpoint overrides (environment
	// and profile), no credentials: every STS client gets its caller's.
	// The loopback rule is built into the client's transport, and the
	// loaded client is wrapped afterwards: the SDK can only add a custom CA
	// bundle to its own buildable client, never to a wrapper.
	s.sdkHTTP = o.HTTPClient
	if s.sdkHTTP == nil {
		s.sdkHTTP = awsconf.HTTPClient()
	}
	opts := []func(*config.LoadOptions) error{config.WithCredentialsProvider(aws.AnonymousCredentials{}), config.WithHTTPClient(s.sdkHTTP)}
	if s.inConfig {
		opts = append(opts, config.WithSharedConfigProfile(s.profile))
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	s.base, err = awsconf.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, configErrorf("load AWS configuration for profile %q: %w", s.profile, err)
	}
	s.base.HTTPClient = awsconf.LoopbackOnlyHTTP(s.base.HTTPClient)
	s.region = s.base.Region
	if s.region == "" {
		return nil, awsconf.ErrNoRegion
	}

	s.scope = Scope{Region: s.region, Target: o.Target, Documents: normalDocuments(o.Documents), PushKeyUser: o.PushKeyUser}
	if o.Lookup {
		s.scope = Scope{Region: s.region, Lookup: true}
	}
	if s.roleARN != "" {
		if s.scope.Partition, s.scope.Account, err = parseRoleARN(s.roleARN); err != nil {
			return nil, &ConfigError{err}
		}
	}
	return s, nil
}

// cacheKey names the cache entry: the source (its fingerprint: kind and a
// hash of its access key id or profile, so that credentials minted from one
// user's keys are never served to another's), profile, role, region and the
// inputs of the session policy (target, document, account, configured
// session name). The policy text itself also contains the session name
// learned from the source's identity, which needs an STS call; hashing the
// inputs keeps the cache hit free of any call, and the entry records the
// policy's own hash. The lookup scope (LookupPolicy) has a key of its own.
// A key-push user is an input too (credentials minted without its
// statement must not serve a push); it is appended only when set, so every
// other entry keeps its key.
func (s *settings) cacheKey(source string) string {
	parts := []string{"v2", source, s.profile, s.roleARN, s.region, s.scope.Account, s.scope.Target, strings.Join(s.scope.Documents, ","), s.sessionName}
	if s.scope.PushKeyUser != "" {
		parts = append(parts, "push-key-user", s.scope.PushKeyUser)
	}
	if s.scope.Lookup {
		// Its own entry: lookup credentials must never start a session,
		// nor session credentials be taken for lookups.
		parts = append(parts, "scope=lookup")
	}
	return hashString(parts...)
}

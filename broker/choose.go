package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"
	"github.com/aws/aws-sdk-go-v2/credentials/ssocreds"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"

	"github.com/ssmproxy/ssmproxy/internal/awsconf"
	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/internal/secretenv"
)

// EnvProcessDepth guards against a credential_process that calls ssmproxy
// credential-process for the same profile, forever.
const EnvProcessDepth = "SSMPROXY_CREDENTIAL_PROCESS_DEPTH"

// chooser picks the source of credentials, the first link of the chain. It
// reads no secret (it only lists keyring items), so it never prompts.
type chooser struct {
	set    *settings
	stores *keyrings
	codes  *mfaCodes // for an SDK role chain with mfa_serial
	clk    clock.Clock
}

// choose picks the source in the order a user expects (issue 3):
//
//  1. a long-term key stored in the keyring by "ssmproxy login" for the
//     source profile;
//  2. the profile itself, when it was named (--profile or AWS_PROFILE) and
//     exists in the shared config with credentials of any kind;
//  3. credentials exported in the environment;
//  4. the default profile or the SDK's default chain.
//
// A profile named explicitly beats exported keys, as it does in the SDK
// when set in code; without a name, exported keys win, as they always do.
func (c *chooser) choose(ctx context.Context) (source, error) {
	s := c.set
	now := c.clk.Now()

	// With role_arn in the profile, the source is what the profile names:
	// source_profile, credential_source or, with neither, the keyring key
	// stored for the profile itself.
	srcProfile := s.profile
	if s.roleFromProfile && s.shared.SourceProfileName != "" {
		srcProfile = s.shared.SourceProfileName
	}
	if ks, err := c.keyringSource(ctx, srcProfile); err != nil {
		return nil, err
	} else if ks != nil {
		return ks, nil
	}
	if s.roleFromProfile {
		switch {
		case s.shared.SourceProfileName != "":
			return c.profileSource(ctx, s.shared.SourceProfileName, s.shared.Source)
		case strings.EqualFold(s.shared.CredentialSource, "Environment"):
			env, ok, err := envCredentials(now)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("profile %q has credential_source = Environment but no AWS_ACCESS_KEY_ID is exported", s.profile)
			}
			return &envSource{profile: s.profile, creds: env}, nil
		case strings.EqualFold(s.shared.CredentialSource, "Ec2InstanceMetadata"):
			return &sdkSource{profile: s.profile, kind: "instance role", clk: c.clk,
				provider: aws.NewCredentialsCache(ec2rolecreds.New())}, nil
		case s.shared.CredentialSource != "":
			return c.defaultSource(ctx)
		}
		return nil, fmt.Errorf("profile %q has role_arn but no source: run \"ssmproxy login --profile %s\" to store a key for it, "+
			"or add source_profile", s.profile, s.profile)
	}
	if s.profileExplicit && s.inConfig && hasCredentials(s.shared) {
		return c.profileSource(ctx, s.profile, &s.shared)
	}
	env, ok, err := envCredentials(now)
	if err != nil {
		return nil, err
	}
	if ok {
		return &envSource{profile: s.profile, creds: env}, nil
	}
	if s.inConfig && hasCredentials(s.shared) {
		return c.profileSource(ctx, s.profile, &s.shared)
	}
	if s.profileExplicit && !s.inConfig {
		return nil, fmt.Errorf("no credentials for profile %q: it is not in the AWS config files and has no key in the keyring; "+
			"run \"ssmproxy login --profile %s\"", s.profile, s.profile)
	}
	return c.defaultSource(ctx)
}

// keyringSource looks for a stored key in the persistent store, and also in
// the automatically chosen volatile one (keyctl) when that differs.
func (c *chooser) keyringSource(ctx context.Context, profile string) (*keyringSource, error) {
	for _, persistent := range []bool{true, false} {
		store, err := c.stores.get(ctx, persistent)
		if err != nil {
			if persistent {
				return nil, err
			}
			continue
		}
		keys, err := store.Keys(ctx)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if k == SourceItemKey(profile) {
				return &keyringSource{store: store, profile: profile, clk: c.clk}, nil
			}
		}
	}
	return nil, nil
}

// hasCredentials reports whether a shared-config profile can produce
// credentials by itself.
func hasCredentials(sc config.SharedConfig) bool {
	return sc.Credentials.HasKeys() || sc.CredentialProcess != "" || sc.SSOSession != nil || sc.SSOStartURL != "" ||
		sc.WebIdentityTokenFile != "" || sc.RoleARN != "" || sc.CredentialSource != ""
}

// profileSource resolves a shared-config profile through the SDK, except a
// plain credential_process, which ssmproxy starts itself so that the child
// gets stdin null and no inherited AWS keys (the SDK's default command
// builder passes os.Stdin, which in a ProxyCommand is the SSH stream).
func (c *chooser) profileSource(ctx context.Context, profile string, sc *config.SharedConfig) (source, error) {
	kind := "static keys"
	switch {
	case sc == nil:
		kind = "shared config"
	case sc.CredentialProcess != "" && sc.RoleARN == "":
		return &sdkSource{profile: profile, kind: "credential_process", clk: c.clk,
			provider: aws.NewCredentialsCache(processcreds.NewProviderCommand(safeProcess(sc.CredentialProcess),
				func(o *processcreds.Options) { o.Timeout = 2 * time.Minute }))}, nil
	case sc.SSOSession != nil || sc.SSOStartURL != "":
		kind = "SSO"
	case sc.WebIdentityTokenFile != "":
		kind = "web identity"
	case sc.RoleARN != "":
		kind = "role chain"
	}
	src := &sdkSource{profile: profile, kind: kind, clk: c.clk}
	cfg, err := awsconf.LoadDefaultConfig(ctx,
		config.WithSharedConfigProfile(profile),
		config.WithRegion(c.set.region),
		config.WithHTTPClient(c.set.sdkHTTP),
		config.WithAssumeRoleCredentialOptions(func(o *stscreds.AssumeRoleOptions) {
			// Never stscreds.StdinTokenProvider: stdin is the SSH stream.
			// The SDK calls this without a context: the source says
			// whether the retrieve it is serving may use the terminal.
			o.TokenProvider = func() (string, error) {
				return c.codes.code(src.promptContext(), aws.ToString(o.SerialNumber))
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("load profile %q: %w", profile, err)
	}
	cfg.HTTPClient = awsconf.LoopbackOnlyHTTP(cfg.HTTPClient)
	src.provider = cfg.Credentials
	if kind == "SSO" && sc != nil {
		key := sc.SSOStartURL
		if sc.SSOSession != nil {
			key = sc.SSOSessionName
		}
		src.ssoDeadline = func() *Deadline { return ssoDeadline(profile, key) }
	}
	return src, nil
}

// defaultSource is the SDK's default chain without a profile.
func (c *chooser) defaultSource(ctx context.Context) (source, error) {
	cfg, err := awsconf.LoadDefaultConfig(ctx, config.WithRegion(c.set.region), config.WithHTTPClient(c.set.sdkHTTP))
	if err != nil {
		return nil, fmt.Errorf("load the AWS SDK default credential chain: %w", err)
	}
	cfg.HTTPClient = awsconf.LoopbackOnlyHTTP(cfg.HTTPClient)
	if cfg.Credentials == nil {
		return nil, errors.New("no AWS credentials found: run \"ssmproxy login\", name a profile with --profile, or export credentials")
	}
	return &sdkSource{kind: "default chain", provider: cfg.Credentials, clk: c.clk}, nil
}

// safeProcess builds credential_process children with stdin null, stderr
// passed through, and no inherited AWS keys; it also counts nesting.
func safeProcess(command string) processcreds.NewCommandBuilder {
	return processcreds.NewCommandBuilderFunc(func(ctx context.Context) (*exec.Cmd, error) {
		cmd := secretenv.Shell(ctx, command)
		cmd.Env = append(cmd.Env, EnvProcessDepth+"="+nextDepth())
		return cmd, nil
	})
}

// ProcessDepth is how deeply "ssmproxy credential-process" calls are nested
// ($SSMPROXY_CREDENTIAL_PROCESS_DEPTH; 0 at the top).
func ProcessDepth() int {
	n, err := strconv.Atoi(strings.TrimSpace(os.Getenv(EnvProcessDepth)))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func nextDepth() string { return strconv.Itoa(ProcessDepth() + 1) }

// ssoDeadline reads the SSO token cache: with a refresh token the SDK renews
// the session itself (renewable); without one the access token's expiry is
// the hard deadline.
func ssoDeadline(profile, key string) *Deadline {
	fix := fmt.Sprintf("run \"aws sso login --profile %s\" to extend", profile)
	p, err := ssocreds.StandardCachedTokenFilepath(key)
	if err != nil {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var tok struct {
		ExpiresAt    string `json:"expiresAt"`
		RefreshToken string `json:"refreshToken"`
	}
	if json.Unmarshal(b, &tok) != nil {
		return nil
	}
	at, err := time.Parse(time.RFC3339, tok.ExpiresAt)
	if err != nil {
		return nil
	}
	return &Deadline{At: at, What: "the SSO session", Fix: fix, Renewable: tok.RefreshToken != ""}
}

func isSSOExpired(err error) bool {
	var ite *ssocreds.InvalidTokenError
	return errors.As(err, &ite)
}

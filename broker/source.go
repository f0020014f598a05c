package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
)

// A source is tier 1 of docs/credentials.md 5.1: what the broker mints from.
type source interface {
	// retrieve returns the source credentials; ctx says whether a prompt
	// may use the terminal (package prompt).
	retrieve(ctx context.Context) (Credentials, error)
	// describe says where the credentials come from, for messages.
	describe() string
	// deadline is the source's own hard deadline, nil when it renews itself.
	deadline() *Deadline
	// invalidate makes the next retrieve read afresh.
	invalidate()
	// fingerprint identifies the source without a secret (kind, and a hash
	// of the access key id or the profile), for the cache key: credentials
	// minted from one source are never served to another.
	fingerprint() string
}

// SourceKey is a long-term IAM user key stored by "ssmproxy login".
type SourceKey struct {
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key"`
	MFASerial       string    `json:"mfa_serial,omitempty"`
	ARN             string    `json:"arn,omitempty"` // the user, from GetCallerIdentity at login
	Created         time.Time `json:"created"`
}

// String never shows the secret.
func (k SourceKey) String() string {
	return fmt.Sprintf("SourceKey{AccessKeyID:%s Secret:[redacted] ARN:%s}", MaskKeyID(k.AccessKeyID), k.ARN)
}

// GoString is String.
func (k SourceKey) GoString() string { return k.String() }

// LogValue redacts for log/slog (a JSON handler would otherwise marshal the
// fields).
func (k SourceKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// SourceItemKey is the keyring item holding a profile's long-term key.
func SourceItemKey(profile string) string { return "source:" + profile }

// keyringSource reads the long-term key from the keyring once and keeps it
// in memory; a long-term key does not expire.
type keyringSource struct {
	store   keyring.Store
	profile string
	clk     clock.Clock

	mu  sync.Mutex
	key *SourceKey
}

func loadSourceKey(ctx context.Context, store keyring.Store, profile string) (*SourceKey, error) {
	it, err := store.Get(ctx, SourceItemKey(profile))
	if err != nil {
		return nil, err
	}
	var k SourceKey
	if err := json.Unmarshal(it.Data, &k); err != nil || k.AccessKeyID == "" || k.SecretAccessKey == "" {
		return nil, fmt.Errorf("keyring item %q is damaged; run \"ssmproxy login --profile %s\" again", SourceItemKey(profile), profile)
	}
	return &k, nil
}

func (s *keyringSource) retrieve(ctx context.Context) (Credentials, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key == nil {
		k, err := loadSourceKey(ctx, s.store, s.profile)
		if errors.Is(err, keyring.ErrNotFound) {
			return Credentials{}, &SourceError{Profile: s.profile, What: "the key stored by \"ssmproxy login\"",
				Reason: "is no longer in the keyring", Fix: fmt.Sprintf("run \"ssmproxy login --profile %s\"", s.profile)}
		}
		if err != nil {
			return Credentials{}, err
		}
		s.key = k
	}
	return Credentials{AccessKeyID: s.key.AccessKeyID, SecretAccessKey: s.key.SecretAccessKey, Issued: s.clk.Now()}, nil
}

func (s *keyringSource) describe() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := fmt.Sprintf("the long-term key stored by \"ssmproxy login --profile %s\" in the %s keyring", s.profile, s.store.Backend())
	if s.key != nil {
		d += " (" + MaskKeyID(s.key.AccessKeyID) + ")"
	}
	return d
}

func (s *keyringSource) deadline() *Deadline { return nil }

func (s *keyringSource) fingerprint() string { return "keyring:" + hashString(s.profile) }

func (s *keyringSource) invalidate() {
	s.mu.Lock()
	s.key = nil
	s.mu.Unlock()
}

func (s *keyringSource) storedMFASerial() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key == nil {
		return ""
	}
	return s.key.MFASerial
}

func (s *keyringSource) storedARN() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key == nil {
		return ""
	}
	return s.key.ARN
}

// envSource is credentials exported in the environment. Session credentials
// there cannot be renewed by ssmproxy: their expiry (AWS_CREDENTIAL_EXPIRATION
// when set) is the hard deadline.
type envSource struct {
	profile string
	creds   Credentials
}

// envCredentials reads AWS_ACCESS_KEY_ID (or AWS_ACCESS_KEY), the secret,
// the session token and AWS_CREDENTIAL_EXPIRATION; ok is false when absent.
func envCredentials(now time.Time) (Credentials, bool, error) {
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := os.Getenv(k); v != "" {
				return v
			}
		}
		return ""
	}
	c := Credentials{
		AccessKeyID:     first("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"),
		SecretAccessKey: first("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"),
		SessionToken:    first("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"),
		Issued:          now,
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return Credentials{}, false, nil
	}
	if v := os.Getenv(EnvCredentialExpiration); v != "" && c.Temporary() {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return Credentials{}, false, fmt.Errorf("%s=%q is not an RFC 3339 time", EnvCredentialExpiration, v)
		}
		c.Expires = t
	}
	return c, true, nil
}

func (s *envSource) retrieve(context.Context) (Credentials, error) { return s.creds, nil }

func (s *envSource) describe() string {
	if s.creds.Temporary() {
		return "the environment's session credentials (AWS_SESSION_TOKEN)"
	}
	return "the environment's key (AWS_ACCESS_KEY_ID)"
}

func (s *envSource) deadline() *Deadline {
	if !s.creds.Temporary() {
		return nil
	}
	return &Deadline{At: s.creds.Expires, What: "the environment's session credentials",
		Fix: "export fresh credentials (or store a long-term key with \"ssmproxy login\") and reconnect"}
}

func (s *envSource) invalidate() {}

func (s *envSource) fingerprint() string { return "env:" + hashString(s.creds.AccessKeyID) }

// sdkSource is any shared-config profile the SDK resolves (SSO,
// credential_process, role_arn + source_profile, web identity, static keys)
// or the SDK's default chain. The SDK renews these itself.
type sdkSource struct {
	profile  string
	kind     string // "SSO", "credential_process", "static keys", ...
	provider aws.CredentialsProvider
	clk      clock.Clock
	// ssoDeadline reads the SSO token cache; nil for other kinds.
	ssoDeadline func() *Deadline

	// asking is the context of the retrieve in progress, for the SDK's MFA
	// token provider, which gets none: whether it may prompt on the
	// terminal, and when to give up (a signal, the caller's timeout).
	asking atomic.Pointer[context.Context]

	mu     sync.Mutex
	seenID string    // access key id of the credentials last returned
	seenAt time.Time // when they were first seen: their estimated issue time
}

// retrieve returns the SDK's credentials. The SDK's cache hands out the same
// credentials until their very last second, but the broker re-mints (and
// other processes take the cache entry) only while a refresh window of their
// lifetime remains: inside that window, ask the SDK for new ones.
func (s *sdkSource) retrieve(ctx context.Context) (Credentials, error) {
	s.asking.Store(&ctx)
	a, err := s.provider.Retrieve(ctx)
	if err != nil {
		return Credentials{}, s.wrap(err)
	}
	c := s.stamp(a)
	if c.CanExpire() && c.Expires.Sub(s.clk.Now()) <= window(lifetimeOf(c)) {
		if inv, ok := s.provider.(interface{ Invalidate() }); ok {
			inv.Invalidate()
			if a, err = s.provider.Retrieve(ctx); err != nil {
				return Credentials{}, s.wrap(err)
			}
			c = s.stamp(a)
		}
	}
	return c, nil
}

// stamp converts credentials, keeping the time they were first seen as their
// issue time for as long as the SDK returns the same ones: restamping them
// at every call would shrink their apparent lifetime, and with it the refresh
// window, until they were refreshed at their last minute.
func (s *sdkSource) stamp(a aws.Credentials) Credentials {
	now := s.clk.Now()
	s.mu.Lock()
	if a.AccessKeyID != s.seenID {
		s.seenID, s.seenAt = a.AccessKeyID, now
	}
	issued := s.seenAt
	s.mu.Unlock()
	return fromAWS(a, issued)
}

// wrap gives an SDK failure its context. A credential_process failure is
// replaced, not wrapped: the SDK's error embeds the process's output
// (docs/credentials.md 7.1).
func (s *sdkSource) wrap(err error) error {
	if pe, ok := processFailure(s.profile, err); ok {
		return pe
	}
	if isSSOExpired(err) {
		return &SourceError{Profile: s.profile, What: "the SSO session", Reason: "has expired or is invalid and cannot be renewed from here",
			Fix: fmt.Sprintf("run \"aws sso login --profile %s\" and reconnect", s.profile)}
	}
	if s.profile == "" {
		return fmt.Errorf("credentials from the AWS SDK default chain: %w", err)
	}
	return fmt.Errorf("credentials of profile %q (%s): %w", s.profile, s.kind, err)
}

func (s *sdkSource) describe() string {
	if s.profile == "" {
		return "the AWS SDK default chain"
	}
	return fmt.Sprintf("profile %q (%s)", s.profile, s.kind)
}

func (s *sdkSource) deadline() *Deadline {
	if s.ssoDeadline != nil {
		return s.ssoDeadline()
	}
	return nil
}

func (s *sdkSource) invalidate() {
	if inv, ok := s.provider.(interface{ Invalidate() }); ok {
		inv.Invalidate()
	}
}

func (s *sdkSource) fingerprint() string { return "sdk:" + s.kind + ":" + hashString(s.profile) }

// promptContext is the context the SDK's MFA token provider asks in: that
// of the retrieve it serves, so that a signal or the caller giving up ends
// the prompt and restores the terminal (docs/credentials.md 5.7). The SDK's
// credentials cache may keep resolving after its caller gave up; its prompt
// then ends with that caller's context.
func (s *sdkSource) promptContext() context.Context {
	if ctx := s.asking.Load(); ctx != nil {
		return *ctx
	}
	return prompt.WithoutTerminal(context.Background())
}

// mayPrompt reports whether the SDK may ask for an MFA code while resolving
// (a role chain with mfa_serial calls the broker's token provider).
func (s *sdkSource) mayPrompt() bool { return s.kind == "role chain" }

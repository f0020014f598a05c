package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	"github.com/ssmproxy/ssmproxy/internal/awserr"
)

// stsCallTimeout bounds one STS call (the SDK retries inside it).
const stsCallTimeout = 45 * time.Second

// stsFor is an STS client signing with c. Endpoint overrides come from the
// base configuration, per client (never a global override: credentials.md 3.3).
func (b *Broker) stsFor(c Credentials) *sts.Client {
	return sts.NewFromConfig(b.set.base, func(o *sts.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
		if b.o.STSEndpoint != "" {
			o.BaseEndpoint = aws.String(b.o.STSEndpoint)
		}
	})
}

func fromSTS(c *ststypes.Credentials, now time.Time) Credentials {
	if c == nil {
		return Credentials{}
	}
	return Credentials{
		AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken: aws.ToString(c.SessionToken), Expires: aws.ToTime(c.Expiration), Issued: now,
	}
}

// stsCode is the error code of an STS failure, or "".
func stsCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func stsMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	return ""
}

// stsFailure turns an STS error into one that says what failed: a
// *NetworkError when STS could not be reached; a permanent *SourceError when
// the source's own credentials (src) were refused and nothing here can renew
// them (an expired temporary source, a deleted or deactivated long-term key,
// whether stored by "ssmproxy login", exported, or in a profile).
func (b *Broker) stsFailure(op string, src Credentials, err error) error {
	if isNetworkError(err) {
		return &NetworkError{Profile: b.set.profile, Op: op, Err: err}
	}
	code := stsCode(err)
	if awserr.CredentialsRefused(code) {
		if d := b.src.deadline(); d != nil && !d.Renewable {
			at := d.At
			if !at.IsZero() && at.After(b.clk.Now()) {
				at = time.Time{} // refused before its stated expiry: say refused
			}
			return &SourceError{Profile: b.set.profile, What: d.What, At: at, Code: code, Fix: d.Fix}
		}
		switch s := b.src.(type) {
		case *keyringSource:
			// A deleted or deactivated IAM key does not come back.
			return &SourceError{Profile: b.set.profile, What: "the key stored by \"ssmproxy login\"", Code: code,
				Fix: fmt.Sprintf("store a valid key with \"ssmproxy login --profile %s\"", s.profile)}
		case *envSource:
			return &SourceError{Profile: b.set.profile, What: s.describe(), Code: code, Fix: "export valid credentials and reconnect"}
		case *sdkSource:
			if !src.Temporary() {
				// Static keys in the shared files: the SDK reads the same
				// ones again, so retrying can never succeed.
				return &SourceError{Profile: b.set.profile, What: "the long-term key of " + s.describe(), Code: code,
					Fix: "replace the key in the AWS config files, or store one with \"ssmproxy login\""}
			}
		}
		b.src.invalidate() // the SDK may fetch new ones (SSO, credential_process)
	}
	return fmt.Errorf("%s for profile %q: %w", op, b.set.profile, err)
}

// based is what a mint starts from: the source credentials, and what the
// mint signs with (the source itself, or the MFA session minted from it).
type based struct {
	src, base Credentials
	deadline  *Deadline
	mfa       string // the MFA device whose session base is; "" when base is src
}

// base retrieves the source credentials and, with an MFA device and a
// long-term key, the MFA session. This is the part of a mint that may ask a
// human (the file keyring's passphrase, an MFA code); it takes no role lock.
func (b *Broker) base(ctx context.Context, interactive bool) (based, error) {
	ctx, cancel := context.WithTimeout(ctx, stsCallTimeout+mfaLockTimeout)
	defer cancel()
	if d := b.src.deadline(); d != nil && !d.Renewable && d.Known() && !b.clk.Now().Before(d.At) {
		return based{}, &SourceError{Profile: b.set.profile, What: d.What, At: d.At, Fix: d.Fix}
	}
	src, err := b.src.retrieve(ctx, interactive)
	if err != nil {
		return based{}, err
	}
	bs := based{src: src, base: src, deadline: b.src.deadline()}
	if serial := b.mfaSerial(); serial != "" && !src.Temporary() {
		if bs.base, err = b.mfaSession(ctx, src, serial, interactive); err != nil {
			return based{}, err
		}
		bs.mfa = serial
		bs.deadline = &Deadline{At: bs.base.Expires, What: "the MFA session",
			Fix:       fmt.Sprintf("reconnect from a terminal to enter a new code, or set %s", EnvMFAProcess),
			Renewable: b.mfaDriverAvailable()}
	}
	return bs, nil
}

// mintFrom produces new credentials from bs: AssumeRole with the session
// policy, or the base credentials themselves when no role is configured.
func (b *Broker) mintFrom(ctx context.Context, bs based) (*entry, error) {
	ctx, cancel := context.WithTimeout(ctx, stsCallTimeout)
	defer cancel()
	src, base := bs.src, bs.base
	e := &entry{Version: cacheVersion, Key: b.key, Profile: b.set.profile, Region: b.set.region,
		Source: b.src.describe(), Deadline: bs.deadline}
	if b.set.roleARN == "" {
		e.Credentials = base
		return e, nil
	}

	name, err := b.roleSessionName(ctx, src, base)
	if err != nil {
		return nil, err
	}
	policy, err := SessionPolicy(b.set.scope, name)
	if err != nil {
		return nil, err
	}
	dur := b.set.roleDuration
	if base.Temporary() && dur > chainedMax {
		// Role chaining: STS refuses more than an hour (credentials.md 2.2).
		b.log.Debug("capping the role session at 1h (role chaining)", "configured", dur)
		dur = chainedMax
	}
	in := &sts.AssumeRoleInput{
		RoleArn:         aws.String(b.set.roleARN),
		RoleSessionName: aws.String(name),
		DurationSeconds: aws.Int32(int32(dur / time.Second)),
		Policy:          aws.String(policy),
	}
	if b.set.externalID != "" {
		in.ExternalId = aws.String(b.set.externalID)
	}
	// SourceIdentity only where it is ours to set: from an IAM user's own
	// key (or its MFA session). A temporary source may already carry one,
	// which STS would refuse to change.
	if b.set.sourceIdentity && !src.Temporary() && !b.noSourceIdentity.Load() {
		in.SourceIdentity = aws.String(name)
	}
	out, err := b.stsFor(base).AssumeRole(ctx, in)
	if err != nil && in.SourceIdentity != nil && stsCode(err) == "AccessDenied" {
		// The trust policy may not allow sts:SetSourceIdentity; try once
		// without it and remember.
		b.log.Info("AssumeRole with SourceIdentity was denied; retrying without it", "err", err)
		in.SourceIdentity = nil
		if out, err = b.stsFor(base).AssumeRole(ctx, in); err == nil {
			b.noSourceIdentity.Store(true)
		}
	}
	if err != nil {
		op := "AssumeRole " + b.set.roleARN
		switch code := stsCode(err); {
		case code == "AccessDenied" || code == "AccessDeniedException":
			return nil, &AccessDeniedError{Profile: b.set.profile, Op: op, Code: code, Message: stsMessage(err)}
		case bs.mfa != "" && awserr.CredentialsRefused(code):
			// The stored MFA session was refused (revoked, or the clock
			// jumped): forget it, so the next attempt mints a new one.
			b.forgetMFASession(ctx, bs.mfa)
			return nil, fmt.Errorf("%s with the stored MFA session for profile %q: %w (the session was discarded)", op, b.set.profile, err)
		}
		return nil, b.stsFailure(op, src, err)
	}
	e.RoleARN, e.Target, e.Document = b.set.roleARN, b.set.scope.Target, b.set.scope.Document
	e.RoleSessionName, e.PolicyHash, e.SourceID = name, hashString(policy), hashString(src.AccessKeyID)
	if e.Chained = base.Temporary(); e.Chained {
		e.ParentExpires = base.Expires
	}
	e.Credentials = fromSTS(out.Credentials, b.clk.Now())
	if !e.Credentials.valid() || !e.Credentials.CanExpire() {
		return nil, errors.New("AssumeRole returned incomplete credentials")
	}
	b.log.Info("minted scoped credentials", "role", b.set.roleARN, "session", name,
		"accessKeyId", MaskKeyID(e.Credentials.AccessKeyID), "expires", e.Credentials.Expires)
	return e, nil
}

// mfaSerial is the profile's mfa_serial, or the one stored with the key.
func (b *Broker) mfaSerial() string {
	if b.set.mfaSerial != "" {
		return b.set.mfaSerial
	}
	if ks, ok := b.src.(*keyringSource); ok {
		return ks.storedMFASerial()
	}
	return ""
}

// roleSessionName is the configured name, else the user name: remembered,
// stored with the login key, recorded in the cache entry by whichever
// process minted last from the same source key, or asked of STS
// (GetCallerIdentity) once.
func (b *Broker) roleSessionName(ctx context.Context, src, base Credentials) (string, error) {
	if b.set.sessionName != "" {
		return b.set.sessionName, nil
	}
	b.mu.Lock()
	name := b.sessionName
	b.mu.Unlock()
	if name != "" {
		return name, nil
	}
	if ks, ok := b.src.(*keyringSource); ok {
		name = sessionNameFromARN(ks.storedARN())
	}
	if name == "" {
		if prev, _ := b.cache.read(b.key); prev != nil && prev.SourceID == hashString(src.AccessKeyID) {
			name = prev.RoleSessionName
		}
	}
	if name == "" {
		out, err := b.stsFor(base).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			return "", b.stsFailure("GetCallerIdentity", src, err)
		}
		name = sessionNameFromARN(aws.ToString(out.Arn))
		if name == "" {
			return "", fmt.Errorf("cannot derive a role session name from %s; set role_session_name in the profile", aws.ToString(out.Arn))
		}
	}
	b.mu.Lock()
	b.sessionName = name
	b.mu.Unlock()
	return name, nil
}

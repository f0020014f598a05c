package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/internal/awserr"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// roleProvider is the third link (docs/credentials.md 5.1, tier 3; 5.4): it
// mints scoped credentials with AssumeRole from what the MFA link hands
// over, with the inline session policy of section 6, RoleSessionName and
// SourceIdentity set to the user name, and the role duration capped at 1 h
// when chained (2.2). Without a role it hands over the base credentials
// themselves.
type roleProvider struct {
	mfa  *mfaProvider
	sts  stsClients
	spec roleSpec
	// file and key locate the previous mint's cache entry, which records
	// the role session name derived from the same source key.
	file fileCache
	key  string
	clk  clock.Clock
	log  *slog.Logger

	noSourceIdentity atomic.Bool // the trust policy refused sts:SetSourceIdentity

	mu          sync.Mutex
	sessionName string // learned role session name
}

// roleSpec is what a role mint needs of the settings.
type roleSpec struct {
	profile, region string
	arn             string // "" for no role: the base credentials are handed on
	externalID      string
	sessionName     string // configured; "" means the user name
	duration        time.Duration
	scope           Scope
	sourceIdentity  bool
}

// Retrieve makes the link an aws.CredentialsProvider.
func (p *roleProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	e, err := p.mint(ctx, rejection{}, nil)
	if err != nil {
		return aws.Credentials{}, err
	}
	return e.Credentials.AWS(e.Source), nil
}

// mint mints (from pre when given) and does not hand back the credentials
// the service just refused. Without a role the credentials are the source's
// own, or its MFA session: when the source hands back the refused ones from
// its cache, it is made to read afresh (and the MFA session is forgotten)
// and asked once more; the refusal is final only when it still has nothing
// else.
func (p *roleProvider) mint(ctx context.Context, rej rejection, pre *based) (*entry, error) {
	var bs based
	if pre != nil {
		bs = *pre
	} else {
		var err error
		if bs, err = p.mfa.based(ctx); err != nil {
			return nil, err
		}
	}
	e, err := p.mintFrom(ctx, bs)
	if err != nil || rej.key == "" || e.Credentials.AccessKeyID != rej.key {
		return e, err
	}
	src := p.mfa.src
	p.log.Info("the source handed back the refused credentials; asking it for new ones", "accessKeyId", MaskKeyID(rej.key))
	src.src.invalidate()
	if bs.mfa != "" {
		p.mfa.forget(ctx, bs.mfa)
	}
	if bs, err = p.mfa.based(ctx); err != nil {
		return nil, err
	}
	if e, err = p.mintFrom(ctx, bs); err != nil {
		return nil, err
	}
	if e.Credentials.AccessKeyID != rej.key || !rej.sure {
		return e, nil
	}
	if d := e.Deadline; d != nil && !d.Renewable {
		return nil, &SourceError{Profile: p.spec.profile, What: d.What,
			Reason: "were refused by the service and cannot be renewed from here", Fix: d.Fix}
	}
	return nil, &SourceError{Profile: p.spec.profile, What: "the credentials from " + src.src.describe(),
		Reason: "were refused by the service, and the source has no others",
		Fix:    "check them, or store a new key with \"ssmproxy login\""}
}

// mintFrom produces new credentials from bs: AssumeRole with the session
// policy, or the base credentials themselves when no role is configured.
func (p *roleProvider) mintFrom(ctx context.Context, bs based) (*entry, error) {
	ctx, cancel := context.WithTimeout(ctx, stsCallTimeout)
	defer cancel()
	src, base, spec := bs.src, bs.base, p.spec
	e := &entry{Version: cacheVersion, Key: p.key, Profile: spec.profile, Region: spec.region,
		Source: p.mfa.src.src.describe(), Deadline: bs.deadline}
	if spec.arn == "" {
		e.Credentials = base
		return e, nil
	}

	name, err := p.roleSessionName(ctx, src, base)
	if err != nil {
		return nil, err
	}
	policy, err := scopePolicy(spec.scope, name)
	if err != nil {
		return nil, err
	}
	dur := spec.duration
	if base.Temporary() && dur > chainedMax {
		// Role chaining: STS refuses more than an hour (docs/credentials.md 2.2).
		p.log.Debug("capping the role session at 1h (role chaining)", "configured", dur)
		dur = chainedMax
	}
	in := &sts.AssumeRoleInput{
		RoleArn:         aws.String(spec.arn),
		RoleSessionName: aws.String(name),
		DurationSeconds: aws.Int32(int32(dur / time.Second)),
		Policy:          aws.String(policy),
	}
	if spec.externalID != "" {
		in.ExternalId = aws.String(spec.externalID)
	}
	// SourceIdentity only where it is ours to set: from an IAM user's own
	// key (or its MFA session). A temporary source may already carry one,
	// which STS would refuse to change.
	if spec.sourceIdentity && !src.Temporary() && !p.noSourceIdentity.Load() {
		in.SourceIdentity = aws.String(name)
	}
	out, err := p.sts.signedBy(base).AssumeRole(ctx, in)
	if err != nil && in.SourceIdentity != nil && stsCode(err) == "AccessDenied" {
		// The trust policy may not allow sts:SetSourceIdentity; try once
		// without it and remember.
		p.log.Info("AssumeRole with SourceIdentity was denied; retrying without it", "err", err)
		in.SourceIdentity = nil
		if out, err = p.sts.signedBy(base).AssumeRole(ctx, in); err == nil {
			p.noSourceIdentity.Store(true)
		}
	}
	if err != nil {
		op := "AssumeRole " + spec.arn
		switch code := stsCode(err); {
		case code == "AccessDenied" || code == "AccessDeniedException":
			return nil, &AccessDeniedError{Profile: spec.profile, Op: op, Code: code, Message: stsMessage(err)}
		case bs.mfa != "" && awserr.CredentialsRefused(code):
			// The stored MFA session was refused (revoked, or the clock
			// jumped): forget it, so the next attempt mints a new one.
			p.mfa.forget(ctx, bs.mfa)
			return nil, fmt.Errorf("%s with the stored MFA session for profile %q: %w (the session was discarded)", op, spec.profile, err)
		}
		return nil, p.mfa.src.failure(op, src, err)
	}
	e.RoleARN, e.Target, e.Document, e.Lookup = spec.arn, spec.scope.Target, strings.Join(spec.scope.Documents, ","), spec.scope.Lookup
	e.RoleSessionName, e.PolicyHash, e.SourceID = name, hashString(policy), hashString(src.AccessKeyID)
	if e.Chained = base.Temporary(); e.Chained {
		e.ParentExpires = base.Expires
	}
	e.Credentials = fromSTS(out.Credentials, p.clk.Now())
	if !e.Credentials.valid() || !e.Credentials.CanExpire() {
		return nil, errors.New("AssumeRole returned incomplete credentials")
	}
	p.log.Info("minted scoped credentials", "role", spec.arn, "session", name,
		"accessKeyId", MaskKeyID(e.Credentials.AccessKeyID), "expires", e.Credentials.Expires)
	return e, nil
}

// roleSessionName is the configured name, else the user name: remembered,
// stored with the login key, recorded in the cache entry by whichever
// process minted last from the same source key, or asked of STS
// (GetCallerIdentity) once.
func (p *roleProvider) roleSessionName(ctx context.Context, src, base Credentials) (string, error) {
	if p.spec.sessionName != "" {
		return p.spec.sessionName, nil
	}
	p.mu.Lock()
	name := p.sessionName
	p.mu.Unlock()
	if name != "" {
		return name, nil
	}
	if ks, ok := p.mfa.src.src.(*keyringSource); ok {
		name = sessionNameFromARN(ks.storedARN())
	}
	if name == "" {
		if prev, _ := p.file.read(p.key); prev != nil && prev.SourceID == hashString(src.AccessKeyID) {
			name = prev.RoleSessionName
		}
	}
	if name == "" {
		out, err := p.sts.signedBy(base).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			return "", p.mfa.src.failure("GetCallerIdentity", src, err)
		}
		name = sessionNameFromARN(aws.ToString(out.Arn))
		if name == "" {
			return "", fmt.Errorf("cannot derive a role session name from %s; set role_session_name in the profile", aws.ToString(out.Arn))
		}
	}
	p.mu.Lock()
	p.sessionName = name
	p.mu.Unlock()
	return name, nil
}

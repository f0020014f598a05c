package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/internal/awserr"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// sourceProvider is the first link of the chain (docs/credentials.md 5.1, tier
// 1): the credentials everything else is minted from. It refuses a source
// whose hard deadline has passed before asking it, and it knows what a
// refusal of the source's own credentials means for each kind of source.
type sourceProvider struct {
	src     source
	profile string
	clk     clock.Clock
}

// Retrieve makes the link an aws.CredentialsProvider.
func (p *sourceProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := p.retrieve(ctx)
	return c.AWS(p.src.describe()), err
}

// retrieve returns the source credentials, unless a source that cannot be
// renewed from here has reached its deadline.
func (p *sourceProvider) retrieve(ctx context.Context) (Credentials, error) {
	if d := p.src.deadline(); d != nil && !d.Renewable && d.Known() && !p.clk.Now().Before(d.At) {
		return Credentials{}, &SourceError{Profile: p.profile, What: d.What, At: d.At, Fix: d.Fix}
	}
	c, err := p.src.retrieve(ctx)
	c.register()
	return c, err
}

// failure turns an STS error into one that says what failed: a
// *NetworkError when STS could not be reached; a permanent *SourceError when
// the source's own credentials (src) were refused and nothing here can renew
// them (an expired temporary source, a deleted or deactivated long-term key,
// whether stored by "ssmproxy login", exported, or in a profile).
func (p *sourceProvider) failure(op string, src Credentials, err error) error {
	if isNetworkError(err) {
		return &NetworkError{Profile: p.profile, Op: op, Err: err}
	}
	code := stsCode(err)
	if awserr.CredentialsRefused(code) {
		if d := p.src.deadline(); d != nil && !d.Renewable {
			at := d.At
			if !at.IsZero() && at.After(p.clk.Now()) {
				at = time.Time{} // refused before its stated expiry: say refused
			}
			return &SourceError{Profile: p.profile, What: d.What, At: at, Code: code, Fix: d.Fix}
		}
		switch s := p.src.(type) {
		case *keyringSource:
			// A deleted or deactivated IAM key does not come back.
			return &SourceError{Profile: p.profile, What: "the key stored by \"ssmproxy login\"", Code: code,
				Fix: fmt.Sprintf("store a valid key with \"ssmproxy login --profile %s\"", s.profile)}
		case *envSource:
			return &SourceError{Profile: p.profile, What: s.describe(), Code: code, Fix: "export valid credentials and reconnect"}
		case *sdkSource:
			if !src.Temporary() {
				// Static keys in the shared files: the SDK reads the same
				// ones again, so retrying can never succeed.
				return &SourceError{Profile: p.profile, What: "the long-term key of " + s.describe(), Code: code,
					Fix: "replace the key in the AWS config files, or store one with \"ssmproxy login\""}
			}
		}
		p.src.invalidate() // the SDK may fetch new ones (SSO, credential_process)
	}
	return fmt.Errorf("%s for profile %q: %w", op, p.profile, err)
}

// storedMFASerial is the mfa_serial stored with a "ssmproxy login" key.
func (p *sourceProvider) storedMFASerial() string {
	if ks, ok := p.src.(*keyringSource); ok {
		return ks.storedMFASerial()
	}
	return ""
}

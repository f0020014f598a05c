package broker

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"

	"github.com/ssmproxy/ssmproxy/internal/awserr"
)

// stsCallTimeout bounds one STS call (the SDK retries inside it).
const stsCallTimeout = 45 * time.Second

// stsClients builds STS clients that sign with given credentials. Endpoint
// overrides come from the base configuration, per client (never a global
// override: docs/credentials.md 3.3).
type stsClients struct {
	base     aws.Config // region, endpoint overrides, HTTP client; no credentials
	endpoint string     // Options.STSEndpoint (tests)
}

// signedBy is an STS client signing with c.
func (s stsClients) signedBy(c Credentials) *sts.Client {
	return sts.NewFromConfig(s.base, func(o *sts.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
		if s.endpoint != "" {
			o.BaseEndpoint = aws.String(s.endpoint)
		}
	})
}

func fromSTS(c *ststypes.Credentials, now time.Time) Credentials {
	if c == nil {
		return Credentials{}
	}
	out := Credentials{
		AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken: aws.ToString(c.SessionToken), Expires: aws.ToTime(c.Expiration), Issued: now,
	}
	out.register() // minted: known to the redactor from this moment
	return out
}

// stsCode is the error code of an STS failure, or "".
func stsCode(err error) string { return awserr.Code(err) }

// stsMessage is STS's message, redacted.
func stsMessage(err error) string { return awserr.Message(err) }

package broker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// Credentials are one set of AWS credentials with their real expiry. The
// secret and the session token never appear in formatted output.
type Credentials struct {
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key"`
	SessionToken    string    `json:"session_token,omitempty"`
	Expires         time.Time `json:"expiration,omitzero"` // zero: never expires
	Issued          time.Time `json:"issued,omitzero"`     // when they were minted or first seen
}

// Temporary reports whether these are STS session credentials.
func (c Credentials) Temporary() bool { return c.SessionToken != "" }

// CanExpire reports whether the credentials have a known expiry.
func (c Credentials) CanExpire() bool { return !c.Expires.IsZero() }

// Lifetime is the span from issue to expiry (0 when either is unknown).
func (c Credentials) Lifetime() time.Duration {
	if c.Expires.IsZero() || c.Issued.IsZero() || !c.Expires.After(c.Issued) {
		return 0
	}
	return c.Expires.Sub(c.Issued)
}

func (c Credentials) valid() bool { return c.AccessKeyID != "" && c.SecretAccessKey != "" }

// AWS converts to the SDK's type, keeping the real expiry.
func (c Credentials) AWS(source string) aws.Credentials {
	return aws.Credentials{
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
		Source: source, CanExpire: c.CanExpire(), Expires: c.Expires,
	}
}

// register tells the redactor this process's secrets, so that no message
// or log line shows them whatever wraps them (docs/credentials.md 7.1).
func (c Credentials) register() { redact.Register(c.SecretAccessKey, c.SessionToken) }

func fromAWS(a aws.Credentials, now time.Time) Credentials {
	c := Credentials{AccessKeyID: a.AccessKeyID, SecretAccessKey: a.SecretAccessKey, SessionToken: a.SessionToken, Issued: now}
	if a.CanExpire {
		c.Expires = a.Expires
	}
	return c
}

// String shows the masked key id and the expiry, never the secrets.
func (c Credentials) String() string {
	exp := "never"
	if c.CanExpire() {
		exp = c.Expires.Format(time.RFC3339)
	}
	return fmt.Sprintf("Credentials{AccessKeyID:%s Secret:[redacted] SessionToken:%s Expires:%s}",
		MaskKeyID(c.AccessKeyID), redactedIf(c.SessionToken != ""), exp)
}

// GoString is String, for %#v.
func (c Credentials) GoString() string { return c.String() }

// Format makes every verb (%v, %+v, %#v, %s, %q) print String.
func (c Credentials) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", c.String())
		return
	}
	_, _ = f.Write([]byte(c.String()))
}

// LogValue redacts for log/slog.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("accessKeyId", MaskKeyID(c.AccessKeyID)),
		slog.String("secret", "[redacted]"), slog.Time("expires", c.Expires))
}

func redactedIf(b bool) string {
	if b {
		return "[redacted]"
	}
	return "none"
}

// MaskKeyID shows an access key id as its prefix and last four characters
// (AKIA…WXYZ): enough to tell keys apart, not enough to use one.
func MaskKeyID(id string) string {
	if len(id) < 12 {
		if id == "" {
			return "none"
		}
		return "…"
	}
	return id[:4] + "…" + id[len(id)-4:]
}

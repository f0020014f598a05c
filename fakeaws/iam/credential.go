package iam

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Principal types, as they appear in ARNs.
const (
	PrincipalUser          = "user"
	PrincipalAssumedRole   = "assumed-role"
	PrincipalFederatedUser = "federated-user"
)

// Principal is who a credential acts as.
type Principal struct {
	Type        string // PrincipalUser, PrincipalAssumedRole or PrincipalFederatedUser
	Name        string // user name, role name, or federated name
	SessionName string // RoleSessionName, for assumed-role only
}

// ARN is the principal's ARN in account: IAM users live in the iam namespace,
// role sessions and federated users in sts.
func (p Principal) ARN(account string) string {
	switch p.Type {
	case PrincipalAssumedRole:
		return "arn:aws:sts::" + account + ":assumed-role/" + p.Name + "/" + p.SessionName
	case PrincipalFederatedUser:
		return "arn:aws:sts::" + account + ":federated-user/" + p.Name
	default:
		return "arn:aws:iam::" + account + ":user/" + p.Name
	}
}

// SessionIDPrefix is what Session Manager session ids of this principal start
// with: the user name, the RoleSessionName, or the federated name. The
// least-privilege session policy (docs/credentials.md section 6) relies on it.
func (p Principal) SessionIDPrefix() string {
	if p.Type == PrincipalAssumedRole {
		return p.SessionName
	}
	return p.Name
}

func (p Principal) String() string {
	if p.Type == PrincipalAssumedRole {
		return p.Type + "/" + p.Name + "/" + p.SessionName
	}
	return p.Type + "/" + p.Name
}

// Credential is one access key the fake knows: a long-term user key or a
// temporary credential STS issued. Its String, Format, GoString and LogValue
// methods redact the secret and the session token, so it can be logged and
// printed with any verb.
type Credential struct {
	AccessKeyID, SecretAccessKey, SessionToken string    // SessionToken "" for long-term keys
	Expires                                    time.Time // zero for long-term keys
	Principal                                  Principal
	ParentKeyID                                string // the credential that minted this one ("" for long-term)
	// MFA: an MFA code was validated for this session, or for the session it
	// was minted from (the flag is inherited down a chain).
	MFA            bool
	SessionPolicy  string // inline session policy JSON ("" = none)
	SourceIdentity string

	// Additions beyond the brief's shape, for the SSM fake and tests.

	Account string // the account id
	// UserID is what aws:userid / GetCallerIdentity's UserId is: AIDA... for
	// users, AROA...:<RoleSessionName> for role sessions, <account>:<name>
	// for federated users.
	UserID string
	// BaseUser is the IAM user at the root of the minting chain.
	BaseUser string
	// SessionPolicyARNs are the managed session policy ARNs (recorded only;
	// the fake cannot evaluate managed policies).
	SessionPolicyARNs []string
	IssuedAt          time.Time
}

// Temporary reports whether this is an STS credential (it has a session
// token), which is what makes an AssumeRole call "role chaining".
func (c Credential) Temporary() bool { return c.SessionToken != "" }

// ARN is the principal's ARN.
func (c Credential) ARN() string { return c.Principal.ARN(c.Account) }

// ExpiredAt reports whether the credential has expired at t.
func (c Credential) ExpiredAt(t time.Time) bool {
	return !c.Expires.IsZero() && !t.Before(c.Expires)
}

func (c Credential) clone() Credential {
	c.SessionPolicyARNs = slices.Clone(c.SessionPolicyARNs)
	return c
}

const redacted = "REDACTED"

func redact(v string) string {
	if v == "" {
		return ""
	}
	return redacted
}

// String shows everything but the secret and the token.
func (c Credential) String() string {
	var b strings.Builder
	b.WriteString("iam.Credential{AccessKeyID:")
	b.WriteString(c.AccessKeyID)
	b.WriteString(" SecretAccessKey:")
	b.WriteString(redact(c.SecretAccessKey))
	b.WriteString(" SessionToken:")
	b.WriteString(redact(c.SessionToken))
	b.WriteString(" Principal:")
	b.WriteString(c.Principal.String())
	if !c.Expires.IsZero() {
		b.WriteString(" Expires:")
		b.WriteString(c.Expires.UTC().Format(time.RFC3339))
	}
	if c.ParentKeyID != "" {
		b.WriteString(" ParentKeyID:")
		b.WriteString(c.ParentKeyID)
	}
	fmt.Fprintf(&b, " MFA:%t", c.MFA)
	if c.SourceIdentity != "" {
		b.WriteString(" SourceIdentity:")
		b.WriteString(c.SourceIdentity)
	}
	if c.SessionPolicy != "" {
		fmt.Fprintf(&b, " SessionPolicy:%dB", len(c.SessionPolicy))
	}
	b.WriteString("}")
	return b.String()
}

// GoString makes %#v redact too.
func (c Credential) GoString() string { return c.String() }

// Format routes every fmt verb (%v, %+v, %#v, %s, %q, %x, %d ...) through
// String. Without it, verbs fmt does not send to String (such as %d) would
// print the struct fields, secret included.
func (c Credential) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", c.String())
	default:
		_, _ = f.Write([]byte(c.String()))
	}
}

// LogValue is the slog form, without secret or token.
func (c Credential) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("access_key_id", c.AccessKeyID),
		slog.String("principal", c.Principal.String()),
		slog.Bool("temporary", c.Temporary()),
		slog.Bool("mfa", c.MFA),
	}
	if !c.Expires.IsZero() {
		attrs = append(attrs, slog.Time("expires", c.Expires))
	}
	if c.ParentKeyID != "" {
		attrs = append(attrs, slog.String("parent", c.ParentKeyID))
	}
	if c.SourceIdentity != "" {
		attrs = append(attrs, slog.String("source_identity", c.SourceIdentity))
	}
	return slog.GroupValue(attrs...)
}

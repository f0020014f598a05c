package broker

import (
	"fmt"
	"strings"
	"time"
)

// Honest failure (docs/credentials.md 5.8). When the only source of credentials
// cannot be renewed without a human (exported STS credentials, an MFA session
// with no way to ask for a new code, an SSO session), ssmproxy says so at
// connect time with the exact deadline, warns before it, and when minting
// finally fails, ends with one line that names what expired, when, and the
// fix, instead of retrying into a silent drop.

// SourceError reports that the source of credentials has expired or was
// refused and cannot be renewed from here. It is permanent: retrying cannot
// fix it, so ssm stops resuming at once (ssm.IsPermanent) and ssmproxy exits
// with the credentials exit code.
type SourceError struct {
	Profile string
	What    string    // what expired, e.g. "the environment's session credentials"
	At      time.Time // when it expired; zero when unknown
	Code    string    // the service's error code when it refused the credentials
	Reason  string    // replaces the standard wording after What
	Fix     string    // what the user should do
}

// Permanent marks the error as final for ssm.IsPermanent.
func (e *SourceError) Permanent() bool { return true }

func (e *SourceError) Error() string {
	var b strings.Builder
	b.WriteString(e.What)
	if e.Profile != "" {
		fmt.Fprintf(&b, " for profile %q", e.Profile)
	}
	switch {
	case e.Reason != "":
		b.WriteString(" " + e.Reason)
	case !e.At.IsZero():
		fmt.Fprintf(&b, " expired at %s", fmtTime(e.At))
		if e.Code != "" {
			fmt.Fprintf(&b, " (%s)", e.Code)
		}
		b.WriteString(" and cannot be renewed from here")
	case e.Code != "":
		fmt.Fprintf(&b, " were refused by AWS (%s) and cannot be renewed from here", e.Code)
	default:
		b.WriteString(" expired and cannot be renewed from here")
	}
	if e.Fix != "" {
		b.WriteString("; " + e.Fix)
	}
	return b.String()
}

// fmtTime is the exact local time with its offset, to the second.
func fmtTime(t time.Time) string { return t.Local().Format(time.RFC3339) }

// fmtIn is a short relative duration ("in 38m0s", "5s ago").
func fmtIn(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}

// FormatWhen is the exact local time with the distance from now
// ("2026-01-01T14:32:00+01:00 (in 38m0s)"), or "never" for the zero time.
func FormatWhen(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s (%s)", fmtTime(t), fmtIn(t.Sub(now)))
}

// finalMintAt is when a process mints for the last time before a hard
// deadline that nothing here can renew: finalLead before it, while the
// source (or the MFA session) still signs. Zero when there is no such mint
// ahead: no role (nothing to mint), no known deadline, or it has passed.
func finalMintAt(e *entry, now time.Time) time.Time {
	d := e.Deadline
	if e.RoleARN == "" || !d.Known() || d.Renewable {
		return time.Time{}
	}
	at := d.At.Add(-finalLead(lifetimeOf(e.Credentials)))
	if !at.After(now) {
		return time.Time{}
	}
	return at
}

// authorisedUntil estimates how long the connection stays authorised when
// the source dies at its deadline: until the credentials of the last mint
// that can happen before it (the final mint, finalLead before the deadline;
// or the current credentials when that has passed) expire. A chained role
// session is not assumed to outlive its parent: the parent of the final
// mint lives until the deadline (exported credentials, the MFA session), or
// longer when the current parent is known to (SSO role credentials outlive
// the SSO token). Without a role, the credentials are the source's own.
func authorisedUntil(e *entry, now time.Time) time.Time {
	d := e.Deadline
	if !d.Known() {
		return time.Time{}
	}
	if e.RoleARN == "" {
		return later(d.At, e.Credentials.Expires)
	}
	until := e.Credentials.Expires
	if final := finalMintAt(e, now); !final.IsZero() {
		until = final.Add(lifetimeOf(e.Credentials))
	}
	if e.Chained {
		until = earlier(until, later(d.At, e.ParentExpires))
	}
	return until
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// noticeSpan is the horizon within which a hard deadline is announced at
// connect time (docs/credentials.md 5.8: less than 8 h away, or unknown).
const noticeSpan = 8 * time.Hour

// connectNotice is the connect-time line about a hard deadline, or "".
func connectNotice(profile string, d *Deadline, until time.Time, now time.Time) string {
	if d == nil || d.Renewable {
		return ""
	}
	if !d.Known() {
		return fmt.Sprintf("credentials for profile %q are temporary (%s) with no known expiry and may expire at any time; "+
			"they cannot be renewed from here. %s", profile, d.What, capitalize(d.Fix))
	}
	if d.At.Sub(now) >= noticeSpan {
		return ""
	}
	s := fmt.Sprintf("credentials for profile %q are temporary (%s) and expire at %s (%s); they cannot be renewed from here",
		profile, d.What, fmtTime(d.At), fmtIn(d.At.Sub(now)))
	if until.After(d.At) {
		s += fmt.Sprintf(", so this connection stays authorised until about %s", fmtTime(until))
	}
	return s + ". " + capitalize(d.Fix)
}

// warningNotice is the line printed a while before the deadline.
func warningNotice(profile string, d *Deadline, until time.Time, now time.Time) string {
	s := fmt.Sprintf("warning: %s for profile %q expire at %s (%s) and cannot be renewed from here",
		d.What, profile, fmtTime(d.At), fmtIn(d.At.Sub(now)))
	if until.After(d.At) {
		s += fmt.Sprintf("; this connection stays authorised until about %s", fmtTime(until))
	}
	return s + ". " + capitalize(d.Fix)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// errLongTermOut refuses to hand a long-term key to another program.
var errLongTermOut = errorString("credential-process never hands out a long-term key: configure a role " +
	"(role_arn in the profile, --role-arn or " + EnvRoleARN + ") or an mfa_serial")

type errorString string

func (e errorString) Error() string { return string(e) }

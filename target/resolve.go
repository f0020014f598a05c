package target

import (
	"context"
	"errors"
	"fmt"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/ssmproxy/ssmproxy/internal/awserr"
	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// Resolver answers a query from the cache, or from a Finder it builds only
// on a miss (so a cache hit needs no credentials and no call).
type Resolver struct {
	Cache *Cache // nil: no cache
	// Finder builds the finder, with the lookup scope's credentials.
	Finder func(ctx context.Context) (*Finder, error)
}

// Resolve returns the one Online instance q names. Ids are returned as
// they are. Errors are *Error, or Finder's own.
func (r *Resolver) Resolve(ctx context.Context, q Query) (Candidate, error) {
	if q.Kind == KindID {
		return Candidate{ID: q.Value}, nil
	}
	cands, hit := r.Cache.get(q)
	if !hit {
		f, err := r.Finder(ctx)
		if err != nil {
			return Candidate{}, err
		}
		if cands, err = f.Find(ctx, q); err != nil {
			return Candidate{}, classify(q, err)
		}
	}
	c, err := Choose(q, cands)
	if err == nil && !hit {
		// Only answers are kept: after "offline" or "several match" the
		// user fixes something and retries, and must see the change.
		r.Cache.put(q, cands)
	}
	return c, err
}

// Choose applies the rule: exactly one candidate, and its agent Online.
func Choose(q Query, cands []Candidate) (Candidate, error) {
	switch {
	case len(cands) == 0:
		return Candidate{}, &Error{Query: q, Reason: NoMatch}
	case len(cands) > 1:
		return Candidate{}, &Error{Query: q, Reason: Ambiguous, Candidates: cands}
	case cands[0].PingStatus != "Online":
		return Candidate{}, &Error{Query: q, Reason: Offline, Candidates: cands}
	}
	return cands[0], nil
}

// Reason says why a query has no answer.
type Reason int

const (
	NoMatch     Reason = iota // nothing matched
	Ambiguous                 // several matched
	Offline                   // one matched, its agent is not Online
	TooMany                   // the listing did not end within the page bound
	Denied                    // IAM refused a describe call
	Credentials               // the credentials were refused
	Refused                   // the service refused the request otherwise
	Unreachable               // network, throttling or a service failure
)

// Error is a query without an answer. Its text is one line; the
// candidates, one line each, come from CandidateLines (ssmproxy prints them
// under it).
type Error struct {
	Query      Query
	Reason     Reason
	Candidates []Candidate
	Code       string // the service's error code (Denied, Credentials, Refused, Unreachable)
	Message    string // the service's message, redacted
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Query.Raw == "" {
		// A fleet listing (Finder.Fleet), not a query.
		b.WriteString("listing the fleet: ")
	} else {
		fmt.Fprintf(&b, "target %q: ", redact.Escape(e.Query.Raw))
	}
	switch e.Reason {
	case NoMatch:
		fmt.Fprintf(&b, "no running instance or managed node matches %s", e.Query.describe())
	case Ambiguous:
		fmt.Fprintf(&b, "%d instances match %s; name one by its id:", len(e.Candidates), e.Query.describe())
	case Offline:
		fmt.Fprintf(&b, "the one match is not connected to Session Manager (ping status %s):", redact.Escape(e.Candidates[0].PingStatus))
	case TooMany:
		b.WriteString("the lookup needed more pages than allowed; use an instance id or a narrower tag")
	case Denied:
		b.WriteString("looking it up was denied (the lookup needs ssm:DescribeInstanceInformation and ec2:DescribeInstances)")
	case Credentials:
		b.WriteString("looking it up failed: the credentials were refused")
	case Refused:
		b.WriteString("looking it up was refused by the service")
	case Unreachable:
		b.WriteString("looking it up failed: service or network failure")
	}
	if e.Code != "" || e.Message != "" {
		fmt.Fprintf(&b, " (%s: %s)", e.Code, e.Message)
	} else if e.Err != nil && e.Reason >= TooMany {
		fmt.Fprintf(&b, " (%s)", redact.String(e.Err.Error()))
	}
	return b.String()
}

// CandidateLines are the candidates, one line each: id, name, ping status,
// agent version, with control characters escaped.
func (e *Error) CandidateLines() []string {
	lines := make([]string, 0, len(e.Candidates))
	for _, c := range e.Candidates {
		lines = append(lines, c.line())
	}
	return lines
}

func (e *Error) Unwrap() error { return e.Err }

// line is one candidate: id, name, ping status, agent version.
func (c Candidate) line() string {
	field := func(s string) string {
		if s == "" {
			return "-"
		}
		return redact.Escape(s)
	}
	return fmt.Sprintf("%-20s %-24s %-14s %s", c.ID, field(c.Name), field(c.PingStatus), field(c.AgentVersion))
}

func (q Query) describe() string {
	switch q.Kind {
	case KindName:
		return fmt.Sprintf("the name %q", q.Value)
	case KindTag:
		return fmt.Sprintf("the tag %s=%s", q.Key, q.Value)
	case KindIP:
		return "the private address " + q.Value
	case KindDNS:
		return "the private DNS name " + q.Value
	}
	return q.Value
}

// classify turns a Finder failure into an *Error by the service's code,
// never its text.
func classify(q Query, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	e := &Error{Query: q, Err: err, Code: awserr.Code(err), Message: awserr.Message(err)}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	switch code := e.Code; {
	case errors.Is(err, ErrTooManyPages):
		e.Reason = TooMany
	case code == "AccessDeniedException" || code == "AccessDenied" || code == "UnauthorizedOperation":
		e.Reason = Denied
	case awserr.CredentialsRefused(code) || code == "AuthFailure" || code == "RequestExpired":
		e.Reason = Credentials
	case code == "", status >= 500, code == "ThrottlingException" || code == "RequestLimitExceeded" || code == "Throttling":
		// No answer at all (network), throttled, or the service failed.
		e.Reason = Unreachable
	default:
		e.Reason = Refused
	}
	return e
}

package ssm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	ssmsdk "github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"

	"github.com/ssmproxy/ssmproxy/internal/awserr"
	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// SessionInfo is what StartSession and ResumeSession return.
type SessionInfo struct {
	SessionID  string
	TokenValue string
	StreamURL  string
}

// String redacts the token.
func (i SessionInfo) String() string {
	return fmt.Sprintf("SessionInfo{SessionId:%s StreamUrl:%s TokenValue:[redacted]}", i.SessionID, redactURL(i.StreamURL))
}

// StartInput describes the session to start.
type StartInput struct {
	Target       string
	DocumentName string
	Parameters   map[string][]string
	Reason       string
}

// API is the part of the SSM service a Session uses. The default
// implementation is the aws-sdk-go-v2 client; tests may substitute another
// implementation that talks to a real server.
type API interface {
	StartSession(ctx context.Context, in StartInput) (SessionInfo, error)
	// ResumeSession returns a SessionInfo with an empty TokenValue when the
	// session can no longer be resumed.
	ResumeSession(ctx context.Context, sessionID string) (SessionInfo, error)
	TerminateSession(ctx context.Context, sessionID string) error
}

// NewAPI returns the SDK-backed API. Endpoint overrides (AWS_ENDPOINT_URL_SSM,
// profile endpoint_url, services sections) reach it through cfg as loaded by
// config.LoadDefaultConfig and apply to this client only; optFns can set a
// per-client BaseEndpoint.
func NewAPI(cfg aws.Config, optFns ...func(*ssmsdk.Options)) API {
	if cfg.Credentials != nil {
		cfg.Credentials = markedProvider{cfg.Credentials}
	}
	return &sdkAPI{c: ssmsdk.NewFromConfig(cfg, optFns...)}
}

// CredentialsError reports that no credentials could be obtained for a call:
// the provider itself failed, so no request reached the service.
type CredentialsError struct{ Err error }

func (e *CredentialsError) Error() string { return "obtain credentials: " + e.Err.Error() }
func (e *CredentialsError) Unwrap() error { return e.Err }

// markedProvider wraps the caller's provider so that its failures can be told
// apart from the service's answers after the SDK has wrapped them.
type markedProvider struct{ aws.CredentialsProvider }

func (m markedProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.CredentialsProvider.Retrieve(ctx)
	if err != nil {
		return c, &CredentialsError{Err: err}
	}
	return c, nil
}

// PermanentError is implemented by errors (typically from a credentials
// provider) that retrying cannot fix, such as an expired source that only a
// human can renew. Resume stops at once on them.
type PermanentError interface {
	error
	Permanent() bool
}

// IsPermanent reports whether err carries a PermanentError that says so.
func IsPermanent(err error) bool {
	var p PermanentError
	return errors.As(err, &p) && p.Permanent()
}

type sdkAPI struct{ c *ssmsdk.Client }

func (a *sdkAPI) StartSession(ctx context.Context, in StartInput) (SessionInfo, error) {
	req := &ssmsdk.StartSessionInput{Target: aws.String(in.Target), Parameters: in.Parameters}
	if in.DocumentName != "" {
		req.DocumentName = aws.String(in.DocumentName)
	}
	if in.Reason != "" {
		req.Reason = aws.String(in.Reason)
	}
	out, err := a.c.StartSession(ctx, req)
	if err != nil {
		return SessionInfo{}, classify("StartSession", in.Target, err)
	}
	info := SessionInfo{SessionID: aws.ToString(out.SessionId), TokenValue: aws.ToString(out.TokenValue), StreamURL: aws.ToString(out.StreamUrl)}
	if info.SessionID == "" || info.TokenValue == "" || info.StreamURL == "" {
		return SessionInfo{}, &APIError{Op: "StartSession", Kind: KindOther, Code: "IncompleteResponse",
			Message: "the response lacks SessionId, TokenValue or StreamUrl"}
	}
	return info, nil
}

func (a *sdkAPI) ResumeSession(ctx context.Context, id string) (SessionInfo, error) {
	out, err := a.c.ResumeSession(ctx, &ssmsdk.ResumeSessionInput{SessionId: aws.String(id)})
	if err != nil {
		return SessionInfo{}, classify("ResumeSession", id, err)
	}
	return SessionInfo{SessionID: aws.ToString(out.SessionId), TokenValue: aws.ToString(out.TokenValue), StreamURL: aws.ToString(out.StreamUrl)}, nil
}

func (a *sdkAPI) TerminateSession(ctx context.Context, id string) error {
	if _, err := a.c.TerminateSession(ctx, &ssmsdk.TerminateSessionInput{SessionId: aws.String(id)}); err != nil {
		return classify("TerminateSession", id, err)
	}
	return nil
}

// Kind classifies API failures by what the caller should do about them.
type Kind int

const (
	KindOther              Kind = iota
	KindTargetNotConnected      // the agent is offline
	KindAccessDenied            // IAM denies the call
	KindInvalidDocument         // unknown or refused document
	KindInvalidRequest          // validation of our own request failed
	KindCredentials             // expired, unknown or mis-signed credentials
	KindThrottled               // rate exceeded: back off and retry
	KindServer                  // 5xx or network: back off and retry
	KindSessionGone             // the session does not exist any more
)

var kindNames = [...]string{"other", "target not connected", "access denied", "invalid document", "invalid request",
	"credentials", "throttled", "server", "session gone"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("kind(%d)", int(k))
	}
	return kindNames[k]
}

// Retryable reports whether an error of this kind may succeed when retried
// after a pause.
func (k Kind) Retryable() bool { return k == KindThrottled || k == KindServer }

// APIError is a classified SSM API failure.
type APIError struct {
	Op       string // StartSession, ResumeSession, TerminateSession
	Resource string // target or session id
	Kind     Kind
	Code     string // the service's error type, namespace stripped
	Message  string
	Status   int // HTTP status, 0 if none
	Err      error
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(strings.ToLower(e.Op[:1]) + e.Op[1:])
	if e.Resource != "" {
		b.WriteString(" " + e.Resource)
	}
	b.WriteString(": ")
	switch e.Kind {
	case KindTargetNotConnected:
		b.WriteString("instance is not connected to Session Manager: is the agent running and does the instance have the SSM role?")
	case KindAccessDenied:
		b.WriteString("access denied")
		if action := deniedAction(e.Message, e.Op); action != "" {
			b.WriteString(": the credentials lack permission for " + action)
		}
	case KindInvalidDocument:
		b.WriteString("the document was refused")
	case KindCredentials:
		b.WriteString("the credentials were refused")
	case KindThrottled:
		b.WriteString("throttled by the service")
	case KindSessionGone:
		b.WriteString("the session no longer exists")
	case KindServer:
		b.WriteString("service or network failure")
	case KindInvalidRequest:
		b.WriteString("the request was refused as invalid")
	default:
		b.WriteString("request failed")
	}
	if e.Code != "" || e.Message != "" {
		b.WriteString(" (")
		b.WriteString(e.Code)
		if e.Status != 0 {
			fmt.Fprintf(&b, ", HTTP %d", e.Status)
		}
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
		b.WriteString(")")
	} else if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *APIError) Unwrap() error { return e.Err }

// deniedAction names the IAM action the service reported as denied, or the
// action behind op when the message does not say.
func deniedAction(msg, op string) string {
	const marker = "not authorized to perform: "
	if i := strings.Index(msg, marker); i >= 0 {
		rest := msg[i+len(marker):]
		if j := strings.IndexAny(rest, " ,;"); j >= 0 {
			rest = rest[:j]
		}
		return rest
	}
	if op != "" {
		return "ssm:" + op
	}
	return ""
}

// ErrorCode strips a namespace ("com.amazon.coral.service#X") and any ":…"
// suffix from an AWS error type (docs/protocol.md section 2.5).
func ErrorCode(t string) string {
	if i := strings.LastIndexByte(t, '#'); i >= 0 {
		t = t[i+1:]
	}
	if i := strings.IndexByte(t, ':'); i >= 0 {
		t = t[:i]
	}
	return t
}

// classify turns an SDK error into an *APIError. It keys on the error type,
// not the HTTP status, except for a 403 that carries no recognised type.
func classify(op, resource string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	e := &APIError{Op: op, Resource: resource, Err: err}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		e.Status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.Code = ErrorCode(ae.ErrorCode())
		e.Message = awserr.Message(err)
	}
	// A failure to obtain credentials at all (the provider failed) is a
	// credentials problem even though no request was sent.
	var ce *CredentialsError
	isCredErr := errors.As(err, &ce)
	if isCredErr {
		e.Kind = KindCredentials
		e.Message = redact.String(ce.Err.Error())
		return e
	}
	if awserr.CredentialsRefused(e.Code) {
		e.Kind = KindCredentials
		return e
	}
	switch e.Code {
	case "TargetNotConnected":
		e.Kind = KindTargetNotConnected
	case "AccessDeniedException", "AccessDenied":
		e.Kind = KindAccessDenied
	case "InvalidDocument", "InvalidDocumentContent", "InvalidDocumentType":
		e.Kind = KindInvalidDocument
	case "InvalidParameters", "ValidationException", "ValidationError", "SerializationException":
		e.Kind = KindInvalidRequest
	case "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded":
		e.Kind = KindThrottled
	case "InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException":
		e.Kind = KindServer
	case "DoesNotExistException":
		e.Kind = KindSessionGone
	case "":
		var ne net.Error
		switch {
		case e.Status == 403:
			e.Kind = KindCredentials
		case e.Status == 429 || e.Status >= 500:
			e.Kind = KindServer
		case errors.As(err, &ne):
			e.Kind = KindServer
		default:
			// Transport failures surface without a status; treat them as
			// retryable network trouble.
			if e.Status == 0 {
				e.Kind = KindServer
			}
		}
	default:
		if e.Status == 403 {
			e.Kind = KindCredentials
		} else if e.Status >= 500 {
			e.Kind = KindServer
		}
	}
	return e
}

// redactURL drops the query of a StreamUrl, whose cell-number is opaque and
// may be sensitive, for logging.
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

package iam

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error types the fake answers with. The names are the JSON-protocol (SSM,
// ssmmessages) spellings; STS, which speaks awsquery, uses different codes for
// the same conditions (see stsCode).
const (
	ErrMissingAuthenticationToken = "MissingAuthenticationTokenException"
	ErrIncompleteSignature        = "IncompleteSignatureException"
	ErrInvalidSignature           = "InvalidSignatureException"
	ErrUnrecognizedClient         = "UnrecognizedClientException"
	ErrExpiredToken               = "ExpiredTokenException"
	ErrAccessDenied               = "AccessDeniedException"
)

// Messages AWS uses for the authentication failures. Clients and people grep
// for these, so they are kept verbatim.
const (
	msgMissingAuth     = "Missing Authentication Token"
	msgUnrecognized    = "The security token included in the request is invalid."
	msgExpired         = "The security token included in the request is expired"
	msgSignatureDiffer = "The request signature we calculated does not match the signature you provided. " +
		"Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

// APIError is an AWS service error: the HTTP status, the bare error type (no
// namespace, e.g. "ExpiredTokenException") and the message. Messages never
// contain secrets or session tokens.
type APIError struct {
	Status  int
	Type    string
	Message string
}

func (e *APIError) Error() string {
	if e == nil {
		return "<nil>"
	}
	return e.Type + " (" + strconv.Itoa(e.Status) + "): " + e.Message
}

// coralTypes are the errors the AWS request-handling layer ("coral") raises
// before a request reaches the service itself; real responses qualify them
// with that framework's namespace rather than the service's (docs/protocol.md 2.5
// shows "com.amazon.coral.service#ExpiredTokenException").
var coralTypes = map[string]string{
	ErrMissingAuthenticationToken: "com.amazon.coral.service",
	ErrIncompleteSignature:        "com.amazon.coral.service",
	ErrInvalidSignature:           "com.amazon.coral.service",
	ErrUnrecognizedClient:         "com.amazon.coral.service",
	ErrExpiredToken:               "com.amazon.coral.service",
	ErrAccessDenied:               "com.amazon.coral.service",
	"ThrottlingException":         "com.amazon.coral.availability",
	"ValidationException":         "com.amazon.coral.validate",
}

// qualifiedType returns the namespace-qualified spelling of a bare type:
// coral's namespace for the framework errors, "com.amazonaws.ssm" for the
// rest (the modeled SSM errors).
func qualifiedType(t string) string {
	if ns, ok := coralTypes[t]; ok {
		return ns + "#" + t
	}
	return "com.amazonaws.ssm#" + t
}

// WriteJSONError writes e in the AWS JSON 1.1 error shape:
//
//	{"__type":"ExpiredTokenException","message":"..."}
//
// With QualifiedErrorTypes the type is namespace-qualified and the message key
// is "Message", as some real endpoints answer, so the client's tolerant parsing
// is exercised. No X-Amzn-ErrorType header is sent: the SDK would prefer it
// to the body, and the body is what docs/protocol.md 2.5 tells clients to key on.
// x-amzn-RequestId is set, and Date comes from the store's clock so the SDK's
// clock-skew correction sees the fake's notion of time.
func (s *Store) WriteJSONError(w http.ResponseWriter, e *APIError) {
	if e == nil {
		e = &APIError{Status: http.StatusInternalServerError, Type: "InternalServerError", Message: "internal error"}
	}
	typ, msgKey := e.Type, "message"
	if s.qualifiedErrors() {
		typ, msgKey = qualifiedType(e.Type), "Message"
	}
	body, err := json.Marshal(map[string]string{"__type": typ, msgKey: e.Message})
	if err != nil { // cannot happen for a map of strings; keep the contract anyway
		body = []byte(`{"__type":"InternalServerError"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("x-amzn-RequestId", s.newRequestID())
	h.Set("Date", s.now().UTC().Format(http.TimeFormat))
	h.Set("Content-Length", strconv.Itoa(len(body)))
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// stsCode maps an authentication error raised by Verify to the code STS
// itself uses for it in awsquery responses. STS predates the JSON services'
// "...Exception" names: an expired token is "ExpiredToken", an unknown key
// "InvalidClientTokenId", a bad signature "SignatureDoesNotMatch". The broker
// branches on these (docs/credentials.md 5.8), so the fake must speak them.
func stsCode(e *APIError) (code string, status int) {
	switch e.Type {
	case ErrMissingAuthenticationToken:
		return "MissingAuthenticationToken", http.StatusForbidden
	case ErrIncompleteSignature:
		return "IncompleteSignature", http.StatusBadRequest
	case ErrInvalidSignature:
		return "SignatureDoesNotMatch", http.StatusForbidden
	case ErrUnrecognizedClient:
		return "InvalidClientTokenId", http.StatusForbidden
	case ErrExpiredToken:
		return "ExpiredToken", e.Status
	}
	return e.Type, e.Status
}

func errMissingAuth() *APIError {
	return &APIError{Status: http.StatusForbidden, Type: ErrMissingAuthenticationToken, Message: msgMissingAuth}
}

func errIncomplete(msg string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: ErrIncompleteSignature, Message: msg}
}

func errInvalidSig(msg string) *APIError {
	return &APIError{Status: http.StatusForbidden, Type: ErrInvalidSignature, Message: msg}
}

func errUnrecognized() *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: ErrUnrecognizedClient, Message: msgUnrecognized}
}

// Package awserr holds what ssmproxy knows about AWS error codes that more
// than one package branches on, and reads a service's error code and message
// out of an SDK error. It imports nothing of ssmproxy but internal/redact, so
// both broker (minting) and ssm (the session calls) can use it without an
// arrow between them.
package awserr

import (
	"errors"

	"github.com/aws/smithy-go"

	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// Code is the error code of the service's answer in err's chain ("" when
// the call got no answer), as the service spelled it.
func Code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// Message is the message of the service's answer in err's chain, through
// the redactor: it is text from outside the process and may quote a request
// (docs/credentials.md 7.1).
func Message(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return redact.String(ae.ErrorMessage())
	}
	return ""
}

// refused are the codes with which a service refuses the caller's own
// credentials, as opposed to the request: expired, unknown, deactivated or
// badly signed (docs/credentials.md 5.5, 5.8). STS (awsquery) and SSM (JSON 1.1)
// spell some of them differently, so both spellings are here.
var refused = map[string]bool{
	"ExpiredToken":                        true,
	"ExpiredTokenException":               true,
	"InvalidClientTokenId":                true,
	"UnrecognizedClientException":         true,
	"SignatureDoesNotMatch":               true,
	"InvalidSignatureException":           true,
	"IncompleteSignatureException":        true,
	"MissingAuthenticationTokenException": true,
}

// CredentialsRefused reports whether code says the caller's credentials
// were refused: a fresh set (or a renewed source) is the only cure.
func CredentialsRefused(code string) bool { return refused[code] }

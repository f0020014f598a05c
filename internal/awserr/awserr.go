// Package awserr holds what ssmproxy knows about AWS error codes that more
// than one package branches on. It imports nothing of ssmproxy, so both
// broker (minting) and ssm (the session calls) can use it without an arrow
// between them.
package awserr

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

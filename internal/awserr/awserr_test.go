package awserr

import "testing"

func TestCredentialsRefused(t *testing.T) {
	for _, c := range []string{"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "SignatureDoesNotMatch",
		"UnrecognizedClientException", "InvalidSignatureException"} {
		if !CredentialsRefused(c) {
			t.Errorf("%s: want refused", c)
		}
	}
	for _, c := range []string{"", "AccessDenied", "AccessDeniedException", "ThrottlingException", "ValidationError"} {
		if CredentialsRefused(c) {
			t.Errorf("%s: not a credentials refusal", c)
		}
	}
}

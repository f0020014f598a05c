package awserr

import (
	"errors"
	"fmt"
	"testing"

	"github.com/aws/smithy-go"
)

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

// TestMessageRedacted: a service message is text from outside the process;
// Message returns it through the redactor, Code as the service spelled it.
func TestMessageRedacted(t *testing.T) {
	err := fmt.Errorf("operation error: %w", &smithy.GenericAPIError{Code: "ValidationException",
		Message: "bad input {\"SecretAccessKey\":\"abc\"}\x1b[2J wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})
	if got := Code(err); got != "ValidationException" {
		t.Errorf("code %q", got)
	}
	want := `bad input {"SecretAccessKey":"[redacted]"}\x1b[2J [redacted]`
	if got := Message(err); got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	if Code(errors.New("no answer")) != "" || Message(errors.New("no answer")) != "" {
		t.Error("an error without a service answer has no code or message")
	}
}

package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestSecretTypesRedact: every type holding a secret hides it from fmt verbs
// and from both slog handlers (the JSON one would marshal plain fields).
func TestSecretTypesRedact(t *testing.T) {
	const secret, token = "SECRETSECRETSECRETSECRETSECRETSECRET0000", "TOKENTOKENTOKENTOKEN"
	c := Credentials{AccessKeyID: "ASIAEXAMPLEEXAMPLE12", SecretAccessKey: secret, SessionToken: token, Expires: time.Now()}
	values := []any{
		c,
		&c,
		SourceKey{AccessKeyID: "AKIAEXAMPLEEXAMPLE12", SecretAccessKey: secret},
		&entry{Profile: "p", Credentials: c},
		CredentialProcessOutput{Version: 1, AccessKeyID: c.AccessKeyID, SecretAccessKey: secret, SessionToken: token},
	}
	for _, v := range values {
		var text, js bytes.Buffer
		slog.New(slog.NewTextHandler(&text, nil)).Info("v", "v", v)
		slog.New(slog.NewJSONHandler(&js, nil)).Info("v", "v", v)
		out := fmt.Sprintf("%v|%+v|%#v|%s|%q|%x", v, v, v, v, v, v) + text.String() + js.String()
		if strings.Contains(out, secret) || strings.Contains(out, token) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
			t.Errorf("%T leaks a secret: %s", v, out)
		}
	}
}

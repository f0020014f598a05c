package iam

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzVerify: nothing a client sends may panic the verifier.
func FuzzVerify(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/ssm/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
		"20260101T000000Z", "/v1/data-channel/x", "role=publish_subscribe", "tok")
	f.Add("AWS4-HMAC-SHA256 Credential=/////, SignedHeaders=;;, Signature=", "2026", "/%zz", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=-1", "")
	f.Add("", "", "", "X-Amz-Credential=a%2Fb&X-Amz-Signature=&X-Amz-Date=x&X-Amz-SignedHeaders=host", "")
	s := NewStore(Options{})
	c := s.AddUser("alice")
	f.Add("AWS4-HMAC-SHA256 Credential="+c.AccessKeyID+"/20260101/us-east-1/ssm/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=ab",
		"20260101T000000Z", "/", "", "x")
	f.Fuzz(func(t *testing.T, authz, date, path, query, token string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL.Path, r.URL.RawQuery = path, query
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		if date != "" {
			r.Header.Set("X-Amz-Date", date)
		}
		if token != "" {
			r.Header.Set("X-Amz-Security-Token", token)
		}
		_, _ = s.Verify(r, []byte(query), "ssm", "StartSession")
		_, _, _ = s.VerifyPresent(r, "ssmmessages")
	})
}

// FuzzAllowed: nothing in a policy may panic the evaluator.
func FuzzAllowed(f *testing.F) {
	f.Add(brokerPolicy, "ssm:StartSession", "arn:aws:ssm:us-east-1::document/AWS-StartSSHSession")
	f.Add(`{"Statement":{"Effect":"Deny","NotAction":"*?*","Resource":["*"],"Condition":{"Bool":{"k":[true,1,"x"]}}}}`, "a", "b")
	f.Add(`{"Statement":null}`, "", "")
	f.Fuzz(func(t *testing.T, policy, action, resource string) {
		_, _ = Allowed(policy, action, resource)
	})
}

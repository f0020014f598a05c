package iam

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ssmproxy/ssmproxy/internal/clock"
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

// FuzzSigV4RoundTrip: whatever path, query, header value and body the SDK's
// own signer signs, the verifier accepts (the fake must never refuse a request
// AWS would take: docs/fakeaws.md 3), and once any signed part changes it
// refuses (it must never take one AWS would refuse).
func FuzzSigV4RoundTrip(f *testing.F) {
	f.Add("/", "", "x-value", []byte(`{"Target":"i-0123456789abcdef0"}`), uint16(0), byte(1))
	f.Add("/v1/data-channel/s-1", "role=publish_subscribe&cell-number=AAA", "a  b", []byte{}, uint16(3), byte(0x80))
	f.Add("/a%20b/c~d", "x=1&x=0&y=%2F", " padded ", []byte("\x00\xff"), uint16(1), byte(2))
	f.Fuzz(func(t *testing.T, path, rawQuery, hval string, body []byte, at uint16, flip byte) {
		now := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
		s := NewStore(Options{Clock: clock.NewFake(now)})
		c := s.AddUser("alice")
		u, err := url.Parse("http://127.0.0.1:4566")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?#") {
			return
		}
		u.Path = path
		if _, err := url.ParseQuery(rawQuery); err != nil || strings.ContainsAny(rawQuery, "#") {
			return
		}
		u.RawQuery = rawQuery
		if !validHeaderValue(hval) {
			return
		}
		build := func(b []byte) *http.Request {
			req, err := http.NewRequest(http.MethodPost, u.String(), bytes.NewReader(b))
			if err != nil {
				t.Skip(err)
			}
			req.Header.Set("X-Amz-Target", "AmazonSSM.StartSession")
			req.Header.Set("X-Fuzz", hval)
			return req
		}
		req := build(body)
		creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, payloadHash(body), "ssm", s.Region(), now); err != nil {
			t.Skip(err)
		}
		// What the server sees: the request as it arrives over the wire.
		srv := reparse(t, req)
		if got, e := s.Verify(srv, body, "ssm", "StartSession"); e != nil {
			t.Fatalf("SDK-signed request refused: %v (path %q query %q)", e, path, rawQuery)
		} else if got.AccessKeyID != c.AccessKeyID {
			t.Fatalf("verified as %q", got.AccessKeyID)
		}
		// Change one signed thing: the body if there is one, else the header.
		changed := append([]byte(nil), body...)
		if flip == 0 {
			flip = 1
		}
		srv2 := reparse(t, req)
		if len(changed) > 0 {
			changed[int(at)%len(changed)] ^= flip
		} else {
			srv2.Header.Set("X-Amz-Target", "AmazonSSM.TerminateSession")
		}
		if _, e := s.Verify(srv2, changed, "ssm", "StartSession"); e == nil {
			t.Fatalf("tampered request accepted")
		}
	})
}

// reparse sends req through a real HTTP round trip's parser, so the verifier
// sees what a server would, not the client's struct.
func reparse(t *testing.T, req *http.Request) *http.Request {
	t.Helper()
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		t.Skip(err)
	}
	r, err := http.ReadRequest(bufio.NewReader(&buf))
	if err != nil {
		t.Fatalf("request the client wrote does not parse: %v", err)
	}
	return r
}

// validHeaderValue is net/http's rule for what a client may send: no control
// characters but tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

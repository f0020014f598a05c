package iam

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// testEnv is a store with a fake clock near real time (the SDK signs with the
// real clock), an STS server, and an SSM-like JSON server that verifies
// SigV4 with service "ssm" and the operation from X-Amz-Target.
type testEnv struct {
	store *Store
	clock *clock.Fake
	sts   *httptest.Server
	ssm   *httptest.Server
	alice Credential // long-term key of user alice, who has MFA device mfaSerial
}

const mfaSerial = "arn:aws:iam::123456789012:mfa/alice"

func newEnv(t *testing.T, o Options) *testEnv {
	t.Helper()
	fc := clock.NewFake(time.Now().Truncate(time.Second))
	if o.Clock == nil {
		o.Clock = fc
	}
	s := NewStore(o)
	e := &testEnv{store: s, clock: fc}
	e.alice = s.AddUser("alice")
	s.AddMFADevice("alice", mfaSerial)
	s.AddRole(Role{Name: "ssmproxy", MaxSession: 12 * time.Hour})
	e.sts = httptest.NewServer(s.STSHandler())
	t.Cleanup(e.sts.Close)
	e.ssm = httptest.NewServer(ssmHandler(s))
	t.Cleanup(e.ssm.Close)
	return e
}

// ssmHandler stands in for the lead's SSM JSON API: verify, then answer.
func ssmHandler(s *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AmazonSSM.")
		c, apiErr := s.Verify(r, body, "ssm", op)
		if apiErr != nil {
			s.WriteJSONError(w, apiErr)
			return
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"SessionId":  c.Principal.SessionIDPrefix() + "-0123456789abcdef0",
			"TokenValue": "token",
			"StreamUrl":  "ws://127.0.0.1/v1/data-channel/x?role=publish_subscribe",
		})
	})
}

func staticCreds(c Credential) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
}

func (e *testEnv) stsClient(c Credential) *sts.Client {
	return sts.NewFromConfig(aws.Config{Region: e.store.Region(), Credentials: staticCreds(c)}, func(o *sts.Options) {
		o.BaseEndpoint = aws.String(e.sts.URL)
		o.Retryer = aws.NopRetryer{}
	})
}

func (e *testEnv) ssmClient(c Credential) *ssm.Client {
	return ssm.NewFromConfig(aws.Config{Region: e.store.Region(), Credentials: staticCreds(c)}, func(o *ssm.Options) {
		o.BaseEndpoint = aws.String(e.ssm.URL)
		o.Retryer = aws.NopRetryer{}
	})
}

// fromSTS turns SDK STS credentials into a Credential for signing.
func fromSTS(t *testing.T, e *testEnv, akid *string) Credential {
	t.Helper()
	c, ok := e.store.Lookup(aws.ToString(akid))
	if !ok {
		t.Fatalf("issued key %q not in store", aws.ToString(akid))
	}
	return c
}

// signedJSON builds an SSM-style JSON 1.1 request to url, signed with the
// SDK's own v4 signer at the given time; pre hooks shape it before signing.
func signedJSON(t *testing.T, url, op string, body []byte, c Credential, service, region string, at time.Time, pre ...func(*http.Request)) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "AmazonSSM."+op)
	for _, f := range pre {
		f(req)
	}
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, payloadHash(body), service, region, at); err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends req and returns the status and the parsed JSON error (if any).
func do(t *testing.T, req *http.Request) (int, map[string]string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

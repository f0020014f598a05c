package iam

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Tests of STS's edges: lifetimes, authentication, recording, concurrency
// and the raw wire shape.

func TestCredTTL(t *testing.T) {
	e := newEnv(t, Options{CredTTL: 20 * time.Second})
	ctx := context.Background()
	now := e.clock.Now()
	session := e.getSessionToken(t, &sts.GetSessionTokenInput{DurationSeconds: aws.Int32(3600)})
	role := e.assume(t, "alice")
	for _, c := range []Credential{session, role} {
		if !c.Expires.Equal(now.Add(20 * time.Second)) {
			t.Errorf("%s lives %v", c.Principal, c.Expires.Sub(now))
		}
	}
	// The requested value is still validated, chaining rule included.
	_, err := e.stsClient(e.alice).GetSessionToken(ctx, &sts.GetSessionTokenInput{DurationSeconds: aws.Int32(899)})
	wantSTSError(t, err, "ValidationError", 400, "greater than or equal to 900")
	_, err = e.stsClient(role).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(e.store.RoleARN("ssmproxy")),
		RoleSessionName: aws.String("alice"), DurationSeconds: aws.Int32(7200)})
	wantSTSError(t, err, "ValidationError", 400, "role chaining")

	// Once the clock passes the expiry, STS answers ExpiredToken (400) and
	// SSM ExpiredTokenException.
	e.clock.Advance(20 * time.Second)
	_, err = e.stsClient(role).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantSTSError(t, err, "ExpiredToken", 400, "The security token included in the request is expired")
	if got := e.store.Stats().STSErrors["ExpiredToken"]; got != 1 {
		t.Errorf("STSErrors[ExpiredToken] = %d", got)
	}
}

func TestSTSAuthErrors(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	bogus := e.alice
	bogus.AccessKeyID = "AKIAAAAAAAAAAAAAAAAA"
	_, err := e.stsClient(bogus).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantSTSError(t, err, "InvalidClientTokenId", 403, "The security token included in the request is invalid.")
	wrong := e.alice
	wrong.SecretAccessKey = strings.Repeat("y", 40)
	_, err = e.stsClient(wrong).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantSTSError(t, err, "SignatureDoesNotMatch", 403, "does not match")

	st, body := e.rawSTS(t, e.alice, url.Values{"Action": {"DecodeAuthorizationMessage"}, "Version": {"2011-06-15"}})
	if st != 400 || !strings.Contains(body, "<Code>InvalidAction</Code>") {
		t.Errorf("unknown action: %d %s", st, body)
	}
	resp, err := http.Post(e.sts.URL, "application/x-www-form-urlencoded", strings.NewReader("Action=GetCallerIdentity&Version=2011-06-15"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>MissingAuthenticationToken</Code>`
	if resp.StatusCode != 403 || !strings.HasPrefix(string(b), want) || !strings.Contains(string(b), "<RequestId>") {
		t.Errorf("unsigned: %d %s", resp.StatusCode, b)
	}
}

// TestSTSDateHeaderDrivesSkewCorrection: the fake stamps Date from its own
// clock, so the SDK's clock-skew correction converges on the fake's time, as
// it does against AWS.
func TestSTSDateHeaderDrivesSkewCorrection(t *testing.T) {
	e := newEnv(t, Options{})
	e.clock.Advance(time.Hour)
	cl := sts.NewFromConfig(aws.Config{Region: e.store.Region(), Credentials: staticCreds(e.alice)}, func(o *sts.Options) {
		o.BaseEndpoint = aws.String(e.sts.URL)
	})
	if _, err := cl.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{}); err != nil {
		t.Fatalf("SDK did not correct a 1h skew: %v", err)
	}
	calls := e.store.Calls()
	if len(calls) != 2 || calls[0].Result != "SignatureDoesNotMatch" || calls[1].Result != "OK" {
		t.Errorf("calls %+v", calls)
	}
}

func TestCallsAndStats(t *testing.T) {
	e := newEnv(t, Options{MFAValid: func(_, code string) bool { return code == "482913" }})
	ctx := context.Background()
	mfa := e.getSessionToken(t, &sts.GetSessionTokenInput{SerialNumber: aws.String(mfaSerial), TokenCode: aws.String("482913")})
	role := e.assume(t, "alice")
	_, _ = e.stsClient(role).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(e.store.RoleARN("ssmproxy")),
		RoleSessionName: aws.String("alice"), DurationSeconds: aws.Int32(7200)})

	calls := e.store.Calls()
	if len(calls) != 3 {
		t.Fatalf("%d calls", len(calls))
	}
	if c := calls[0]; c.Action != "GetSessionToken" || c.Caller != e.alice.ARN() || c.CallerKeyID != e.alice.AccessKeyID ||
		c.Result != "OK" || c.Status != 200 || c.IssuedKeyID != mfa.AccessKeyID || c.Fields.Get("TokenCode") != redacted ||
		c.Fields.Get("SerialNumber") != mfaSerial || !c.Time.Equal(e.clock.Now()) {
		t.Errorf("call 0 %+v", c)
	}
	if c := calls[2]; c.Action != "AssumeRole" || c.Caller != role.ARN() || c.Result != "ValidationError" || c.Status != 400 ||
		c.Fields.Get("DurationSeconds") != "7200" || c.IssuedKeyID != "" {
		t.Errorf("call 2 %+v", c)
	}
	st := e.store.Stats()
	if st.STSCalls["AssumeRole"] != 2 || st.STSCalls["GetSessionToken"] != 1 || st.STSCallsByCaller[e.alice.ARN()] != 2 ||
		st.STSCallsByCaller[role.ARN()] != 1 || st.STSErrors["ValidationError"] != 1 {
		t.Errorf("stats %+v", st)
	}

	// No secret, token or one-time code anywhere in the record.
	dump := fmt.Sprintf("%+v %#v", calls, calls)
	for _, c := range e.store.Issued() {
		for _, secret := range []string{c.SecretAccessKey, c.SessionToken} {
			if secret != "" && strings.Contains(dump, secret) {
				t.Fatalf("Calls() leaks a secret of %s", c.AccessKeyID)
			}
		}
	}
	if strings.Contains(dump, "482913") {
		t.Fatal("Calls() leaks the TokenCode")
	}
}

// TestSTSDelayConcurrent: many minters against a slow STS are served
// concurrently, and every call is counted.
func TestSTSDelayConcurrent(t *testing.T) {
	e := newEnv(t, Options{})
	e.store.SetSTSDelay(150 * time.Millisecond)
	const n = 16
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := e.stsClient(e.alice).AssumeRole(context.Background(), &sts.AssumeRoleInput{
				RoleArn: aws.String(e.store.RoleARN("ssmproxy")), RoleSessionName: aws.String("s-" + strconv.Itoa(i)),
			})
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if got := e.store.Stats().STSCalls["AssumeRole"]; got != n {
		t.Errorf("AssumeRole calls %d, want %d", got, n)
	}
	seen := map[string]bool{}
	for _, c := range e.store.Issued() {
		if seen[c.AccessKeyID] {
			t.Fatalf("duplicate key %s", c.AccessKeyID)
		}
		seen[c.AccessKeyID] = true
	}
}

// TestSTSRawXMLShape pins the envelope the SDK relies on.
func TestSTSRawXMLShape(t *testing.T) {
	e := newEnv(t, Options{})
	st, body := e.rawSTS(t, e.alice, url.Values{"Action": {"AssumeRole"}, "Version": {"2011-06-15"},
		"RoleArn": {e.store.RoleARN("ssmproxy")}, "RoleSessionName": {"alice"}})
	for _, want := range []string{
		`<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>ASIA`,
		`</SessionToken><Expiration>`, `</Credentials><AssumedRoleUser><AssumedRoleId>AROA`,
		`<Arn>arn:aws:sts::123456789012:assumed-role/ssmproxy/alice</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>`,
	} {
		if st != 200 || !strings.Contains(body, want) {
			t.Fatalf("%d: %s\nlacks %s", st, body, want)
		}
	}
}

// rawSTS signs and posts a hand-made awsquery form.
func (e *testEnv) rawSTS(t *testing.T, c Credential, form url.Values) (int, string) {
	t.Helper()
	body := []byte(form.Encode())
	req, _ := http.NewRequest(http.MethodPost, e.sts.URL+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, payloadHash(body), "sts", e.store.Region(), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

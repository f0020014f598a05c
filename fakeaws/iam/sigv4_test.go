package iam

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/gorilla/websocket"
)

// assume mints a role session through the real SDK STS client.
func (e *testEnv) assume(t *testing.T, session string) Credential {
	t.Helper()
	out, err := e.stsClient(e.alice).AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn:         aws.String(e.store.RoleARN("ssmproxy")),
		RoleSessionName: aws.String(session),
	})
	if err != nil {
		t.Fatalf("AssumeRole: %v", err)
	}
	return fromSTS(t, e, out.Credentials.AccessKeyId)
}

// TestSDKSSMClientAccepted proves the verifier accepts exactly what the real
// aws-sdk-go-v2 SSM client (JSON 1.1) signs, with long-term and temporary
// credentials, for every operation the fake serves.
func TestSDKSSMClientAccepted(t *testing.T) {
	e := newEnv(t, Options{})
	role := e.assume(t, "alice")
	for _, c := range []Credential{e.alice, role} {
		cl := e.ssmClient(c)
		ctx := context.Background()
		start, err := cl.StartSession(ctx, &ssm.StartSessionInput{
			Target:       aws.String("i-0123456789abcdef0"),
			DocumentName: aws.String("AWS-StartSSHSession"),
			Parameters:   map[string][]string{"portNumber": {"22"}},
		})
		if err != nil {
			t.Fatalf("%s StartSession: %v", c.Principal, err)
		}
		if want := c.Principal.SessionIDPrefix() + "-"; !strings.HasPrefix(aws.ToString(start.SessionId), want) {
			t.Errorf("session id %q, want prefix %q", aws.ToString(start.SessionId), want)
		}
		if _, err := cl.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: start.SessionId}); err != nil {
			t.Fatalf("%s ResumeSession: %v", c.Principal, err)
		}
		if _, err := cl.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: start.SessionId}); err != nil {
			t.Fatalf("%s TerminateSession: %v", c.Principal, err)
		}
	}
	if f := e.store.Stats().SigV4Failures; len(f) != 0 {
		t.Errorf("unexpected SigV4 failures: %v", f)
	}
}

// TestSigV4Rows covers every row of the docs/fakeaws.md section 3 table with
// requests signed by the SDK's v4 signer and then altered.
func TestSigV4Rows(t *testing.T) {
	e := newEnv(t, Options{})
	role := e.assume(t, "alice")
	body := []byte(`{"SessionId":"alice-0123456789abcdef0"}`)

	type row struct {
		name    string
		cred    Credential
		op      string
		region  string
		service string
		skew    time.Duration         // signing time relative to the fake clock
		pre     func(r *http.Request) // runs before signing
		before  func()                // runs before the request is sent
		mutate  func(r *http.Request)
		status  int
		typ     string
		msg     string // regexp the message must match
		reason  string
	}
	setSigned := func(list string) func(r *http.Request) {
		return func(r *http.Request) {
			r.Header.Set("Authorization", regexp.MustCompile(`SignedHeaders=[^,]*`).
				ReplaceAllString(r.Header.Get("Authorization"), "SignedHeaders="+list))
		}
	}
	bogus := e.alice
	bogus.AccessKeyID = "AKIAAAAAAAAAAAAAAAAA"
	wrongSecret := e.alice
	wrongSecret.SecretAccessKey = strings.Repeat("x", 40)
	wrongToken := role
	wrongToken.SessionToken = role.SessionToken + "X"
	noToken := role
	noToken.SessionToken = ""
	tokenOnLongTerm := e.alice
	tokenOnLongTerm.SessionToken = role.SessionToken

	rows := []row{
		{name: "ok long-term", cred: e.alice, status: 200},
		{name: "ok temporary", cred: role, status: 200},
		{name: "ok within skew past", cred: e.alice, skew: -4 * time.Minute, status: 200},
		{name: "ok within skew future", cred: e.alice, skew: 4 * time.Minute, status: 200},
		{name: "ok unsigned header added", cred: e.alice, status: 200,
			mutate: func(r *http.Request) { r.Header.Set("User-Agent", "changed"); r.Header.Set("X-Extra", "x") }},
		{name: "ok signed content-sha256", cred: e.alice, status: 200,
			pre: func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", payloadHash(body)) }},
		{name: "content-sha256 of another body", cred: e.alice, pre: func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", payloadHash(nil)) },
			status: 403, typ: ErrInvalidSignature, msg: "x-amz-content-sha256", reason: "payload-hash"},
		{name: "missing authorization", cred: e.alice, mutate: func(r *http.Request) { r.Header.Del("Authorization") },
			status: 403, typ: ErrMissingAuthenticationToken, msg: "^Missing Authentication Token$", reason: "missing"},
		{name: "other algorithm", cred: e.alice, mutate: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", 1))
		}, status: 400, typ: ErrIncompleteSignature, msg: "algorithm", reason: "algorithm"},
		{name: "no signature part", cred: e.alice, mutate: func(r *http.Request) {
			r.Header.Set("Authorization", regexp.MustCompile(`, Signature=.*`).ReplaceAllString(r.Header.Get("Authorization"), ""))
		}, status: 400, typ: ErrIncompleteSignature, msg: "requires 'Signature' parameter", reason: "incomplete"},
		{name: "no credential part", cred: e.alice, mutate: func(r *http.Request) {
			r.Header.Set("Authorization", regexp.MustCompile(`Credential=[^,]*, `).ReplaceAllString(r.Header.Get("Authorization"), ""))
		}, status: 400, typ: ErrIncompleteSignature, msg: "requires 'Credential' parameter", reason: "incomplete"},
		{name: "no x-amz-date", cred: e.alice, mutate: func(r *http.Request) { r.Header.Del("X-Amz-Date") },
			status: 400, typ: ErrIncompleteSignature, msg: "X-Amz-Date", reason: "incomplete"},
		{name: "credential with four parts", cred: e.alice, mutate: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/aws4_request", "", 1))
		}, status: 400, typ: ErrIncompleteSignature, msg: "exactly 5 slash-delimited", reason: "credential-format"},
		{name: "wrong region", cred: e.alice, region: "eu-west-1",
			status: 403, typ: ErrInvalidSignature, msg: `^Credential should be scoped to a valid region\.$`, reason: "scope-region"},
		{name: "wrong service", cred: e.alice, service: "ec2",
			status: 403, typ: ErrInvalidSignature, msg: "correct service: 'ssm'", reason: "scope-service"},
		{name: "scope date differs from x-amz-date", cred: e.alice, mutate: func(r *http.Request) {
			d, _ := time.Parse(amzDateFormat, r.Header.Get("X-Amz-Date"))
			r.Header.Set("X-Amz-Date", d.Add(24*time.Hour).Format(amzDateFormat))
		}, status: 403, typ: ErrInvalidSignature, msg: "Date in Credential scope does not match", reason: "scope-date"},
		{name: "bad terminator", cred: e.alice, mutate: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/aws4_request", "/aws5_request", 1))
		}, status: 403, typ: ErrInvalidSignature, msg: "terminator", reason: "scope-terminator"},
		{name: "host not signed", cred: e.alice, mutate: setSigned("content-length;content-type;x-amz-date;x-amz-target"),
			status: 403, typ: ErrInvalidSignature, msg: "'Host'", reason: "unsigned-host"},
		{name: "x-amz-date not signed", cred: e.alice, mutate: setSigned("content-length;content-type;host;x-amz-target"),
			status: 403, typ: ErrInvalidSignature, msg: "'X-Amz-Date'", reason: "unsigned-date"},
		{name: "token not signed", cred: role, mutate: setSigned("content-length;content-type;host;x-amz-date;x-amz-target"),
			status: 403, typ: ErrInvalidSignature, msg: "'X-Amz-Security-Token'", reason: "unsigned-token"},
		{name: "signed too long ago", cred: e.alice, skew: -6 * time.Minute,
			status: 403, typ: ErrInvalidSignature, msg: `^Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z \(\d{8}T\d{6}Z - 5 min\.\)$`, reason: "skew"},
		{name: "signed in the future", cred: e.alice, skew: 6 * time.Minute,
			status: 403, typ: ErrInvalidSignature, msg: `^Signature not yet current: .* \+ 5 min\.\)$`, reason: "skew"},
		{name: "fake clock moved ahead", cred: e.alice, before: func() { e.clock.Advance(10 * time.Minute) },
			status: 403, typ: ErrInvalidSignature, msg: "^Signature expired", reason: "skew"},
		{name: "unknown key", cred: bogus,
			status: 400, typ: ErrUnrecognizedClient, msg: `^The security token included in the request is invalid\.$`, reason: "unknown-key"},
		{name: "wrong session token", cred: wrongToken,
			status: 400, typ: ErrUnrecognizedClient, reason: "token-mismatch"},
		{name: "session token missing", cred: noToken,
			status: 400, typ: ErrUnrecognizedClient, reason: "token-mismatch"},
		{name: "token sent with long-term key", cred: tokenOnLongTerm,
			status: 400, typ: ErrUnrecognizedClient, reason: "token-mismatch"},
		{name: "wrong secret", cred: wrongSecret,
			status: 403, typ: ErrInvalidSignature, msg: "^The request signature we calculated does not match", reason: "signature-mismatch"},
		{name: "tampered body", cred: e.alice, mutate: func(r *http.Request) {
			b := []byte(`{"SessionId":"mallory-0123456789abcdef0"}`)
			r.Body, r.ContentLength = nopBody(b), int64(len(b))
		}, status: 403, typ: ErrInvalidSignature, reason: "signature-mismatch"},
		{name: "tampered signed header", cred: e.alice, mutate: func(r *http.Request) { r.Header.Set("X-Amz-Target", "AmazonSSM.StartSession") },
			status: 403, typ: ErrInvalidSignature, reason: "signature-mismatch"},
		{name: "tampered query", cred: e.alice, mutate: func(r *http.Request) { r.URL.RawQuery = "x=1" },
			status: 403, typ: ErrInvalidSignature, reason: "signature-mismatch"},
		{name: "tampered path", cred: e.alice, mutate: func(r *http.Request) { r.URL.Path = "/other" },
			status: 403, typ: ErrInvalidSignature, reason: "signature-mismatch"},
		{name: "expired StartSession", cred: role, op: "StartSession", before: func() { e.store.ExpireNow(role.AccessKeyID) },
			status: 400, typ: ErrExpiredToken, msg: `^The security token included in the request is expired$`, reason: "expired"},
		{name: "expired ResumeSession", cred: role, op: "ResumeSession", before: func() { e.store.ExpireNow(role.AccessKeyID) },
			status: 403, typ: ErrExpiredToken, reason: "expired"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			if r.op == "" {
				r.op = "TerminateSession"
			}
			if r.region == "" {
				r.region = e.store.Region()
			}
			if r.service == "" {
				r.service = "ssm"
			}
			before := e.store.Stats().SigV4FailureReasons[r.reason]
			var pre []func(*http.Request)
			if r.pre != nil {
				pre = append(pre, r.pre)
			}
			req := signedJSON(t, e.ssm.URL+"/", r.op, body, r.cred, r.service, r.region, e.clock.Now().Add(r.skew), pre...)
			if r.mutate != nil {
				r.mutate(req)
			}
			if r.before != nil {
				r.before()
			}
			status, m := do(t, req)
			if status != r.status {
				t.Fatalf("status %d, want %d (%v)", status, r.status, m)
			}
			if r.status == 200 {
				return
			}
			if m["__type"] != r.typ {
				t.Errorf("__type %q, want %q (message %q)", m["__type"], r.typ, m["message"])
			}
			if r.msg != "" && !regexp.MustCompile(r.msg).MatchString(m["message"]) {
				t.Errorf("message %q does not match %q", m["message"], r.msg)
			}
			if got := e.store.Stats().SigV4FailureReasons[r.reason]; got != before+1 {
				t.Errorf("SigV4FailureReasons[%s] = %d, want %d", r.reason, got, before+1)
			}
			for _, secret := range []string{r.cred.SecretAccessKey, role.SessionToken, role.SecretAccessKey} {
				if secret != "" && strings.Contains(m["message"], secret) {
					t.Errorf("error message leaks a secret")
				}
			}
		})
	}
}

func nopBody(b []byte) *readCloser { return &readCloser{strings.NewReader(string(b))} }

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

// TestSDKSeesExpiredToken checks what matters to ssmproxy's broker: the real
// SDK SSM client reports ExpiredTokenException with 403 for ResumeSession and
// 400 for StartSession, whether __type is bare or namespace-qualified, and
// the statuses are configurable.
func TestSDKSeesExpiredToken(t *testing.T) {
	for _, qualified := range []bool{false, true} {
		e := newEnv(t, Options{QualifiedErrorTypes: qualified, ExpiredStatus: map[string]int{"TerminateSession": 401}})
		role := e.assume(t, "alice")
		e.store.ExpireNow(role.AccessKeyID)
		cl := e.ssmClient(role)
		ctx := context.Background()
		_, errResume := cl.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: aws.String("alice-0123456789abcdef0")})
		_, errStart := cl.StartSession(ctx, &ssm.StartSessionInput{Target: aws.String("i-0123456789abcdef0")})
		_, errTerm := cl.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: aws.String("alice-0123456789abcdef0")})
		e.store.SetExpiredStatus("StartSession", 403)
		_, errStart2 := cl.StartSession(ctx, &ssm.StartSessionInput{Target: aws.String("i-0123456789abcdef0")})
		for _, c := range []struct {
			err    error
			status int
		}{{errResume, 403}, {errStart, 400}, {errTerm, 401}, {errStart2, 403}} {
			var ae smithy.APIError
			if !errors.As(c.err, &ae) || ae.ErrorCode() != "ExpiredTokenException" {
				t.Errorf("qualified=%v: error %v, want ExpiredTokenException", qualified, c.err)
				continue
			}
			if ae.ErrorMessage() != msgExpired {
				t.Errorf("qualified=%v: message %q", qualified, ae.ErrorMessage())
			}
			var re *awshttp.ResponseError
			if !errors.As(c.err, &re) || re.HTTPStatusCode() != c.status {
				t.Errorf("qualified=%v: status %v, want %d", qualified, c.err, c.status)
			}
		}
	}
}

// TestWriteJSONErrorShape pins the raw error body and headers.
func TestWriteJSONErrorShape(t *testing.T) {
	s := NewStore(Options{})
	apiErr := &APIError{Status: 403, Type: ErrExpiredToken, Message: msgExpired}
	for _, c := range []struct {
		qualified   bool
		typ, msgKey string
	}{
		{false, "ExpiredTokenException", "message"},
		{true, "com.amazon.coral.service#ExpiredTokenException", "Message"},
	} {
		s.SetQualifiedErrorTypes(c.qualified)
		rec := httptest.NewRecorder()
		s.WriteJSONError(rec, apiErr)
		var m map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if rec.Code != 403 || m["__type"] != c.typ || m[c.msgKey] != msgExpired || len(m) != 2 {
			t.Errorf("qualified=%v: %d %v", c.qualified, rec.Code, m)
		}
		if rec.Header().Get("x-amzn-RequestId") == "" || rec.Header().Get("Content-Type") != "application/x-amz-json-1.1" {
			t.Errorf("headers %v", rec.Header())
		}
	}
	s.SetQualifiedErrorTypes(true)
	rec := httptest.NewRecorder()
	s.WriteJSONError(rec, &APIError{Status: 400, Type: "TargetNotConnected", Message: "x"})
	if !strings.Contains(rec.Body.String(), `"com.amazonaws.ssm#TargetNotConnected"`) {
		t.Errorf("modeled error body %s", rec.Body.String())
	}
}

// upgradeServer stands in for the MGS relay: VerifyPresent, then upgrade.
func upgradeServer(t *testing.T, s *Store) *httptest.Server {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, apiErr, present := s.VerifyPresent(r, "ssmmessages")
		if apiErr != nil {
			s.WriteJSONError(w, apiErr)
			return
		}
		who := "unsigned"
		if present {
			who = c.ARN()
		}
		if !websocket.IsWebSocketUpgrade(r) {
			w.Header().Set("X-Who", who)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte(who))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWebsocketUpgradeSigned signs the upgrade the way ssm/channel.go does
// (SignHTTP of a GET of the StreamUrl, service ssmmessages, empty payload,
// headers copied into the websocket dial) and dials a real websocket.
func TestWebsocketUpgradeSigned(t *testing.T) {
	e := newEnv(t, Options{})
	role := e.assume(t, "alice@example.com")
	srv := upgradeServer(t, e.store)
	stream := strings.Replace(srv.URL, "http://", "ws://", 1) +
		"/v1/data-channel/alice@example.com-0123456789abcdef0?role=publish_subscribe&cell-number=AAEAA%2Bx%2F%3D%3D"

	dial := func(sign func(*http.Request), at time.Time) (string, int) {
		hu, _ := url.Parse(stream)
		hu.Scheme = "http"
		req, _ := http.NewRequest(http.MethodGet, hu.String(), nil)
		hdr := http.Header{}
		if sign != nil {
			creds := aws.Credentials{AccessKeyID: role.AccessKeyID, SecretAccessKey: role.SecretAccessKey, SessionToken: role.SessionToken}
			if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, emptySHA256, "ssmmessages", e.store.Region(), at); err != nil {
				t.Fatal(err)
			}
			sign(req)
			for _, k := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
				if v := req.Header.Get(k); v != "" {
					hdr.Set(k, v)
				}
			}
		}
		ws, resp, err := websocket.DefaultDialer.Dial(stream, hdr)
		if err != nil {
			if resp != nil {
				return "", resp.StatusCode
			}
			t.Fatal(err)
		}
		defer ws.Close()
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		return string(msg), 101
	}
	noop := func(*http.Request) {}
	if who, st := dial(noop, e.clock.Now()); st != 101 || who != role.ARN() {
		t.Fatalf("signed dial: %d %q", st, who)
	}
	if who, st := dial(nil, e.clock.Now()); st != 101 || who != "unsigned" {
		t.Fatalf("unsigned dial: %d %q", st, who)
	}
	if _, st := dial(noop, e.clock.Now().Add(-10*time.Minute)); st != 403 {
		t.Fatalf("stale signature: status %d, want 403", st)
	}
	e.store.ExpireNow(role.AccessKeyID)
	if _, st := dial(noop, e.clock.Now()); st != 400 {
		t.Fatalf("expired credential: status %d, want 400", st)
	}
}

// TestPresignedUpgrade accepts v4.Signer.PresignHTTP URLs (signature in the
// query) and enforces X-Amz-Expires and query integrity.
func TestPresignedUpgrade(t *testing.T) {
	e := newEnv(t, Options{})
	role := e.assume(t, "alice")
	srv := upgradeServer(t, e.store)
	presign := func(expires string, at time.Time) string {
		u := srv.URL + "/v1/data-channel/alice-0123456789abcdef0?role=publish_subscribe&cell-number=a+b%2Fc"
		if expires != "" {
			u += "&X-Amz-Expires=" + expires
		}
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		creds := aws.Credentials{AccessKeyID: role.AccessKeyID, SecretAccessKey: role.SecretAccessKey, SessionToken: role.SessionToken}
		signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, emptySHA256, "ssmmessages", e.store.Region(), at)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	get := func(u string) (int, string) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Who")
	}
	if st, who := get(presign("60", e.clock.Now())); st != 200 || who != role.ARN() {
		t.Fatalf("presigned: %d %q", st, who)
	}
	if st, who := get(presign("", e.clock.Now())); st != 200 || who != role.ARN() {
		t.Fatalf("presigned without X-Amz-Expires: %d %q", st, who)
	}
	if st, _ := get(presign("60", e.clock.Now().Add(-2*time.Minute))); st != 403 {
		t.Fatalf("presigned past X-Amz-Expires: status %d, want 403", st)
	}
	if st, _ := get(strings.Replace(presign("60", e.clock.Now()), "role=publish_subscribe", "role=subscribe", 1)); st != 403 {
		t.Fatalf("tampered presigned query: status %d, want 403", st)
	}
	if st, _ := get(strings.Replace(presign("60", e.clock.Now()), "X-Amz-Security-Token=", "X-Amz-Security-Token=A", 1)); st != 400 {
		t.Fatalf("presigned with wrong token: status %d, want 400", st)
	}
	// Presigned query and Authorization header together are refused.
	req, _ := http.NewRequest(http.MethodGet, presign("60", e.clock.Now()), nil)
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
	if st, m := do(t, req); st != 400 || m["__type"] != ErrIncompleteSignature {
		t.Fatalf("two mechanisms: %d %v", st, m)
	}
}

// TestVerifyPresentUnsigned: no Authorization header and no presigning
// means "not signed", not an error.
func TestVerifyPresentUnsigned(t *testing.T) {
	s := NewStore(Options{})
	r := httptest.NewRequest(http.MethodGet, "/v1/data-channel/x?role=publish_subscribe", nil)
	if _, err, present := s.VerifyPresent(r, "ssmmessages"); present || err != nil {
		t.Fatalf("present=%v err=%v", present, err)
	}
	r.Header.Set("Authorization", "")
	if _, err, present := s.VerifyPresent(r, "ssmmessages"); !present || err == nil || err.Type != ErrIncompleteSignature {
		t.Fatalf("empty Authorization: present=%v err=%v", present, err)
	}
}

// TestCanonicalURIEncoding exercises path and query characters the SDK
// double-encodes or normalizes.
func TestCanonicalURIEncoding(t *testing.T) {
	e := newEnv(t, Options{})
	base, _ := url.Parse(e.ssm.URL)
	for _, c := range []struct{ path, rawPath, query string }{
		{"", "", ""},
		{"/", "", ""},
		{"/a b/c", "", ""},
		{"/v1/data-channel/x@y=z,w+q", "", "role=publish_subscribe&cell-number=a+b%2F%3D"},
		{"/a/b/c", "/a%2Fb/c", "k=v&k=a&b=&c"},
		{"/ü/~._-", "", "z=%E2%9C%93&a=1"},
	} {
		u := *base
		u.Path, u.RawPath, u.RawQuery = c.path, c.rawPath, c.query
		req := signedJSON(t, u.String(), "TerminateSession", []byte(`{}`), e.alice, "ssm", e.store.Region(), e.clock.Now())
		if st, m := do(t, req); st != 200 {
			t.Errorf("url %q: %d %v", u.String(), st, m)
		}
	}
}

package iam

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
)

// wantSTSError asserts the SDK surfaced an STS error with this code, status
// and (substring of) message.
func wantSTSError(t *testing.T, err error, code string, status int, msg string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v, want %s", err, code)
	}
	if ae.ErrorCode() != code || !strings.Contains(ae.ErrorMessage(), msg) {
		t.Fatalf("got %s %q, want %s containing %q", ae.ErrorCode(), ae.ErrorMessage(), code, msg)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != status {
		t.Fatalf("status of %v, want %d", err, status)
	}
}

func (e *testEnv) getSessionToken(t *testing.T, in *sts.GetSessionTokenInput) Credential {
	t.Helper()
	out, err := e.stsClient(e.alice).GetSessionToken(context.Background(), in)
	if err != nil {
		t.Fatalf("GetSessionToken: %v", err)
	}
	return fromSTS(t, e, out.Credentials.AccessKeyId)
}

func TestGetSessionToken(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	now := e.clock.Now()

	out, err := e.stsClient(e.alice).GetSessionToken(ctx, &sts.GetSessionTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	c := fromSTS(t, e, out.Credentials.AccessKeyId)
	if !c.Temporary() || c.MFA || c.ParentKeyID != e.alice.AccessKeyID || c.Principal != e.alice.Principal {
		t.Errorf("issued %v", c)
	}
	if !out.Credentials.Expiration.Equal(now.Add(12*time.Hour)) || !c.Expires.Equal(now.Add(12*time.Hour)) {
		t.Errorf("default lifetime: SDK sees %v, store %v, want %v", out.Credentials.Expiration, c.Expires, now.Add(12*time.Hour))
	}
	if aws.ToString(out.Credentials.SecretAccessKey) != c.SecretAccessKey || aws.ToString(out.Credentials.SessionToken) != c.SessionToken {
		t.Error("SDK parsed different secrets than the store holds")
	}
	if !strings.HasPrefix(c.AccessKeyID, "ASIA") || len(c.AccessKeyID) != 20 || len(c.SecretAccessKey) != 40 || len(c.SessionToken) < 300 {
		t.Errorf("key shapes: %q, secret %d, token %d", c.AccessKeyID, len(c.SecretAccessKey), len(c.SessionToken))
	}

	mfa := e.getSessionToken(t, &sts.GetSessionTokenInput{DurationSeconds: aws.Int32(129600), SerialNumber: aws.String(mfaSerial), TokenCode: aws.String("123456")})
	if !mfa.MFA || !mfa.Expires.Equal(now.Add(36*time.Hour)) {
		t.Errorf("MFA session %v", mfa)
	}
	who, err := e.stsClient(mfa).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(who.Arn) != "arn:aws:iam::123456789012:user/alice" || aws.ToString(who.Account) != "123456789012" ||
		!strings.HasPrefix(aws.ToString(who.UserId), "AIDA") {
		t.Errorf("caller identity %s %s %s", aws.ToString(who.Arn), aws.ToString(who.UserId), aws.ToString(who.Account))
	}

	for _, c := range []struct {
		name   string
		in     *sts.GetSessionTokenInput
		code   string
		status int
		msg    string
	}{
		{"too short", &sts.GetSessionTokenInput{DurationSeconds: aws.Int32(899)}, "ValidationError", 400, "greater than or equal to 900"},
		{"too long", &sts.GetSessionTokenInput{DurationSeconds: aws.Int32(129601)}, "ValidationError", 400, "less than or equal to 129600"},
		{"wrong code", &sts.GetSessionTokenInput{SerialNumber: aws.String(mfaSerial), TokenCode: aws.String("654321")},
			"AccessDenied", 403, "MultiFactorAuthentication failed with invalid MFA one time pass code."},
		{"unregistered device", &sts.GetSessionTokenInput{SerialNumber: aws.String("arn:aws:iam::123456789012:mfa/bob"), TokenCode: aws.String("123456")},
			"AccessDenied", 403, "MultiFactorAuthentication failed with invalid MFA one time pass code."},
		{"serial without code", &sts.GetSessionTokenInput{SerialNumber: aws.String(mfaSerial)},
			"AccessDenied", 403, "must provide both MFA serial number and one time pass code"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.stsClient(e.alice).GetSessionToken(ctx, c.in)
			wantSTSError(t, err, c.code, c.status, c.msg)
		})
	}

	t.Run("refused with session credentials", func(t *testing.T) {
		_, err := e.stsClient(mfa).GetSessionToken(ctx, &sts.GetSessionTokenInput{})
		wantSTSError(t, err, "AccessDenied", 403, "Cannot call GetSessionToken with session credentials")
	})
}

func TestAssumeRole(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	now := e.clock.Now()
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:ResumeSession","Resource":"*"}]}`
	out, err := e.stsClient(e.alice).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String(e.store.RoleARN("ssmproxy")),
		RoleSessionName: aws.String("alice"),
		Policy:          aws.String(policy),
		PolicyArns:      []types.PolicyDescriptorType{{Arn: aws.String("arn:aws:iam::aws:policy/ReadOnlyAccess")}},
		SourceIdentity:  aws.String("alice"),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := fromSTS(t, e, out.Credentials.AccessKeyId)
	wantARN := "arn:aws:sts::123456789012:assumed-role/ssmproxy/alice"
	if aws.ToString(out.AssumedRoleUser.Arn) != wantARN || c.ARN() != wantARN {
		t.Errorf("ARN %q / %q", aws.ToString(out.AssumedRoleUser.Arn), c.ARN())
	}
	if id := aws.ToString(out.AssumedRoleUser.AssumedRoleId); !strings.HasPrefix(id, "AROA") || !strings.HasSuffix(id, ":alice") || id != c.UserID {
		t.Errorf("AssumedRoleId %q", id)
	}
	if !c.Expires.Equal(now.Add(time.Hour)) || !out.Credentials.Expiration.Equal(c.Expires) {
		t.Errorf("default lifetime %v", c.Expires.Sub(now))
	}
	wantPacked := int32((100*(len(policy)+packedARNUnits) + 2047) / 2048)
	if out.PackedPolicySize == nil || *out.PackedPolicySize != wantPacked {
		t.Errorf("PackedPolicySize %v, want %d", out.PackedPolicySize, wantPacked)
	}
	if aws.ToString(out.SourceIdentity) != "alice" || c.SourceIdentity != "alice" || c.SessionPolicy != policy ||
		len(c.SessionPolicyARNs) != 1 || c.Principal.SessionIDPrefix() != "alice" || c.BaseUser != "alice" {
		t.Errorf("issued %v", c)
	}

	// Without a session policy there is no PackedPolicySize; 12 h is fine
	// for a role with MaxSession 12 h when not chained.
	out, err = e.stsClient(e.alice).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(e.store.RoleARN("ssmproxy")), RoleSessionName: aws.String("s-1"), DurationSeconds: aws.Int32(43200),
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.PackedPolicySize != nil || !out.Credentials.Expiration.Equal(now.Add(12*time.Hour)) {
		t.Errorf("packed %v, expiration %v", out.PackedPolicySize, out.Credentials.Expiration)
	}

	e.store.AddRole(Role{Name: "short"})
	for _, c := range []struct {
		name   string
		in     sts.AssumeRoleInput
		code   string
		status int
		msg    string
	}{
		{"duration over role max", sts.AssumeRoleInput{RoleArn: aws.String(e.store.RoleARN("short")), DurationSeconds: aws.Int32(3601)},
			"ValidationError", 400, "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."},
		{"duration over 12h", sts.AssumeRoleInput{DurationSeconds: aws.Int32(43201)}, "ValidationError", 400, "less than or equal to 43200"},
		{"duration under 15m", sts.AssumeRoleInput{DurationSeconds: aws.Int32(899)}, "ValidationError", 400, "greater than or equal to 900"},
		{"unknown role", sts.AssumeRoleInput{RoleArn: aws.String(e.store.RoleARN("nope"))}, "AccessDenied", 403,
			"User: arn:aws:iam::123456789012:user/alice is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/nope"},
		{"other account", sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::999999999999:role/ssmproxy")}, "AccessDenied", 403, "not authorized"},
		{"session name too short", sts.AssumeRoleInput{RoleSessionName: aws.String("a")}, "ValidationError", 400, "roleSessionName"},
		{"session name too long", sts.AssumeRoleInput{RoleSessionName: aws.String(strings.Repeat("a", 65))}, "ValidationError", 400, "less than or equal to 64"},
		{"session name pattern", sts.AssumeRoleInput{RoleSessionName: aws.String("alice smith")}, "ValidationError", 400, `[\w+=,.@-]*`},
		{"source identity pattern", sts.AssumeRoleInput{SourceIdentity: aws.String("a/b")}, "ValidationError", 400, "sourceIdentity"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := c.in
			if in.RoleArn == nil {
				in.RoleArn = aws.String(e.store.RoleARN("ssmproxy"))
			}
			if in.RoleSessionName == nil {
				in.RoleSessionName = aws.String("alice")
			}
			_, err := e.stsClient(e.alice).AssumeRole(ctx, &in)
			wantSTSError(t, err, c.code, c.status, c.msg)
		})
	}

	t.Run("session name required", func(t *testing.T) {
		st, body := e.rawSTS(t, e.alice, url.Values{"Action": {"AssumeRole"}, "Version": {"2011-06-15"}, "RoleArn": {e.store.RoleARN("ssmproxy")}})
		if st != 400 || !strings.Contains(body, "<Code>ValidationError</Code>") || !strings.Contains(body, "Value null at &#39;roleSessionName&#39;") {
			t.Fatalf("%d %s", st, body)
		}
	})
}

func TestRoleChaining(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	session := e.getSessionToken(t, &sts.GetSessionTokenInput{})
	role := e.assume(t, "alice")
	for _, parent := range []Credential{session, role} {
		cl := e.stsClient(parent)
		_, err := cl.AssumeRole(ctx, &sts.AssumeRoleInput{
			RoleArn: aws.String(e.store.RoleARN("ssmproxy")), RoleSessionName: aws.String("alice"), DurationSeconds: aws.Int32(3601),
		})
		wantSTSError(t, err, "ValidationError", 400, "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
		out, err := cl.AssumeRole(ctx, &sts.AssumeRoleInput{
			RoleArn: aws.String(e.store.RoleARN("ssmproxy")), RoleSessionName: aws.String("alice"), DurationSeconds: aws.Int32(3600),
		})
		if err != nil {
			t.Fatalf("chained 1h from %s: %v", parent.Principal, err)
		}
		if c := fromSTS(t, e, out.Credentials.AccessKeyId); c.ParentKeyID != parent.AccessKeyID || c.BaseUser != "alice" {
			t.Errorf("chained %v", c)
		}
	}
}

func TestMFA(t *testing.T) {
	e := newEnv(t, Options{MFAValid: func(serial, code string) bool { return serial == mfaSerial && code == "111111" }})
	e.store.AddRole(Role{Name: "admin", RequireMFA: true})
	ctx := context.Background()
	admin := aws.String(e.store.RoleARN("admin"))

	_, err := e.stsClient(e.alice).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: admin, RoleSessionName: aws.String("alice")})
	wantSTSError(t, err, "AccessDenied", 403, "is not authorized to perform: sts:AssumeRole on resource: "+*admin)

	_, err = e.stsClient(e.alice).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: admin, RoleSessionName: aws.String("alice"),
		SerialNumber: aws.String(mfaSerial), TokenCode: aws.String("123456")})
	wantSTSError(t, err, "AccessDenied", 403, "MultiFactorAuthentication failed with invalid MFA one time pass code.")

	// Option B: direct AssumeRole with MFA.
	out, err := e.stsClient(e.alice).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: admin, RoleSessionName: aws.String("alice"),
		SerialNumber: aws.String(mfaSerial), TokenCode: aws.String("111111")})
	if err != nil {
		t.Fatal(err)
	}
	if c := fromSTS(t, e, out.Credentials.AccessKeyId); !c.MFA {
		t.Errorf("direct MFA role session lacks MFA: %v", c)
	}

	// Option A: an MFA session from GetSessionToken passes on its MFA to the
	// chained role session, which needs no code of its own; so does the
	// next link.
	mfaSession := e.getSessionToken(t, &sts.GetSessionTokenInput{SerialNumber: aws.String(mfaSerial), TokenCode: aws.String("111111")})
	out, err = e.stsClient(mfaSession).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: admin, RoleSessionName: aws.String("alice")})
	if err != nil {
		t.Fatal(err)
	}
	child := fromSTS(t, e, out.Credentials.AccessKeyId)
	out, err = e.stsClient(child).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: admin, RoleSessionName: aws.String("alice")})
	if err != nil {
		t.Fatal(err)
	}
	if grandchild := fromSTS(t, e, out.Credentials.AccessKeyId); !child.MFA || !grandchild.MFA {
		t.Errorf("MFA not inherited: child %v grandchild %v", child.MFA, grandchild.MFA)
	}

	// A plain session is not an MFA session.
	plain := e.getSessionToken(t, &sts.GetSessionTokenInput{})
	_, err = e.stsClient(plain).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: admin, RoleSessionName: aws.String("alice")})
	wantSTSError(t, err, "AccessDenied", 403, "not authorized")
}

func TestTrustedUsers(t *testing.T) {
	e := newEnv(t, Options{})
	e.store.AddRole(Role{Name: "alices", TrustedUsers: []string{"alice"}})
	bob := e.store.AddUser("bob")
	ctx := context.Background()
	in := &sts.AssumeRoleInput{RoleArn: aws.String(e.store.RoleARN("alices")), RoleSessionName: aws.String("x1")}
	if _, err := e.stsClient(e.alice).AssumeRole(ctx, in); err != nil {
		t.Fatal(err)
	}
	_, err := e.stsClient(bob).AssumeRole(ctx, in)
	wantSTSError(t, err, "AccessDenied", 403, "User: arn:aws:iam::123456789012:user/bob is not authorized")
	// Trust follows the base user down a chain.
	if _, err := e.stsClient(e.assume(t, "alice")).AssumeRole(ctx, in); err != nil {
		t.Fatalf("chained from alice: %v", err)
	}
}

func TestSessionPolicyLimits(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	pad := func(n int) string { // a valid policy of exactly n characters
		base := `{"Version":"2012-10-17","Statement":[{"Sid":"","Effect":"Allow","Action":"ssm:StartSession","Resource":"*"}]}`
		return strings.Replace(base, `"Sid":""`, `"Sid":"`+strings.Repeat("a", n-len(base))+`"`, 1)
	}
	arns := func(n int) []types.PolicyDescriptorType {
		var out []types.PolicyDescriptorType
		for i := 0; i < n; i++ {
			out = append(out, types.PolicyDescriptorType{Arn: aws.String("arn:aws:iam::123456789012:policy/p" + strconv.Itoa(i))})
		}
		return out
	}
	assume := func(policy *string, a []types.PolicyDescriptorType) (*sts.AssumeRoleOutput, error) {
		return e.stsClient(e.alice).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(e.store.RoleARN("ssmproxy")),
			RoleSessionName: aws.String("alice"), Policy: policy, PolicyArns: a})
	}
	small, err := assume(aws.String(pad(200)), nil)
	if err != nil {
		t.Fatal(err)
	}
	full, err := assume(aws.String(pad(2048)), nil)
	if err != nil {
		t.Fatalf("2048-character policy: %v", err)
	}
	if *small.PackedPolicySize >= *full.PackedPolicySize || *full.PackedPolicySize != 100 {
		t.Errorf("PackedPolicySize small %d, full %d", *small.PackedPolicySize, *full.PackedPolicySize)
	}
	_, err = assume(aws.String(pad(2049)), nil)
	wantSTSError(t, err, "ValidationError", 400, "Member must have length less than or equal to 2048")
	_, err = assume(aws.String(`{"Statement":[`), nil)
	wantSTSError(t, err, "MalformedPolicyDocument", 400, "The policy is not in the valid JSON format.")
	_, err = assume(aws.String(`{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}`), nil)
	wantSTSError(t, err, "MalformedPolicyDocument", 400, "Syntax errors in policy.")
	if _, err = assume(nil, arns(10)); err != nil {
		t.Fatalf("10 policy ARNs: %v", err)
	}
	_, err = assume(nil, arns(11))
	wantSTSError(t, err, "ValidationError", 400, "Member must have length less than or equal to 10")
	_, err = assume(aws.String(pad(2048)), arns(1))
	wantSTSError(t, err, "PackedPolicyTooLarge", 400, "Packed size")
}

func TestSourceIdentity(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	role := aws.String(e.store.RoleARN("ssmproxy"))
	out, err := e.stsClient(e.alice).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: role, RoleSessionName: aws.String("alice"), SourceIdentity: aws.String("alice")})
	if err != nil {
		t.Fatal(err)
	}
	first := fromSTS(t, e, out.Credentials.AccessKeyId)

	// Inherited when the chained call omits it.
	out, err = e.stsClient(first).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: role, RoleSessionName: aws.String("alice")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.SourceIdentity) != "alice" || fromSTS(t, e, out.Credentials.AccessKeyId).SourceIdentity != "alice" {
		t.Errorf("not inherited: %q", aws.ToString(out.SourceIdentity))
	}
	// Repeating the same value is fine; changing it is not.
	if _, err = e.stsClient(first).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: role, RoleSessionName: aws.String("alice"), SourceIdentity: aws.String("alice")}); err != nil {
		t.Fatal(err)
	}
	_, err = e.stsClient(first).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: role, RoleSessionName: aws.String("alice"), SourceIdentity: aws.String("mallory")})
	wantSTSError(t, err, "ValidationError", 400, "cannot be changed")
}

func TestGetFederationToken(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	now := e.clock.Now()
	policy := `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["ssm:StartSession"],"Resource":"*"}}`
	out, err := e.stsClient(e.alice).GetFederationToken(ctx, &sts.GetFederationTokenInput{Name: aws.String("alice-fed"), Policy: aws.String(policy)})
	if err != nil {
		t.Fatal(err)
	}
	c := fromSTS(t, e, out.Credentials.AccessKeyId)
	if aws.ToString(out.FederatedUser.Arn) != "arn:aws:sts::123456789012:federated-user/alice-fed" ||
		aws.ToString(out.FederatedUser.FederatedUserId) != "123456789012:alice-fed" || out.PackedPolicySize == nil {
		t.Errorf("federated user %s %s %v", aws.ToString(out.FederatedUser.Arn), aws.ToString(out.FederatedUser.FederatedUserId), out.PackedPolicySize)
	}
	if c.MFA || c.SessionPolicy != policy || !c.Expires.Equal(now.Add(12*time.Hour)) || c.Principal.SessionIDPrefix() != "alice-fed" {
		t.Errorf("issued %v", c)
	}
	who, err := e.stsClient(c).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || aws.ToString(who.Arn) != c.ARN() || aws.ToString(who.UserId) != "123456789012:alice-fed" {
		t.Errorf("caller identity %v %v", who, err)
	}

	_, err = e.stsClient(c).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(e.store.RoleARN("ssmproxy")), RoleSessionName: aws.String("fed")})
	wantSTSError(t, err, "AccessDenied", 403, "federated-user/alice-fed is not authorized")
	_, err = e.stsClient(c).GetFederationToken(ctx, &sts.GetFederationTokenInput{Name: aws.String("again")})
	wantSTSError(t, err, "AccessDenied", 403, "Cannot call GetFederationToken with session credentials")
	_, err = e.stsClient(e.alice).GetFederationToken(ctx, &sts.GetFederationTokenInput{Name: aws.String(strings.Repeat("n", 33))})
	wantSTSError(t, err, "ValidationError", 400, "less than or equal to 32")
	_, err = e.stsClient(e.alice).GetFederationToken(ctx, &sts.GetFederationTokenInput{Name: aws.String("x1"), DurationSeconds: aws.Int32(129601)})
	wantSTSError(t, err, "ValidationError", 400, "less than or equal to 129600")

	// The SDK cannot send MFA parameters here; a hand-made request can.
	st, body := e.rawSTS(t, e.alice, url.Values{"Action": {"GetFederationToken"}, "Version": {"2011-06-15"}, "Name": {"x1"},
		"SerialNumber": {mfaSerial}, "TokenCode": {"123456"}})
	if st != 400 || !strings.Contains(body, "<Code>ValidationError</Code>") {
		t.Fatalf("MFA parameters accepted: %d %s", st, body)
	}
}

package fakeaws

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ec2instanceconnect"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"

	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

const otherInstance = "i-0fedcba9876543210"

func authorizedKey(t *testing.T, pub any) string {
	t.Helper()
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " someone@laptop"
}

func ed25519Key(t *testing.T) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return authorizedKey(t, pub)
}

// eicClient is the real SDK client, signing with c.
func eicClient(ts *TestServer, c *iam.Credential) *ec2instanceconnect.Client {
	return ec2instanceconnect.NewFromConfig(ts.AWSConfig(c), func(o *ec2instanceconnect.Options) {
		o.BaseEndpoint = aws.String(ts.URL())
		o.RetryMaxAttempts = 1
	})
}

func push(ts *TestServer, c *iam.Credential, instance, user, key string) error {
	out, err := eicClient(ts, c).SendSSHPublicKey(context.Background(), &ec2instanceconnect.SendSSHPublicKeyInput{
		InstanceId: aws.String(instance), InstanceOSUser: aws.String(user), SSHPublicKey: aws.String(key)})
	if err == nil && (!out.Success || out.RequestId == nil) {
		return errors.New("answer without Success and RequestId")
	}
	return err
}

func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestEICKeyValidation: the key types the service takes, and what it refuses
// with InvalidArgsException.
func TestEICKeyValidation(t *testing.T) {
	ts := StartTest(t, Options{})
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	privBlock, _ := ssh.MarshalPrivateKey(edPriv, "")
	private := string(pem.EncodeToMemory(privBlock))
	good := ed25519Key(t)
	fields := strings.Fields(good)
	for _, c := range []struct {
		name, key, code string
	}{
		{"ed25519", good, ""},
		{"ed25519 without comment", fields[0] + " " + fields[1], ""},
		{"rsa 2048", authorizedKey(t, &rsa2048.PublicKey), ""},
		{"rsa 1024", authorizedKey(t, &rsa1024.PublicKey), "InvalidArgsException"},
		{"ecdsa (undocumented)", authorizedKey(t, &ec.PublicKey), "InvalidArgsException"},
		{"private key", private, "InvalidArgsException"},
		{"private key on one line", strings.ReplaceAll(private, "\n", " "), "InvalidArgsException"},
		{"garbage", strings.Repeat("not a key ", 10), "InvalidArgsException"},
		{"type mismatch", "ssh-rsa " + fields[1] + " user@host", "InvalidArgsException"},
		{"options before the key", `command="/bin/sh" ` + good, "InvalidArgsException"},
		{"two lines", good + "\n" + good, "InvalidArgsException"},
		{"too short", "ssh-ed25519 AAAA", "ValidationException"},
	} {
		err := push(ts, nil, DefaultInstance, "ec2-user", c.key)
		if got := errCode(err); got != c.code {
			t.Errorf("%s: got %q (%v), want %q", c.name, got, err, c.code)
		}
	}
	if n := len(ts.PushedKeys()); n != 3 {
		t.Errorf("%d live keys, want the 3 accepted", n)
	}

	// The ECDSA variant.
	ts2 := StartTest(t, Options{EICAcceptECDSA: true})
	if err := push(ts2, nil, DefaultInstance, "ec2-user", authorizedKey(t, &ec.PublicKey)); err != nil {
		t.Errorf("ECDSA with EICAcceptECDSA: %v", err)
	}
}

// TestEICRequestChecks: the model's constraints, unknown instances, SigV4.
func TestEICRequestChecks(t *testing.T) {
	ts := StartTest(t, Options{})
	key := ed25519Key(t)
	for _, c := range []struct {
		name, instance, user, code string
	}{
		{"unknown instance", otherInstance, "ec2-user", "EC2InstanceNotFoundException"},
		{"managed instance", "mi-0123456789abcdef0", "ec2-user", "ValidationException"},
		{"bad user", DefaultInstance, "no spaces", "ValidationException"},
		{"long user", DefaultInstance, strings.Repeat("a", 33), "ValidationException"},
	} {
		if got := errCode(push(ts, nil, c.instance, c.user, key)); got != c.code {
			t.Errorf("%s: got %q, want %q", c.name, got, c.code)
		}
	}
	_, err := eicClient(ts, nil).SendSSHPublicKey(context.Background(), &ec2instanceconnect.SendSSHPublicKeyInput{
		InstanceId: aws.String(DefaultInstance), InstanceOSUser: aws.String("ec2-user"), SSHPublicKey: aws.String(key),
		AvailabilityZone: aws.String("us-east-1b")})
	if errCode(err) != "EC2InstanceNotFoundException" {
		t.Errorf("wrong zone: %v", err)
	}
	// A wrong secret fails SigV4.
	bad := ts.User
	bad.SecretAccessKey = strings.Repeat("x", 40)
	if got := errCode(push(ts, &bad, DefaultInstance, "ec2-user", key)); got != iam.ErrInvalidSignature {
		t.Errorf("bad secret: %q", got)
	}
	// Signed for another service, then for the right one, by hand.
	body := `{"InstanceId":"` + DefaultInstance + `","InstanceOSUser":"ec2-user","SSHPublicKey":"` + key + `"}`
	if status, got := rawEIC(t, ts, "ssm", body); status != 403 && !strings.Contains(got, iam.ErrInvalidSignature) {
		t.Errorf("signed for ssm: %d %s", status, got)
	}
	if status, got := rawEIC(t, ts, "ec2-instance-connect", body); status != 200 || !strings.Contains(got, `"Success":true`) {
		t.Errorf("signed by hand: %d %s", status, got)
	}
	if n := len(ts.PushedKeys()); n != 1 {
		t.Errorf("%d keys live, want only the hand-signed one", n)
	}
}

// rawEIC signs body for service with alice's key and posts it.
func rawEIC(t *testing.T, ts *TestServer, service, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL()+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "AWSEC2InstanceConnectService.SendSSHPublicKey")
	sum := sha256.Sum256([]byte(body))
	creds := aws.Credentials{AccessKeyID: ts.User.AccessKeyID, SecretAccessKey: ts.User.SecretAccessKey}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, ts.Region(), time.Now()); err != nil {
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

// TestEICSessionPolicy: a session policy with the broker's statement allows
// the push only for its instance and OS user (the ec2:osuser condition).
func TestEICSessionPolicy(t *testing.T) {
	ts := StartTest(t, Options{})
	ts.AddTarget(Target{ID: otherInstance, Connected: true})
	ts.IAM.AddRole(iam.Role{Name: "r"})
	policy := `{"Version":"2012-10-17","Statement":[{"Sid":"PushKey","Effect":"Allow",
	  "Action":"ec2-instance-connect:SendSSHPublicKey",
	  "Resource":"arn:aws:ec2:us-east-1:123456789012:instance/` + DefaultInstance + `",
	  "Condition":{"StringEquals":{"ec2:osuser":"ec2-user"}}}]}`
	scoped := assumeWithPolicy(t, ts, policy)
	noStatement := assumeWithPolicy(t, ts, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:StartSession","Resource":"*"}]}`)
	key := ed25519Key(t)
	for _, c := range []struct {
		name           string
		cred           *iam.Credential
		instance, user string
		code           string
	}{
		{"its instance and user", &scoped, DefaultInstance, "ec2-user", ""},
		{"another user", &scoped, DefaultInstance, "root", "AccessDeniedException"},
		{"another instance", &scoped, otherInstance, "ec2-user", "AccessDeniedException"},
		{"no statement", &noStatement, DefaultInstance, "ec2-user", "AccessDeniedException"},
		{"no session policy", nil, otherInstance, "root", ""},
	} {
		if got := errCode(push(ts, c.cred, c.instance, c.user, key)); got != c.code {
			t.Errorf("%s: got %q, want %q", c.name, got, c.code)
		}
	}
}

func assumeWithPolicy(t *testing.T, ts *TestServer, policy string) iam.Credential {
	t.Helper()
	out, err := sts.NewFromConfig(ts.AWSConfig(nil), func(o *sts.Options) { o.BaseEndpoint = aws.String(ts.URL()) }).
		AssumeRole(context.Background(), &sts.AssumeRoleInput{RoleArn: aws.String(ts.IAM.RoleARN("r")),
			RoleSessionName: aws.String("alice"), Policy: aws.String(policy)})
	if err != nil {
		t.Fatal(err)
	}
	c, ok := ts.IAM.Lookup(*out.Credentials.AccessKeyId)
	if !ok {
		t.Fatal("issued credential not in the store")
	}
	return c
}

// TestEICAuthorizedKeysFile: the file holds exactly the live keys of the
// configured user, mode 0600, one authorized_keys line each, and a key
// leaves it 60 s (fake clock) after its push.
func TestEICAuthorizedKeysFile(t *testing.T) {
	clk := clock.NewFake(time.Now())
	path := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(path, []byte("stale line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := StartTest(t, Options{Clock: clk, EICAuthorizedKeys: path, EICUser: "ec2-user"})
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); got != "" {
		t.Fatalf("file at start %q, want empty", got)
	}
	k1, k2, other := ed25519Key(t), ed25519Key(t), ed25519Key(t)
	if err := push(ts, nil, DefaultInstance, "ec2-user", k1); err != nil {
		t.Fatal(err)
	}
	if err := push(ts, nil, DefaultInstance, "root", other); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30 * time.Second)
	if err := push(ts, nil, DefaultInstance, "ec2-user", k2); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	lines := strings.Split(strings.TrimSuffix(read(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("file %q: want the 2 keys of ec2-user", read())
	}
	for i, k := range []string{k1, k2} {
		f := strings.Fields(k)
		if lines[i] != f[0]+" "+f[1]+" eic:"+DefaultInstance+":ec2-user" {
			t.Errorf("line %d %q", i, lines[i])
		}
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(lines[i])); err != nil || len(rest) != 0 {
			t.Errorf("line %d is not an authorized_keys line: %v", i, err)
		}
	}
	// 59 s after the first push both are still there; at 60 s the first goes.
	clk.Advance(29 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if n := strings.Count(read(), "\n"); n != 2 {
		t.Fatalf("at 59 s: %d lines", n)
	}
	clk.Advance(time.Second)
	if !WaitFor(5*time.Second, func() bool { return strings.Count(read(), "\n") == 1 }) {
		t.Fatalf("at 60 s: %q", read())
	}
	if !strings.Contains(read(), strings.Fields(k2)[1]) {
		t.Fatalf("the second key went first: %q", read())
	}
	clk.Advance(30 * time.Second)
	if !WaitFor(5*time.Second, func() bool { return read() == "" }) {
		t.Fatalf("at 90 s: %q", read())
	}
	if n := len(ts.PushedKeys()); n != 0 {
		t.Errorf("%d keys live after expiry", n)
	}
}

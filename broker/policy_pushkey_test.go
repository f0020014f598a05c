package broker

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// TestSessionPolicyPushKey: the SendSSHPublicKey statement is there only
// when a push is asked for, names exactly that instance and OS user, and the
// policy stays within STS's 2048 characters with the longest inputs.
func TestSessionPolicyPushKey(t *testing.T) {
	const inst = "i-0123456789abcdef0"
	base := Scope{Region: "us-east-1", Account: "123456789012", Target: inst}
	without, err := SessionPolicy(base, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(without, "ec2-instance-connect") || strings.Contains(without, "osuser") {
		t.Fatalf("a policy without a push allows one: %s", without)
	}
	withPush := base
	withPush.PushKeyUser = "ec2-user"
	p, err := SessionPolicy(withPush, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Statement []map[string]any
	}
	if err := json.Unmarshal([]byte(p), &doc); err != nil {
		t.Fatal(err)
	}
	var plain struct{ Statement []map[string]any }
	_ = json.Unmarshal([]byte(without), &plain)
	if len(doc.Statement) != len(plain.Statement)+1 {
		t.Fatalf("%d statements, want exactly one more than %d", len(doc.Statement), len(plain.Statement))
	}
	st := doc.Statement[len(doc.Statement)-1]
	b, _ := json.Marshal(st)
	want := `{"Action":"ec2-instance-connect:SendSSHPublicKey","Condition":{"StringEquals":{"ec2:osuser":"ec2-user"}},` +
		`"Effect":"Allow","Resource":"arn:aws:ec2:us-east-1:123456789012:instance/` + inst + `","Sid":"PushKeyForUser"}`
	if string(b) != want {
		t.Fatalf("statement\n%s\nwant\n%s", b, want)
	}
	// What the fake's evaluator (and IAM) make of it.
	arn := "arn:aws:ec2:us-east-1:123456789012:instance/"
	for _, c := range []struct {
		instance, user string
		want           bool
	}{
		{inst, "ec2-user", true},
		{inst, "root", false},
		{"i-0fedcba9876543210", "ec2-user", false},
	} {
		ok, err := iam.AllowedWith(p, "ec2-instance-connect:SendSSHPublicKey", arn+c.instance, map[string]string{"ec2:osuser": c.user})
		if err != nil || ok != c.want {
			t.Errorf("push to %s as %s: %v (%v), want %v", c.instance, c.user, ok, err, c.want)
		}
	}
	if ok, _ := iam.AllowedWith(without, "ec2-instance-connect:SendSSHPublicKey", arn+inst, map[string]string{"ec2:osuser": "ec2-user"}); ok {
		t.Error("the policy without a push allows it")
	}

	// Managed instances and an unscoped target cannot get the statement.
	for _, target := range []string{"mi-0123456789abcdef0", ""} {
		s := withPush
		s.Target = target
		if _, err := SessionPolicy(s, "alice"); err == nil {
			t.Errorf("target %q: a push statement was rendered", target)
		}
	}

	// The longest inputs: partition, region, a 128-character document ARN,
	// both forwarding documents, a 64-character session name, a 32-character
	// OS user.
	long := Scope{Partition: "aws-us-gov", Region: "us-gov-west-1", Account: "123456789012", Target: "i-0123456789abcdef0",
		Documents: []string{"arn:aws-us-gov:ssm:us-gov-west-1:210987654321:document/" + strings.Repeat("D", 128),
			"AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost"},
		PushKeyUser: "_" + strings.Repeat("u", 30) + "$"}
	lp, err := SessionPolicy(long, strings.Repeat("n", 64))
	if err != nil {
		t.Fatalf("longest inputs: %v", err)
	}
	t.Logf("policy sizes: %d without a push, %d with, %d with the longest inputs (limit %d)", len(without), len(p), len(lp), maxPolicyChars)
	if len(lp) > maxPolicyChars {
		t.Fatalf("%d characters", len(lp))
	}
}

// TestCacheKeyPushKeyUser: credentials minted for one push user (or none)
// are never found under another's key; entries without a push keep the key
// they had before the field existed.
func TestCacheKeyPushKeyUser(t *testing.T) {
	s := &settings{profile: "p", roleARN: "arn:aws:iam::123456789012:role/r", region: "us-east-1",
		scope: Scope{Account: "123456789012", Target: "i-0123456789abcdef0", Documents: []string{DefaultDocument}}}
	plain := s.cacheKey("src")
	if old := hashString("v2", "src", "p", s.roleARN, "us-east-1", "123456789012", "i-0123456789abcdef0", DefaultDocument, ""); plain != old {
		t.Fatalf("the key without a push changed: %s, was %s", plain, old)
	}
	s.scope.PushKeyUser = "ec2-user"
	ec2User := s.cacheKey("src")
	s.scope.PushKeyUser = "root"
	root := s.cacheKey("src")
	if ec2User == plain || root == plain || ec2User == root {
		t.Fatalf("keys collide: none %s, ec2-user %s, root %s", plain, ec2User, root)
	}
}

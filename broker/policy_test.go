package broker

import (
	"context"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// TestSessionPolicyPartitionAndDocuments: the ARNs use the role's partition;
// AWS-owned documents have an empty account, the account's own documents
// the role's account, and a document ARN is used as it is.
func TestSessionPolicyPartitionAndDocuments(t *testing.T) {
	part, acct, err := parseRoleARN("arn:aws-cn:iam::123456789012:role/ssm")
	if err != nil || part != "aws-cn" || acct != "123456789012" {
		t.Fatalf("parseRoleARN: %q %q %v", part, acct, err)
	}
	if _, _, err := parseRoleARN("arn:aws:iam::123456789012:user/alice"); err == nil {
		t.Fatal("a user ARN was accepted as a role")
	}
	cases := []struct {
		doc, want string
	}{
		{"", "arn:aws-cn:ssm:cn-north-1::document/AWS-StartSSHSession"},
		{"AWS-StartPortForwardingSession", "arn:aws-cn:ssm:cn-north-1::document/AWS-StartPortForwardingSession"},
		{"Team-SSH", "arn:aws-cn:ssm:cn-north-1:123456789012:document/Team-SSH"},
		{"arn:aws-cn:ssm:cn-north-1:210987654321:document/Shared", "arn:aws-cn:ssm:cn-north-1:210987654321:document/Shared"},
	}
	for _, c := range cases {
		p, err := SessionPolicy(Scope{Partition: part, Region: "cn-north-1", Account: acct, Target: "i-0123456789abcdef0", Documents: []string{c.doc}}, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p, `"`+c.want+`"`) {
			t.Errorf("document %q: policy lacks %s: %s", c.doc, c.want, p)
		}
		for _, want := range []string{"arn:aws-cn:ec2:cn-north-1:123456789012:instance/i-0123456789abcdef0",
			"arn:aws-cn:ssm:cn-north-1:123456789012:session/alice-*"} {
			if !strings.Contains(p, want) {
				t.Errorf("policy lacks %s: %s", want, p)
			}
		}
		if strings.Contains(p, "arn:aws:") {
			t.Errorf("policy names the aws partition: %s", p)
		}
	}
}

// TestLookupScope: a broker asked for the lookup scope mints credentials
// whose policy allows the two describe calls and nothing else, the session
// scope's credentials cannot describe, and the shared cache keeps the two
// apart (docs/credentials.md 6.1). The fake's own evaluator judges both.
func TestLookupScope(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	lookup := e.preparedBroker(func(o *Options) { o.Lookup = true })
	session := e.preparedBroker()
	lc, err := lookup.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := session.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if lc.AccessKeyID == sc.AccessKeyID || e.sts("AssumeRole") != 2 {
		t.Fatalf("one set of credentials served both scopes (AssumeRole %d)", e.sts("AssumeRole"))
	}
	policyOf := func(akid string) string {
		c, ok := e.ts.IAM.Lookup(akid)
		if !ok || c.SessionPolicy == "" {
			t.Fatalf("minted credentials without a session policy")
		}
		return c.SessionPolicy
	}
	instance := "arn:aws:ec2:us-east-1:123456789012:instance/" + testTarget
	checks := []struct {
		policy, action, resource string
		want                     bool
	}{
		{policyOf(lc.AccessKeyID), "ssm:DescribeInstanceInformation", "*", true},
		{policyOf(lc.AccessKeyID), "ec2:DescribeInstances", "*", true},
		{policyOf(lc.AccessKeyID), "ssm:StartSession", instance, false},
		{policyOf(lc.AccessKeyID), "ssm:StartSession", "arn:aws:ssm:us-east-1::document/AWS-StartSSHSession", false},
		{policyOf(lc.AccessKeyID), "ssmmessages:OpenDataChannel", "arn:aws:ssm:us-east-1:123456789012:session/alice-x", false},
		{policyOf(sc.AccessKeyID), "ssm:StartSession", instance, true},
		{policyOf(sc.AccessKeyID), "ssm:DescribeInstanceInformation", "*", false},
		{policyOf(sc.AccessKeyID), "ec2:DescribeInstances", "*", false},
	}
	for _, c := range checks {
		if got, err := iam.Allowed(c.policy, c.action, c.resource); err != nil || got != c.want {
			t.Errorf("%s on %s: allowed=%v (%v), want %v", c.action, c.resource, got, err, c.want)
		}
	}
	// Another process asking for each scope is served from the cache, each
	// its own entry, with no new mint.
	again := e.preparedBroker(func(o *Options) { o.Lookup = true })
	if c, err := again.Retrieve(context.Background()); err != nil || c.AccessKeyID != lc.AccessKeyID {
		t.Fatalf("lookup scope from the cache: %v", err)
	}
	if c, err := e.preparedBroker().Retrieve(context.Background()); err != nil || c.AccessKeyID != sc.AccessKeyID {
		t.Fatalf("session scope from the cache: %v", err)
	}
	if e.sts("AssumeRole") != 2 {
		t.Fatalf("AssumeRole %d, want 2", e.sts("AssumeRole"))
	}
	var lookups int
	for _, es := range session.Status(context.Background()).Entries {
		if es.Lookup {
			lookups++
		}
	}
	if lookups != 1 {
		t.Fatalf("status shows %d lookup entries, want 1", lookups)
	}
}

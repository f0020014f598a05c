package broker

import (
	"strings"
	"testing"
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

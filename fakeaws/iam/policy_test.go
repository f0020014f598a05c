package iam

import (
	"strings"
	"testing"
)

// brokerPolicy is docs/credentials.md section 6 with the placeholders filled in.
const brokerPolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    { "Sid": "StartSshOnTargets", "Effect": "Allow", "Action": "ssm:StartSession",
      "Resource": [
        "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0",
        "arn:aws:ssm:us-east-1::document/AWS-StartSSHSession" ],
      "Condition": { "BoolIfExists": { "ssm:SessionDocumentAccessCheck": "true" } } },
    { "Sid": "OwnDataChannel", "Effect": "Allow", "Action": "ssmmessages:OpenDataChannel",
      "Resource": "arn:aws:ssm:us-east-1:123456789012:session/alice-*" },
    { "Sid": "ResumeTerminateOwn", "Effect": "Allow",
      "Action": [ "ssm:ResumeSession", "ssm:TerminateSession" ],
      "Resource": "arn:aws:ssm:us-east-1:123456789012:session/alice-*" }
  ]
}`

const (
	ownSession   = "arn:aws:ssm:us-east-1:123456789012:session/alice-0123456789abcdef0"
	otherSession = "arn:aws:ssm:us-east-1:123456789012:session/bob-0123456789abcdef0"
)

func TestAllowed(t *testing.T) {
	wildcards := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Action":"ssm:*","Resource":"*"},
	  {"Effect":"Allow","Action":"ssmmessages:Open?ataChannel","Resource":"arn:aws:ssm:*:*:session/alice-*"},
	  {"Effect":"Deny","Action":"ssm:TerminateSession","Resource":"arn:aws:ssm:*:*:session/bob-*"}]}`
	conditions := `{"Statement":[
	  {"Effect":"Allow","Action":"ssm:StartSession","Resource":"*","Condition":{"StringEquals":{"aws:username":"alice"}}},
	  {"Effect":"Allow","Action":"ssm:ResumeSession","Resource":"*","Condition":{"BoolIfExists":{"ssm:SessionDocumentAccessCheck":"false"}}},
	  {"Effect":"Allow","Action":"ssm:TerminateSession","Resource":"*","Condition":{"Bool":{"ssm:SessionDocumentAccessCheck":true}}},
	  {"Effect":"Allow","Action":"ssm:GetDocument","Resource":"*"},
	  {"Effect":"Deny","Action":"ssm:GetDocument","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}`
	notAction := `{"Statement":{"Effect":"Allow","NotAction":"ssm:SendCommand","NotResource":"arn:aws:ec2:*:*:instance/i-prod*"}}`

	for _, c := range []struct {
		name, policy, action, resource string
		want                           bool
	}{
		{"allowed target", brokerPolicy, "ssm:StartSession", "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0", true},
		{"other target", brokerPolicy, "ssm:StartSession", "arn:aws:ec2:us-east-1:123456789012:instance/i-0fffffffffffffff0", false},
		{"allowed document", brokerPolicy, "ssm:StartSession", "arn:aws:ssm:us-east-1::document/AWS-StartSSHSession", true},
		{"other document", brokerPolicy, "ssm:StartSession", "arn:aws:ssm:us-east-1::document/AWS-StartPortForwardingSession", false},
		{"shell document", brokerPolicy, "ssm:StartSession", "arn:aws:ssm:us-east-1:123456789012:document/SSM-SessionManagerRunShell", false},
		{"resume own session", brokerPolicy, "ssm:ResumeSession", ownSession, true},
		{"terminate own session", brokerPolicy, "ssm:TerminateSession", ownSession, true},
		{"data channel own session", brokerPolicy, "ssmmessages:OpenDataChannel", ownSession, true},
		{"resume other prefix", brokerPolicy, "ssm:ResumeSession", otherSession, false},
		{"terminate other prefix", brokerPolicy, "ssm:TerminateSession", otherSession, false},
		{"data channel other prefix", brokerPolicy, "ssmmessages:OpenDataChannel", otherSession, false},
		{"prefix needs the hyphen", brokerPolicy, "ssm:ResumeSession", "arn:aws:ssm:us-east-1:123456789012:session/alicex-0123456789abcdef0", false},
		{"other account", brokerPolicy, "ssm:ResumeSession", "arn:aws:ssm:us-east-1:999999999999:session/alice-0123456789abcdef0", false},
		{"action is case-insensitive", brokerPolicy, "SSM:resumesession", ownSession, true},
		{"resource is case-sensitive", brokerPolicy, "ssm:ResumeSession", strings.Replace(ownSession, "alice", "Alice", 1), false},
		{"unlisted action", brokerPolicy, "ssm:SendCommand", "*", false},
		{"no policy", "", "ssm:SendCommand", "*", true},
		{"blank policy", "  \n", "ssm:SendCommand", "*", true},
		{"service wildcard", wildcards, "ssm:DescribeInstanceInformation", "*", true},
		{"service wildcard is not a prefix of ssmmessages", wildcards, "ssmmessages:OpenDataChannel", otherSession, false},
		{"question mark", wildcards, "ssmmessages:OpenDataChannel", ownSession, true},
		{"deny wins", wildcards, "ssm:TerminateSession", otherSession, false},
		{"deny is narrow", wildcards, "ssm:TerminateSession", ownSession, true},
		{"unknown condition fails closed", conditions, "ssm:StartSession", "*", false},
		{"document check false does not hold", conditions, "ssm:ResumeSession", "*", false},
		{"Bool document check true holds", conditions, "ssm:TerminateSession", "*", true},
		{"deny with unknown condition denies", conditions, "ssm:GetDocument", "*", false},
		{"NotAction", notAction, "ssm:StartSession", "arn:aws:ec2:us-east-1:123456789012:instance/i-dev1", true},
		{"NotAction excludes", notAction, "ssm:SendCommand", "arn:aws:ec2:us-east-1:123456789012:instance/i-dev1", false},
		{"NotResource excludes", notAction, "ssm:StartSession", "arn:aws:ec2:us-east-1:123456789012:instance/i-prod1", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Allowed(c.policy, c.action, c.resource)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("Allowed(%s, %s) = %v, want %v", c.action, c.resource, got, c.want)
			}
		})
	}
}

func TestAllowedMalformed(t *testing.T) {
	for _, p := range []string{
		`not json`,
		`[]`,
		`{"Statement":[]}`,
		`{"Version":"2012-10-17"}`,
		`{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}`,
		`{"Statement":{"Effect":"allow","Action":"*","Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*","NotAction":"x","Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":7,"Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Principal":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":"x"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}} {}`,
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Extra":1}}`,
	} {
		if ok, err := Allowed(p, "ssm:StartSession", "*"); err == nil || ok {
			t.Errorf("%s: allowed=%v err=%v", p, ok, err)
		}
	}
	if err := ValidatePolicy(brokerPolicy); err != nil {
		t.Errorf("broker policy rejected: %v", err)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*c", "abbbc", true}, {"a*c", "abcd", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"*a*b*", "xxaxxbxx", true}, {"*a*b", "xxaxxbxxc", false},
		{"", "", true}, {"", "a", false}, {"a**", "a", true}, {"alice-*", "alice-", true},
	} {
		if got := globMatch(c.p, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

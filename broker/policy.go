package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// DefaultDocument is the session document the scoped credentials allow.
const DefaultDocument = "AWS-StartSSHSession"

// maxPolicyChars is STS's limit on an inline session policy.
const maxPolicyChars = 2048

// Scope is what the minted credentials may do: start sessions on Target with
// Document, and resume, terminate and open the data channel of the caller's
// own sessions (docs/credentials.md section 6).
type Scope struct {
	Partition string // the role's partition (aws, aws-cn, aws-us-gov, ...); default aws
	Region    string
	Account   string   // the role's account
	Target    string   // instance id (i-…, mi-…); "" allows every instance
	Documents []string // default DefaultDocument alone
	// Lookup makes the scope the read-only one of target lookups
	// (LookupPolicy) instead of the per-target session scope.
	Lookup bool
	// PushKeyUser, when set, adds ec2-instance-connect:SendSSHPublicKey on
	// Target for this OS user only (docs/credentials.md section 6); Target
	// must then be an EC2 instance (i-…).
	PushKeyUser string
}

// normalDocuments is the sorted, de-duplicated document list of a scope
// (DefaultDocument when empty), so that the same set always renders the
// same policy and cache key.
func normalDocuments(docs []string) []string {
	out := slices.Clone(docs)
	out = slices.DeleteFunc(out, func(d string) bool { return d == "" })
	if len(out) == 0 {
		return []string{DefaultDocument}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

type policyStatement struct {
	Sid       string         `json:"Sid"`
	Effect    string         `json:"Effect"`
	Action    any            `json:"Action"`
	Resource  any            `json:"Resource"`
	Condition map[string]any `json:"Condition,omitempty"`
}

type policyDocument struct {
	Version   string            `json:"Version"`
	Statement []policyStatement `json:"Statement"`
}

// SessionPolicy renders the inline session policy for AssumeRole. The
// session resources use the RoleSessionName as prefix, because Session
// Manager session ids of a role session start with it; whether IAM matches
// that prefix for chained role sessions is the open question of
// docs/credentials.md section 6 and must be checked once against a real account.
func SessionPolicy(s Scope, roleSessionName string) (string, error) {
	if s.Region == "" || s.Account == "" || roleSessionName == "" {
		return "", fmt.Errorf("session policy needs a region, an account and a role session name")
	}
	part := s.Partition
	if part == "" {
		part = "aws"
	}
	var targets []string
	switch {
	case s.Target == "":
		targets = []string{
			fmt.Sprintf("arn:%s:ec2:%s:%s:instance/*", part, s.Region, s.Account),
			fmt.Sprintf("arn:%s:ssm:%s:%s:managed-instance/*", part, s.Region, s.Account),
		}
	case strings.HasPrefix(s.Target, "mi-"):
		targets = []string{fmt.Sprintf("arn:%s:ssm:%s:%s:managed-instance/%s", part, s.Region, s.Account, s.Target)}
	default:
		targets = []string{fmt.Sprintf("arn:%s:ec2:%s:%s:instance/%s", part, s.Region, s.Account, s.Target)}
	}
	sessions := fmt.Sprintf("arn:%s:ssm:%s:%s:session/%s-*", part, s.Region, s.Account, roleSessionName)
	p := policyDocument{Version: "2012-10-17", Statement: []policyStatement{
		{Sid: "StartSshOnTargets", Effect: "Allow", Action: "ssm:StartSession",
			Resource:  append(targets, documentARNs(part, s.Region, s.Account, normalDocuments(s.Documents))...),
			Condition: map[string]any{"BoolIfExists": map[string]string{"ssm:SessionDocumentAccessCheck": "true"}}},
		{Sid: "OwnDataChannel", Effect: "Allow", Action: "ssmmessages:OpenDataChannel", Resource: sessions},
		{Sid: "ResumeTerminateOwn", Effect: "Allow", Action: []string{"ssm:ResumeSession", "ssm:TerminateSession"}, Resource: sessions},
	}}
	if s.PushKeyUser != "" {
		st, err := pushKeyStatement(part, s)
		if err != nil {
			return "", err
		}
		p.Statement = append(p.Statement, st)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("render session policy: %w", err)
	}
	if len(b) > maxPolicyChars {
		return "", fmt.Errorf("the session policy has %d characters, over STS's limit of %d", len(b), maxPolicyChars)
	}
	return string(b), nil
}

func documentARNs(partition, region, account string, docs []string) []string {
	arns := make([]string, len(docs))
	for i, d := range docs {
		arns[i] = documentARN(partition, region, account, d)
	}
	return arns
}

// LookupPolicy renders the session policy of target lookups (names, tags,
// addresses: docs/credentials.md 6.1): the two describe calls, on "*"
// because neither supports resource-level permissions, and nothing else;
// in particular no StartSession.
func LookupPolicy() string {
	p := policyDocument{Version: "2012-10-17", Statement: []policyStatement{
		{Sid: "DescribeTargets", Effect: "Allow",
			Action: []string{"ssm:DescribeInstanceInformation", "ec2:DescribeInstances"}, Resource: "*"},
	}}
	b, _ := json.Marshal(p) // a fixed document of strings cannot fail
	return string(b)
}

// scopePolicy is the policy minted credentials carry for s.
func scopePolicy(s Scope, roleSessionName string) (string, error) {
	if s.Lookup {
		return LookupPolicy(), nil
	}
	return SessionPolicy(s, roleSessionName)
}

// pushKeyStatement allows EC2 Instance Connect's SendSSHPublicKey on the
// one target instance, for the one OS user (the ec2:osuser condition), so
// the credentials cannot push a key anywhere else.
func pushKeyStatement(partition string, s Scope) (policyStatement, error) {
	if !strings.HasPrefix(s.Target, "i-") {
		return policyStatement{}, fmt.Errorf("a key push needs an EC2 instance target (i-…), not %q", s.Target)
	}
	return policyStatement{Sid: "PushKeyForUser", Effect: "Allow", Action: "ec2-instance-connect:SendSSHPublicKey",
		Resource:  fmt.Sprintf("arn:%s:ec2:%s:%s:instance/%s", partition, s.Region, s.Account, s.Target),
		Condition: map[string]any{"StringEquals": map[string]string{"ec2:osuser": s.PushKeyUser}}}, nil
}

// hashString is a short, stable SHA-256 digest for file names and keys.
func hashString(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// documentARN is the ARN of a session document: AWS-owned documents (AWS-…)
// have an empty account field; the account's own documents (including the
// Session Manager preferences document SSM-SessionManagerRunShell) carry the
// account where the sessions start, the role's; a full ARN (a document shared
// from another account) is used as it is.
func documentARN(partition, region, account, doc string) string {
	switch {
	case strings.HasPrefix(doc, "arn:"):
		return doc
	case strings.HasPrefix(doc, "AWS-"):
		account = ""
	}
	return fmt.Sprintf("arn:%s:ssm:%s:%s:document/%s", partition, region, account, doc)
}

// roleARNPattern extracts the partition and account from
// arn:PARTITION:iam::ACCOUNT:role/NAME.
var roleARNPattern = regexp.MustCompile(`^arn:(aws[a-z-]*):iam::(\d{12}):role/[\w+=,.@/-]+$`)

// parseRoleARN returns the partition and account of a role ARN.
func parseRoleARN(arn string) (partition, account string, err error) {
	m := roleARNPattern.FindStringSubmatch(arn)
	if m == nil {
		return "", "", fmt.Errorf("%q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", arn)
	}
	return m[1], m[2], nil
}

// sessionNameFromARN derives a RoleSessionName (the user name) from the
// caller's ARN: user/NAME, assumed-role/ROLE/NAME, federated-user/NAME.
// STS allows [\w+=,.@-], 2 to 64 characters.
func sessionNameFromARN(arn string) string {
	_, rest, ok := strings.Cut(arn, ":user/")
	if !ok {
		if _, r, ok2 := strings.Cut(arn, ":assumed-role/"); ok2 {
			_, rest, ok = strings.Cut(r, "/")
		} else if _, r, ok2 := strings.Cut(arn, ":federated-user/"); ok2 {
			rest, ok = r, true
		}
	}
	if !ok {
		return ""
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 { // user paths
		rest = rest[i+1:]
	}
	return sanitizeSessionName(rest)
}

var sessionNameBad = regexp.MustCompile(`[^\w+=,.@-]`)

func sanitizeSessionName(s string) string {
	s = sessionNameBad.ReplaceAllString(s, "-")
	if len(s) > 64 {
		s = s[:64]
	}
	if len(s) < 2 {
		return ""
	}
	return s
}

package iam

import "testing"

// TestAllowedWithContextKeys: string conditions on ec2:osuser hold as in IAM
// when the call supplies the key; other keys stay unknown (fail closed).
func TestAllowedWithContextKeys(t *testing.T) {
	const inst = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
	const action = "ec2-instance-connect:SendSSHPublicKey"
	policy := func(cond string) string {
		return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"` + action + `","Resource":"` + inst + `","Condition":` + cond + `}]}`
	}
	for _, c := range []struct {
		name, cond string
		keys       map[string]string
		want       bool
	}{
		{"equal", `{"StringEquals":{"ec2:osuser":"ec2-user"}}`, map[string]string{"ec2:osuser": "ec2-user"}, true},
		{"other user", `{"StringEquals":{"ec2:osuser":"ec2-user"}}`, map[string]string{"ec2:osuser": "root"}, false},
		{"case matters in values", `{"StringEquals":{"ec2:osuser":"ec2-user"}}`, map[string]string{"ec2:osuser": "EC2-user"}, false},
		{"key name case does not", `{"StringEquals":{"EC2:OSUser":"ec2-user"}}`, map[string]string{"ec2:osuser": "ec2-user"}, true},
		{"one of a list", `{"StringEquals":{"ec2:osuser":["root","ec2-user"]}}`, map[string]string{"ec2:osuser": "ec2-user"}, true},
		{"like", `{"StringLike":{"ec2:osuser":"ec2-*"}}`, map[string]string{"ec2:osuser": "ec2-user"}, true},
		{"absent key", `{"StringEquals":{"ec2:osuser":"ec2-user"}}`, nil, false},
		{"absent key, IfExists", `{"StringEqualsIfExists":{"ec2:osuser":"ec2-user"}}`, nil, true},
		{"unknown operator", `{"StringNotEquals":{"ec2:osuser":"root"}}`, map[string]string{"ec2:osuser": "ec2-user"}, false},
		{"unknown key", `{"StringEquals":{"aws:username":"alice"}}`, map[string]string{"ec2:osuser": "ec2-user"}, false},
	} {
		got, err := AllowedWith(policy(c.cond), action, inst, c.keys)
		if err != nil || got != c.want {
			t.Errorf("%s: %v (%v), want %v", c.name, got, err, c.want)
		}
	}
	// A Deny on the key denies only the user it names.
	deny := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
	  {"Effect":"Deny","Action":"` + action + `","Resource":"*","Condition":{"StringEquals":{"ec2:osuser":"root"}}}]}`
	for user, want := range map[string]bool{"root": false, "ec2-user": true} {
		if got, _ := AllowedWith(deny, action, inst, map[string]string{"ec2:osuser": user}); got != want {
			t.Errorf("deny root, push for %s: %v", user, got)
		}
	}
	// A Deny with an unknown key still denies.
	unknown := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
	  {"Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:SourceVpc":"vpc-1"}}}]}`
	if got, _ := AllowedWith(unknown, action, inst, map[string]string{"ec2:osuser": "ec2-user"}); got {
		t.Error("a Deny with an unknown condition key did not deny")
	}
}

package iam

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestCredentialRedaction(t *testing.T) {
	s := NewStore(Options{})
	c := s.AddUser("alice")
	c.SessionToken = s.newSessionToken()
	c.Expires = time.Now()
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("issued", "cred", c, "ptr", &c)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("issued", "cred", c)
	out := []string{c.String(), c.GoString(), logs.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v"} {
		out = append(out, fmt.Sprintf(verb, c), fmt.Sprintf(verb, &c), fmt.Sprintf(verb, []Credential{c}),
			fmt.Sprintf(verb, map[string]Credential{"k": c}), fmt.Sprintf(verb, struct{ C Credential }{c}))
	}
	for _, o := range out {
		if strings.Contains(o, c.SecretAccessKey) || strings.Contains(o, c.SessionToken) {
			t.Fatalf("secret leaked: %s", o)
		}
	}
	if !strings.Contains(c.String(), c.AccessKeyID) || !strings.Contains(c.String(), "REDACTED") {
		t.Errorf("String() = %s", c.String())
	}
	if !strings.Contains(logs.String(), c.AccessKeyID) {
		t.Errorf("log lacks the access key id: %s", logs.String())
	}
}

func TestPrincipal(t *testing.T) {
	for _, c := range []struct {
		p           Principal
		arn, prefix string
	}{
		{Principal{Type: PrincipalUser, Name: "alice"}, "arn:aws:iam::123456789012:user/alice", "alice"},
		{Principal{Type: PrincipalAssumedRole, Name: "ssmproxy", SessionName: "alice@corp"}, "arn:aws:sts::123456789012:assumed-role/ssmproxy/alice@corp", "alice@corp"},
		{Principal{Type: PrincipalFederatedUser, Name: "fed"}, "arn:aws:sts::123456789012:federated-user/fed", "fed"},
	} {
		if got := c.p.ARN("123456789012"); got != c.arn {
			t.Errorf("ARN %q, want %q", got, c.arn)
		}
		if got := c.p.SessionIDPrefix(); got != c.prefix {
			t.Errorf("SessionIDPrefix %q, want %q", got, c.prefix)
		}
	}
}

func TestStoreBasics(t *testing.T) {
	s := NewStore(Options{})
	if s.Region() != "us-east-1" || s.Account() != "123456789012" || s.RoleARN("r") != "arn:aws:iam::123456789012:role/r" {
		t.Fatal("defaults")
	}
	c := s.AddUser("alice")
	if !strings.HasPrefix(c.AccessKeyID, "AKIA") || len(c.AccessKeyID) != 20 || len(c.SecretAccessKey) != 40 || c.Temporary() || !c.Expires.IsZero() {
		t.Errorf("long-term key %v", c)
	}
	seeded := s.AddKey("svc", "AKIAFAKEAWSSEEDED001", strings.Repeat("s", 40))
	got, ok := s.Lookup("AKIAFAKEAWSSEEDED001")
	if !ok || got.SecretAccessKey != seeded.SecretAccessKey || got.Principal.Name != "svc" || !strings.HasPrefix(got.UserID, "AIDA") {
		t.Errorf("Lookup %v %v", got, ok)
	}
	if _, ok := s.Lookup("AKIANOPE"); ok {
		t.Error("unknown key found")
	}
	if n := len(s.Issued()); n != 2 {
		t.Errorf("Issued %d", n)
	}
	s.ExpireNow(c.AccessKeyID)
	if got, _ := s.Lookup(c.AccessKeyID); !got.ExpiredAt(s.Now()) {
		t.Error("ExpireNow did not expire")
	}
}

// TestSeededRand: the same seed gives the same keys, so a failing run replays.
func TestSeededRand(t *testing.T) {
	keys := func() string {
		var seed [32]byte
		s := NewStore(Options{Rand: rand.NewChaCha8(seed)})
		c := s.AddUser("alice")
		return c.AccessKeyID + c.SecretAccessKey + s.newRequestID()
	}
	if a, b := keys(), keys(); a != b {
		t.Errorf("%s != %s", a, b)
	}
}

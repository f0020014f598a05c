package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/testkit"
)

// FuzzProfileSettings: whatever the shared config and credentials files
// hold, resolving a profile's broker settings (docs/credentials.md 3) never
// panics, and what it accepts is usable: a region, a role session duration
// within STS's bounds, a valid session name, and for a role a partition and
// a 12-digit account. Anything else is an error the user can read.
func FuzzProfileSettings(f *testing.F) {
	f.Add("[profile p]\nregion = eu-west-1\nrole_arn = arn:aws:iam::123456789012:role/ops\nsource_profile = base\n[profile base]\nregion = eu-west-1\n",
		"[base]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n")
	f.Add("[profile p]\nduration_seconds = 60\nrole_arn = arn:aws:iam::1:role/x\ncredential_source = Ec2InstanceMetadata\n", "")
	f.Add("[profile p]\nrole_session_name = a b\nmfa_serial = arn:aws:iam::123456789012:mfa/u\nregion=us-east-1\n", "")
	f.Add("[profile p]\ncredential_process = /bin/echo {}\nregion = \n[sso-session s]\nsso_region=x\n", "[p]\naws_access_key_id=\n")
	f.Add("[profile p]\nsource_profile = p\nrole_arn = arn:aws-cn:iam::123456789012:role/a/b\n", "[default]\n\x00\xff\n")
	// The SDK's ini parser panicked on a lone quote (found by this target).
	f.Add("profile p]\nrole_session_nAme=\"", "M")
	f.Fuzz(func(t *testing.T, configFile, credentialsFile string) {
		testkit.CleanAWSEnv(t, "http://127.0.0.1:1")
		dir := t.TempDir()
		cfg, creds := filepath.Join(dir, "config"), filepath.Join(dir, "credentials")
		if err := os.WriteFile(cfg, []byte(configFile), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(creds, []byte(credentialsFile), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("AWS_CONFIG_FILE", cfg)
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
		t.Setenv("AWS_REGION", "")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := resolveSettings(ctx, Options{Profile: "p", Target: "i-0123456789abcdef0"})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("resolving settings from files alone took 10 s")
			}
			return
		}
		if s.region == "" {
			t.Fatal("settings without a region")
		}
		if s.roleDuration < 15*time.Minute || s.roleDuration > 12*time.Hour {
			t.Fatalf("role duration %s accepted", s.roleDuration)
		}
		if s.sessionName != "" && !validSessionName.MatchString(s.sessionName) {
			t.Fatalf("session name %q accepted", s.sessionName)
		}
		if s.roleARN != "" && (!regexp.MustCompile(`^\d{12}$`).MatchString(s.scope.Account) || s.scope.Partition == "") {
			t.Fatalf("role %q accepted with account %q partition %q", s.roleARN, s.scope.Account, s.scope.Partition)
		}
	})
}

var validSessionName = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

// FuzzSessionNameFromARN: the caller ARN comes from STS; whatever it says,
// the derived RoleSessionName is empty or one STS accepts.
func FuzzSessionNameFromARN(f *testing.F) {
	f.Add("arn:aws:iam::123456789012:user/path/alice")
	f.Add("arn:aws:sts::123456789012:assumed-role/ops/bob@example.com")
	f.Add("arn:aws:sts::123456789012:federated-user/x")
	f.Add("arn:aws:sts::123456789012:assumed-role/ops")
	f.Fuzz(func(t *testing.T, arn string) {
		if n := sessionNameFromARN(arn); n != "" && !validSessionName.MatchString(n) {
			t.Fatalf("sessionNameFromARN(%q) = %q", arn, n)
		}
	})
}

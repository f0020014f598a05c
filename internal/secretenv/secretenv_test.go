package secretenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestTakeHidesFromChildren: a taken variable is still readable through Get,
// but a child started with the process environment (as the keyring
// library's pass backend does) no longer sees it.
func TestTakeHidesFromChildren(t *testing.T) {
	t.Cleanup(reset)
	t.Setenv("SSMPROXY_TEST_SECRET", "s3cret-value")
	Take("SSMPROXY_TEST_SECRET", "SSMPROXY_TEST_UNSET")
	if got := Get("SSMPROXY_TEST_SECRET"); got != "s3cret-value" {
		t.Fatalf("Get after Take: %q", got)
	}
	if _, ok := os.LookupEnv("SSMPROXY_TEST_SECRET"); ok {
		t.Fatal("the variable is still in the process environment")
	}
	cmd := exec.Command("sh", "-c", "env")
	cmd.Env = os.Environ()
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret-value") {
		t.Fatal("a child inherited the secret")
	}
	t.Setenv("SSMPROXY_TEST_OTHER", "plain")
	if Get("SSMPROXY_TEST_OTHER") != "plain" || Get("SSMPROXY_TEST_UNSET") != "" {
		t.Fatal("Get must fall back to the environment")
	}
}

// TestScrub: no AWS key (in any spelling) and none of ssmproxy's own
// secrets reach a child.
func TestScrub(t *testing.T) {
	env := []string{"PATH=/bin", "AWS_REGION=eu-west-1", "AWS_PROFILE=dev"}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
		"AWS_ACCESS_KEY", "AWS_SECRET_KEY", "SSMPROXY_FILE_PASSPHRASE", "SSMPROXY_LOGIN_SECRET_ACCESS_KEY",
		"SSMPROXY_LOGIN_ACCESS_KEY_ID", "SSMPROXY_MFA_TOKEN"} {
		env = append(env, k+"=secret-of-"+k)
	}
	out := Scrub(env)
	if strings.Contains(strings.Join(out, "\n"), "secret-of-") {
		t.Fatalf("a secret survived: %q", out)
	}
	if len(out) != 3 {
		t.Fatalf("ordinary variables must stay: %q", out)
	}
}

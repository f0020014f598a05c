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

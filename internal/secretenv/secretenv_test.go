package secretenv

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/redact"
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

// TestChildStderrRedacted: what a child writes on stderr reaches ours
// through the redactor (a "sh -x" wrapper prints the secrets it handles),
// all of it once Drain returns.
func TestChildStderrRedacted(t *testing.T) {
	const secret = "child-stderr-secret-0001"
	redact.Register(secret)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	saved := os.Stderr
	os.Stderr = w
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := Shell(ctx, "echo '+ KEY="+secret+"' >&2; printf 'x\\033[2Jy\\n' >&2")
	os.Stderr = saved
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	cancel()
	Drain(20 * time.Second)
	w.Close()
	b, _ := io.ReadAll(r)
	if got := string(b); got != "+ KEY=[redacted]\nx\\x1b[2Jy\n" {
		t.Errorf("stderr %q", got)
	}
}

// TestChildStderrGrandchild: a grandchild that keeps the child's stderr
// open holds up neither Wait nor Drain beyond its bound.
func TestChildStderrGrandchild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if err := Shell(ctx, "sleep 5 >/dev/null & echo started >&2").Run(); err != nil {
		t.Fatal(err)
	}
	cancel()
	Drain(time.Second)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Run and Drain took %s: the grandchild held them", d)
	}
}

//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2instanceconnect"
	"github.com/aws/smithy-go"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

const otherTarget = "i-0fedcba9876543210"

// eicWorld is an sshd that trusts only the keys bin/fakeaws holds as pushed
// with EC2 Instance Connect (its -eic-authorized-keys file), and a home with
// a fresh key pair the instance does not otherwise know.
type eicWorld struct {
	d   *sshd
	key string // private key path, for ssh's IdentityFile
}

func newEICWorld(t *testing.T, home, keysFile string) *eicWorld {
	t.Helper()
	requireTools(t, "ssh", "sshd", "ssh-keygen")
	d, err := rig.StartSSHDKeys(t.TempDir(), keysFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	w := &eicWorld{d: &sshd{d}, key: filepath.Join(home, ".ssh", "id_ed25519")}
	if err := os.MkdirAll(filepath.Dir(w.key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := rig.KeyPair(w.key); err != nil {
		t.Fatal(err)
	}
	return w
}

// sshConfig uses the fresh key and connect with extra flags.
func (w *eicWorld) sshConfig(t *testing.T, proxyArgs string) string {
	p, err := rig.SSHConfig(t.TempDir(), w.d.User, w.key, w.d.Port, ssmproxyBin+" connect "+proxyArgs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *eicWorld) publicKey(t *testing.T) string {
	b, err := os.ReadFile(w.key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// sshRefused runs ssh and wants it refused by sshd (exit 255, "Permission
// denied"), not failed by ssmproxy.
func sshRefused(t *testing.T, env []string, conf string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, stderr, err := rig.Run(ctx, env, nil, "ssh", "-F", conf, target, "echo logged in")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 255 || !strings.Contains(stderr, "Permission denied") {
		t.Fatalf("ssh without a pushed key: %v, stderr %q; want Permission denied", err, stderr)
	}
}

// TestEICPushKeyLogin: with --push-key ssh logs in with a key the instance
// never had, pushed for 60 s (here -eic-key-ttl 4s); without it, and once
// the pushed key has expired, sshd refuses the same key.
func TestEICPushKeyLogin(t *testing.T) {
	home, keys := t.TempDir(), filepath.Join(t.TempDir(), "eic_authorized_keys")
	f := startFake(t, "-eic-authorized-keys", keys, "-eic-user", rig.CurrentUser(), "-eic-key-ttl", "4s")
	w := newEICWorld(t, home, keys)
	env := f.Environ(home)
	start := time.Now()

	sshRefused(t, env, w.sshConfig(t, ""))
	out, _ := run(t, env, nil, "ssh", "-F", w.sshConfig(t, "--push-key --user %r"), target, "echo logged in with a pushed key")
	if out != "logged in with a pushed key\n" {
		t.Fatalf("stdout %q", out)
	}
	st := f.stats()
	if st.API["SendSSHPublicKey"]["200"] != 1 || st.API["StartSession"]["200"] != 2 {
		t.Fatalf("API calls %v: want one push, two sessions", st.API)
	}
	b, err := os.ReadFile(keys)
	if err != nil || !strings.Contains(string(b), strings.Fields(w.publicKey(t))[1]) {
		t.Fatalf("keys file %q (%v) lacks the pushed key", b, err)
	}
	// The key leaves the file when it expires; then the login is refused.
	if !fakeaws.WaitFor(15*time.Second, func() bool { b, _ := os.ReadFile(keys); return len(b) == 0 }) {
		t.Fatal("the pushed key never expired")
	}
	sshRefused(t, env, w.sshConfig(t, ""))
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestEICScopedPolicy: with a role, ssmproxy's scoped credentials carry the
// push for this instance and this user only (the fake evaluates the session
// policy, ec2:osuser included); credentials scoped without the push make
// connect --push-key exit 4.
func TestEICScopedPolicy(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "eic_authorized_keys")
	f := startFake(t, "-role", brokerRole, "-target", target, "-target", otherTarget, "-eic-authorized-keys", keys)
	bw := newBrokerWorld(t, f)
	bw.login("src")
	w := newEICWorld(t, filepath.Join(bw.dir, "home"), keys)
	start := time.Now()
	out, _ := run(t, bw.base, nil, "ssh", "-F", w.sshConfig(t, "--profile src --push-key --user %r"), target, "echo role-scoped push")
	if out != "role-scoped push\n" {
		t.Fatalf("stdout %q", out)
	}

	// The role credentials ssmproxy minted (from its cache) push for this
	// instance and user, and for nothing else.
	ents := bw.cacheEntries()
	if len(ents) != 1 {
		t.Fatalf("%d cache entries", len(ents))
	}
	c := ents[0]["credentials"].(map[string]any)
	creds := credentials.NewStaticCredentialsProvider(c["access_key_id"].(string), c["secret_access_key"].(string), c["session_token"].(string))
	client := ec2instanceconnect.New(ec2instanceconnect.Options{Region: "us-east-1", Credentials: creds,
		BaseEndpoint: aws.String(f.url), RetryMaxAttempts: 1})
	for _, p := range []struct{ instance, user, want string }{
		{target, w.d.User, ""},
		{target, "someone-else", "AccessDeniedException"},
		{otherTarget, w.d.User, "AccessDeniedException"},
	} {
		_, err := client.SendSSHPublicKey(context.Background(), &ec2instanceconnect.SendSSHPublicKeyInput{
			InstanceId: aws.String(p.instance), InstanceOSUser: aws.String(p.user), SSHPublicKey: aws.String(w.publicKey(t))})
		got := ""
		var ae smithy.APIError
		if errors.As(err, &ae) {
			got = ae.ErrorCode()
		} else if err != nil {
			got = err.Error()
		}
		if got != p.want {
			t.Errorf("scoped credentials push to %s as %s: %q, want %q", p.instance, p.user, got, p.want)
		}
	}

	// Credentials scoped without the push (from credential-process, used
	// as they are from a credentials file): the session policy denies the
	// push, and connect exits 4 with one line.
	js, _ := run(t, bw.base, nil, ssmproxyBin, "credential-process", "--profile", "src", "--role-arn", brokerRoleARN, "--target", target)
	var cp struct{ AccessKeyId, SecretAccessKey, SessionToken string }
	if err := json.Unmarshal([]byte(js), &cp); err != nil {
		t.Fatal(err)
	}
	credFile := filepath.Join(bw.dir, "aws-credentials")
	prof := fmt.Sprintf("[scoped]\naws_access_key_id = %s\naws_secret_access_key = %s\naws_session_token = %s\n",
		cp.AccessKeyId, cp.SecretAccessKey, cp.SessionToken)
	if err := os.WriteFile(credFile, []byte(prof), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(without(bw.base, "SSMPROXY_ROLE_ARN"), "AWS_SHARED_CREDENTIALS_FILE="+credFile)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, stderr, err := rig.Run(ctx, env, nil, ssmproxyBin, "connect", "--profile", "scoped", "--push-key", "--user", w.d.User, target, "22")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(stderr, "AccessDeniedException") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("push with credentials scoped without it: %v, stderr %q; want exit 4 and one line", err, stderr)
	}
	t.Logf("took %s; %s", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(stderr))
}

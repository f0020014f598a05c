package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

func writePub(t *testing.T, path string, pub any) string {
	t.Helper()
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(pk), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyLine(pk)
}

// TestConnectPushKeyFlags: --push-key needs --user and the reverse, the
// user must be a valid login name, and --push-key takes an optional path.
func TestConnectPushKeyFlags(t *testing.T) {
	for _, c := range []struct {
		args     []string
		wantErr  string
		wantPath string
	}{
		{[]string{"--push-key", "i-0123456789abcdef0", "22"}, "--push-key needs --user", ""},
		{[]string{"--user", "ec2-user", "i-0123456789abcdef0"}, "--user is the OS user of --push-key", ""},
		{[]string{"--push-key", "--user", "no spaces", "i-0123456789abcdef0"}, "not a valid login name", ""},
		{[]string{"--push-key", "--user", strings.Repeat("u", 33), "i-0123456789abcdef0"}, "not a valid login name", ""},
		{[]string{"--push-key", "/k/id.pub", "--user", "ec2-user", "i-0123456789abcdef0", "22"}, "--push-key=/k/id.pub (with =)", ""},
		{[]string{"--push-key", "--user", "ec2-user", "i-0123456789abcdef0", "22"}, "", ""},
		{[]string{"i-0123456789abcdef0", "--push-key=/k/id.pub", "--user=ec2-user"}, "", "/k/id.pub"},
	} {
		o, err := parseConnect(c.args)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || exitCode(err) != exitUsage {
				t.Errorf("%v: %v (exit %d), want a usage error about %q", c.args, err, exitCode(err), c.wantErr)
			}
		case err != nil:
			t.Errorf("%v: %v", c.args, err)
		case !o.pushKey.set || o.pushKey.path != c.wantPath || o.user != "ec2-user":
			t.Errorf("%v: parsed %+v user %q", c.args, o.pushKey, o.user)
		}
	}
}

// TestFindPublicKey: the default files in order, an explicit .pub, refusal
// of anything that is not a public key file (unread, or unquoted), and the
// one-line error naming what was tried.
func TestFindPublicKey(t *testing.T) {
	home := t.TempDir()
	sshDir := filepath.Join(home, ".ssh")
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecLine := writePub(t, filepath.Join(sshDir, "id_ecdsa.pub"), &ec.PublicKey)
	writePub(t, filepath.Join(sshDir, "id_rsa.pub"), &rsa2048.PublicKey)
	k, err := findPublicKey("", home, "")
	if err != nil || k.line != ecLine || k.source != filepath.Join(sshDir, "id_ecdsa.pub") {
		t.Fatalf("default: %+v %v, want id_ecdsa.pub (no id_ed25519.pub)", k, err)
	}
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edLine := writePub(t, filepath.Join(sshDir, "id_ed25519.pub"), edPub)
	if k, err := findPublicKey("", home, ""); err != nil || k.line != edLine {
		t.Fatalf("default with id_ed25519.pub: %+v %v", k, err)
	}
	if strings.Contains(edLine, "@") || len(strings.Fields(edLine)) != 2 {
		t.Fatalf("pushed line %q carries a comment", edLine)
	}
	explicit := filepath.Join(t.TempDir(), "other.pub")
	rsaLine := writePub(t, explicit, &rsa2048.PublicKey)
	if k, err := findPublicKey(explicit, home, ""); err != nil || k.line != rsaLine {
		t.Fatalf("explicit: %+v %v", k, err)
	}

	// A private key is never opened: a path without .pub is refused before
	// any read (this one does not even exist).
	_, err = findPublicKey(filepath.Join(sshDir, "id_ed25519"), home, "")
	if err == nil || !strings.Contains(err.Error(), "never reads a private key") || exitCode(err) != exitUsage {
		t.Fatalf("private key path: %v", err)
	}
	// A private key saved as .pub: refused, and its content not quoted.
	block, _ := ssh.MarshalPrivateKey(edPriv, "")
	privPEM := pem.EncodeToMemory(block)
	fake := filepath.Join(t.TempDir(), "oops.pub")
	if err := os.WriteFile(fake, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = findPublicKey(fake, home, "")
	if err == nil || exitCode(err) != exitUsage || strings.Contains(err.Error(), "PRIVATE") || strings.Contains(err.Error(), string(privPEM[40:60])) {
		t.Fatalf("private key as .pub: %v", err)
	}
	// RSA below 2048 bits.
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	short := filepath.Join(t.TempDir(), "short.pub")
	writePub(t, short, &rsa1024.PublicKey)
	if _, err := findPublicKey(short, home, ""); err == nil || !strings.Contains(err.Error(), "1024 bits") {
		t.Fatalf("RSA 1024: %v", err)
	}

	// Nothing anywhere: one line naming every place tried.
	empty := t.TempDir()
	_, err = findPublicKey("", empty, "")
	if err == nil || exitCode(err) != exitUsage || strings.Contains(err.Error(), "\n") {
		t.Fatalf("no key: %v", err)
	}
	for _, want := range []string{"id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub", "SSH_AUTH_SOCK unset"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no-key error %q does not name %s", err, want)
		}
	}

	// ssh-agent: the first key Instance Connect takes.
	sock := serveAgent(t, rsa1024)
	if _, err := findPublicKey("", empty, sock); err == nil || !strings.Contains(err.Error(), "none of its 1 keys") {
		t.Fatalf("agent with a short RSA key only: %v", err)
	}
	sock = serveAgent(t, rsa1024, edPriv)
	if k, err := findPublicKey("", empty, sock); err != nil || k.line != edLine || k.source != "ssh-agent" {
		t.Fatalf("agent: %+v %v", k, err)
	}
}

// serveAgent runs an in-memory ssh-agent holding keys on a unix socket.
func serveAgent(t *testing.T, keys ...any) string {
	t.Helper()
	kr := agent.NewKeyring()
	for _, k := range keys {
		if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _ = agent.ServeAgent(kr, c) }()
		}
	}()
	return sock
}

// TestPushKeyHook: through the opener against the fake, with a role: the
// scoped credentials push for their instance and user and nothing else, a
// scope without the push cannot push (and its cached credentials do not
// serve a later push), throttling is retried, and each failure has its exit
// code.
func TestPushKeyHook(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	openerEnv(t, ts)
	ts.IAM.AddRole(iam.Role{Name: "eic"})
	ctx := context.Background()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	pk, _ := ssh.NewPublicKey(edPub)
	key := publicKey{line: keyLine(pk), source: "test"}
	log := slog.New(slog.DiscardHandler)

	open := func(scopeUser, pushUser, pushTo string) error {
		hook := pushKeyHook(pushUser, key, log)
		req := sshRequest(fakeaws.DefaultInstance, func(ctx context.Context, rt resolvedTarget) error {
			if pushTo != "" {
				rt.InstanceID = pushTo
			}
			return hook(ctx, rt)
		})
		req.pushKeyUser = scopeUser
		req.broker.roleARN = ts.IAM.RoleARN("eic")
		sess, err := openSession(ctx, req)
		if err == nil {
			sess.Close()
			sess.release()
		}
		return err
	}
	other := "i-0fedcba9876543210"
	ts.AddTarget(fakeaws.Target{ID: other, Connected: true})

	// No push statement in the scope: denied; the credentials are cached.
	if err := open("", "ec2-user", ""); exitCode(err) != exitAccessDenied ||
		!strings.Contains(err.Error(), "AccessDeniedException") || !strings.Contains(err.Error(), "ec2-instance-connect:SendSSHPublicKey") {
		t.Fatalf("push without the statement: %v (exit %d)", err, exitCode(err))
	}
	// With it: allowed, though statement-less credentials sit in the cache.
	if err := open("ec2-user", "ec2-user", ""); err != nil {
		t.Fatalf("push with the statement: %v", err)
	}
	keys := ts.PushedKeys()
	if len(keys) != 1 || keys[0].Instance != fakeaws.DefaultInstance || keys[0].User != "ec2-user" || !strings.Contains(keys[0].Line, strings.Fields(key.line)[1]) {
		t.Fatalf("pushed keys %+v", keys)
	}
	// Another user or another instance with the same scope: denied.
	if err := open("ec2-user", "root", ""); exitCode(err) != exitAccessDenied {
		t.Errorf("push for another user: %v (exit %d)", err, exitCode(err))
	}
	if err := open("ec2-user", "ec2-user", other); exitCode(err) != exitAccessDenied {
		t.Errorf("push to another instance: %v (exit %d)", err, exitCode(err))
	}
	if n := len(ts.PushedKeys()); n != 1 {
		t.Errorf("%d keys live, want 1", n)
	}

	// Throttling: retried, then the push goes through.
	ts.FailAPI("SendSSHPublicKey", "ThrottlingException", 429, 2)
	if err := open("ec2-user", "ec2-user", ""); err != nil {
		t.Errorf("push after 2 throttles: %v", err)
	}
	ts.FailAPI("SendSSHPublicKey", "ThrottlingException", 429, 10)
	start := time.Now()
	err := open("ec2-user", "ec2-user", "")
	t.Logf("throttled throughout: %v after %s", err, time.Since(start).Round(time.Millisecond))
	if exitCode(err) != exitChannelLost {
		t.Errorf("push throttled throughout: %v (exit %d)", err, exitCode(err))
	}
	ts.ClearFaults()

	// A managed node: refused before any credentials are minted.
	before := len(ts.IAM.Calls())
	req := sshRequest("mi-0123456789abcdef0")
	req.pushKeyUser = "ec2-user"
	req.broker.roleARN = ts.IAM.RoleARN("eic")
	if _, err := openSession(ctx, req); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "EC2 instances (i-...)") {
		t.Errorf("push to mi-: %v (exit %d)", err, exitCode(err))
	}
	if after := len(ts.IAM.Calls()); after != before {
		t.Errorf("%d STS calls for a refused mi- push", after-before)
	}
}

// TestPushKeyErrorCodes: every SendSSHPublicKey error code maps to its
// documented exit code, and the message goes through the redactor.
func TestPushKeyErrorCodes(t *testing.T) {
	for code, want := range map[string]int{
		"AccessDeniedException":            exitAccessDenied,
		"AuthException":                    exitAccessDenied,
		"EC2InstanceNotFoundException":     exitNotConnected,
		"EC2InstanceStateInvalidException": exitNotConnected,
		"ExpiredTokenException":            exitCredentials,
		"ThrottlingException":              exitChannelLost,
		"EC2InstanceUnavailableException":  exitChannelLost,
		"ServiceException":                 exitChannelLost,
		"InvalidArgsException":             exitAPIRefused,
		"ValidationException":              exitAPIRefused,
	} {
		err := error(newPushKeyError("i-0123456789abcdef0", "ec2-user", &smithy.GenericAPIError{Code: code, Message: "m"}))
		if got := exitCode(fmtWrap(err)); got != want {
			t.Errorf("%s: exit %d, want %d", code, got, want)
		}
	}
	if got := exitCode(newPushKeyError("i-0123456789abcdef0", "u", errors.New("dial tcp: connection refused"))); got != exitChannelLost {
		t.Errorf("network failure: exit %d", got)
	}
}

func fmtWrap(err error) error { return errors.Join(errors.New("wrapped"), err) }

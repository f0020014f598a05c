//go:build linux

package keyring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKeyctlRoundTrip uses the kernel keyring with the "user" scope, in a
// service name of its own, and reads the item back from a child process:
// the scope must be shared across processes.
func TestKeyctlRoundTrip(t *testing.T) {
	ctx := context.Background()
	service := fmt.Sprintf("ssmproxy-test-%d", os.Getpid())
	lock := filepath.Join(t.TempDir(), "kr.lock")
	k, err := Open(ctx, Options{Backend: "keyctl", ServiceName: service, LockPath: lock})
	if err != nil {
		t.Skipf("the kernel keyring is not usable here (%v); keyctl is then skipped by automatic selection too", err)
	}
	t.Cleanup(func() { unlinkServiceKeyring(t, service) })
	if k.Backend() != "keyctl" {
		t.Fatalf("backend %s", k.Backend())
	}
	data := []byte(`{"access_key_id":"ASIAEXAMPLE","secret_access_key":"keyctl-secret"}`)
	if err := k.Set(ctx, Item{Key: "mfa-session:dev:abc", Data: data}); err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EDQUOT) {
			t.Skipf("the kernel refused the key: %v", err)
		}
		t.Fatal(err)
	}
	it, err := k.Get(ctx, "mfa-session:dev:abc")
	if err != nil || !bytes.Equal(it.Data, data) {
		t.Fatalf("get: %v %q", err, it.Data)
	}
	keys, err := k.Keys(ctx)
	if err != nil || len(keys) != 1 || keys[0] != "mfa-session:dev:abc" {
		t.Fatalf("keys %v %v", keys, err)
	}
	// Replace keeps one item.
	if err := k.Set(ctx, Item{Key: "mfa-session:dev:abc", Data: []byte("v2")}); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=get", "CHILD_BACKEND=keyctl", "CHILD_SERVICE="+service,
		"CHILD_LOCK="+lock, "CHILD_KEY=mfa-session:dev:abc")
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "v2" {
		t.Fatalf("child process read %q (%v): the user scope must be shared", out, err)
	}
	if err := k.Remove(ctx, "mfa-session:dev:abc"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx, "mfa-session:dev:abc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after remove: %v", err)
	}
}

// unlinkServiceKeyring removes the test's named keyring from the user keyring.
func unlinkServiceKeyring(t *testing.T, service string) {
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "keyring", service, 0)
	if err != nil {
		return
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_USER_KEYRING, 0, 0); err != nil {
		t.Logf("unlink keyring %s: %v", service, err)
	}
}

// TestPassRoundTrip uses the pass backend with a throwaway GnuPG home and
// password store, when gpg and pass are installed.
func TestPassRoundTrip(t *testing.T) {
	for _, tool := range []string{"pass", "gpg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	ctx := context.Background()
	gnupg := filepath.Join(os.TempDir(), fmt.Sprintf("ssmproxy-gpg-%d", os.Getpid())) // short: gpg-agent socket path limit
	if err := os.MkdirAll(gnupg, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("gpgconf", "--homedir", gnupg, "--kill", "gpg-agent").Run()
		os.RemoveAll(gnupg)
	})
	t.Setenv("GNUPGHOME", gnupg)
	store := filepath.Join(t.TempDir(), "store")
	t.Setenv("PASSWORD_STORE_DIR", store)
	gen := exec.Command("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
		"--quick-gen-key", "ssmproxy test <ssmproxy-test@example.invalid>", "default", "default", "never")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Skipf("cannot create a GnuPG key here: %v %s", err, out)
	}
	if out, err := exec.Command("pass", "init", "ssmproxy-test@example.invalid").CombinedOutput(); err != nil {
		t.Skipf("pass init: %v %s", err, out)
	}
	// Automatic selection for long-term keys now lands on pass (keyctl is
	// excluded as volatile; no D-Bus here).
	k, err := Open(ctx, Options{Persistent: true, ServiceName: "ssmproxy-test", LockPath: filepath.Join(t.TempDir(), "l"),
		FileDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("DBUS_SESSION_BUS_ADDRESS") == "" && k.Backend() != "pass" {
		t.Fatalf("automatic persistent selection chose %s, want pass", k.Backend())
	}
	data := []byte("pass-secret-value")
	if err := k.Set(ctx, Item{Key: "source:dev", Data: data}); err != nil {
		t.Fatal(err)
	}
	it, err := k.Get(ctx, "source:dev")
	if err != nil || !bytes.Equal(it.Data, data) {
		t.Fatalf("get: %v %q", err, it.Data)
	}
	keys, _ := k.Keys(ctx)
	if len(keys) != 1 || keys[0] != "source:dev" {
		t.Fatalf("keys %v", keys)
	}
	b, _ := os.ReadFile(filepath.Join(store, "ssmproxy-test", "source:dev.gpg"))
	if len(b) == 0 || bytes.Contains(b, data) {
		t.Fatalf("pass file missing or in clear (%d bytes)", len(b))
	}
	if err := k.Remove(ctx, "source:dev"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx, "source:dev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after remove: %v", err)
	}
	if !strings.Contains(k.Backend(), "pass") {
		t.Fatalf("backend %s", k.Backend())
	}
}

package keyring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	kr "github.com/99designs/keyring"
)

// The test binary doubles as a child process for the cross-process tests.
const childEnv = "SSMPROXY_KEYRING_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode))
	}
	os.Exit(m.Run())
}

// childModes are child operations that need no keyring (platform tests
// register theirs).
var childModes = map[string]func() int{}

// childMain runs one child operation against the keyring described by the
// environment and reports on stdout.
func childMain(mode string) int {
	if f := childModes[mode]; f != nil {
		return f()
	}
	ctx := context.Background()
	k, err := Open(ctx, Options{Backend: os.Getenv("CHILD_BACKEND"), ServiceName: os.Getenv("CHILD_SERVICE"),
		FileDir: os.Getenv("CHILD_DIR"), LockPath: os.Getenv("CHILD_LOCK")})
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	switch mode {
	case "get":
		it, err := k.Get(ctx, os.Getenv("CHILD_KEY"))
		if err != nil {
			fmt.Println("get:", err)
			return 1
		}
		fmt.Print(string(it.Data))
	case "hammer":
		// Alternate writes and reads of one key; every read must decode to
		// a complete value written by someone.
		for i := 0; i < 15; i++ {
			val := fmt.Sprintf("value-%d-%s", os.Getpid(), strings.Repeat("x", 2000+i))
			if err := k.Set(ctx, Item{Key: "shared", Data: []byte(val)}); err != nil {
				fmt.Println("set:", err)
				return 1
			}
			it, err := k.Get(ctx, "shared")
			if err != nil || !strings.HasPrefix(string(it.Data), "value-") {
				fmt.Println("torn read:", err)
				return 1
			}
		}
		fmt.Print("ok")
	}
	return 0
}

func fileOpts(t *testing.T, dir, lock, pass string) Options {
	t.Helper()
	return Options{Backend: "file", FileDir: dir, LockPath: lock, ServiceName: "ssmproxy-test",
		Getenv: func(k string) string {
			if k == EnvFilePassphrase {
				return pass
			}
			return ""
		}}
}

func TestFileRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir, lock := filepath.Join(t.TempDir(), "kr"), filepath.Join(t.TempDir(), "kr.lock")
	k, err := Open(ctx, fileOpts(t, dir, lock, "correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if k.Backend() != "file" {
		t.Fatalf("backend %s", k.Backend())
	}
	if _, err := k.Get(ctx, "source:dev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing item: %v, want ErrNotFound", err)
	}
	secret := []byte("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	if err := k.Set(ctx, Item{Key: "source:dev", Data: secret, AskBeforeRead: true}); err != nil {
		t.Fatal(err)
	}
	it, err := k.Get(ctx, "source:dev")
	if err != nil || !bytes.Equal(it.Data, secret) {
		t.Fatalf("get: %v %q", err, it.Data)
	}
	keys, err := k.Keys(ctx)
	if err != nil || len(keys) != 1 || keys[0] != "source:dev" {
		t.Fatalf("keys %v %v (the canary must not be listed)", keys, err)
	}
	// Files are 0600 in a 0700 directory, and encrypted.
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v %v", st.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", e.Name(), info.Mode().Perm())
		}
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if bytes.Contains(b, secret) {
			t.Errorf("%s holds the secret in clear", e.Name())
		}
	}
	// Another handle (a new process would open one) reads it back.
	k2, _ := Open(ctx, fileOpts(t, dir, lock, "correct horse"))
	if it, err := k2.Get(ctx, "source:dev"); err != nil || !bytes.Equal(it.Data, secret) {
		t.Fatalf("second handle: %v", err)
	}
	if err := k.Remove(ctx, "source:dev"); err != nil {
		t.Fatal(err)
	}
	if err := k.Remove(ctx, "source:dev"); err != nil {
		t.Fatalf("removing a missing item: %v", err)
	}
	if _, err := k.Get(ctx, "source:dev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after remove: %v", err)
	}
}

// TestFileWrongPassphrase: the library's Set would silently write with a
// wrong passphrase; the canary makes it an error before anything is written.
func TestFileWrongPassphrase(t *testing.T) {
	ctx := context.Background()
	dir, lock := filepath.Join(t.TempDir(), "kr"), filepath.Join(t.TempDir(), "kr.lock")
	good, _ := Open(ctx, fileOpts(t, dir, lock, "right"))
	if err := good.Set(ctx, Item{Key: "source:a", Data: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	bad, err := Open(ctx, fileOpts(t, dir, lock, "wrong"))
	if err != nil {
		t.Fatal(err)
	}
	err = bad.Set(ctx, Item{Key: "source:b", Data: []byte("two")})
	if !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Set with a wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "source%3Ab")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an item was written under the wrong passphrase (%v)", err)
	}
	if _, err := bad.Get(ctx, "source:a"); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Get with a wrong passphrase: %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "wrong\"") || strings.Contains(fmt.Sprint(err), "right") {
		t.Fatalf("the error mentions a passphrase: %v", err)
	}
}

// TestFileWrongPassphraseWithoutCanary: a directory written before the canary
// existed (by the library directly) is still protected.
func TestFileWrongPassphraseWithoutCanary(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "kr")
	raw, err := kr.Open(kr.Config{AllowedBackends: []kr.BackendType{kr.FileBackend}, FileDir: dir,
		FilePasswordFunc: kr.FixedStringPrompt("old")})
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Set(kr.Item{Key: "legacy", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	k, _ := Open(ctx, fileOpts(t, dir, filepath.Join(t.TempDir(), "l"), "new"))
	if err := k.Set(ctx, Item{Key: "source:x", Data: []byte("y")}); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Set: %v, want ErrWrongPassphrase", err)
	}
	ok, _ := Open(ctx, fileOpts(t, dir, filepath.Join(t.TempDir(), "l"), "old"))
	if err := ok.Set(ctx, Item{Key: "source:x", Data: []byte("y")}); err != nil {
		t.Fatalf("Set with the right passphrase: %v", err)
	}
}

func TestFileNeedsPassphrase(t *testing.T) {
	ctx := context.Background()
	o := fileOpts(t, filepath.Join(t.TempDir(), "kr"), filepath.Join(t.TempDir(), "l"), "")
	k, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	err = k.Set(ctx, Item{Key: "k", Data: []byte("v")})
	if err == nil || !strings.Contains(err.Error(), EnvFilePassphrase) {
		t.Fatalf("want an error naming %s, got %v", EnvFilePassphrase, err)
	}
	// With a prompt, it is asked once per handle.
	calls := 0
	o.Prompt = func(context.Context, string) (string, error) { calls++; return "typed", nil }
	k, _ = Open(ctx, o)
	for i := 0; i < 3; i++ {
		if err := k.Set(ctx, Item{Key: fmt.Sprint("k", i), Data: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Fatalf("prompted %d times, want 1", calls)
	}
}

// TestFileConcurrent hammers one key from goroutines and from child
// processes. Without the lock, the library's truncate-then-write makes most
// concurrent reads fail to decode.
func TestFileConcurrent(t *testing.T) {
	ctx := context.Background()
	dir, lock := filepath.Join(t.TempDir(), "kr"), filepath.Join(t.TempDir(), "kr.lock")
	k, _ := Open(ctx, fileOpts(t, dir, lock, "pw"))
	if err := k.Set(ctx, Item{Key: "shared", Data: []byte("value-initial")}); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=hammer", "CHILD_BACKEND=file", "CHILD_SERVICE=ssmproxy-test",
				"CHILD_DIR="+dir, "CHILD_LOCK="+lock, EnvFilePassphrase+"=pw")
			out, err := cmd.CombinedOutput()
			if err != nil || string(out) != "ok" {
				errs <- fmt.Errorf("child: %v %s", err, out)
			}
		}()
	}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, _ := Open(ctx, fileOpts(t, dir, lock, "pw"))
			for i := 0; i < 10; i++ {
				if err := h.Set(ctx, Item{Key: "shared", Data: []byte(fmt.Sprintf("value-g%d-%d", g, i))}); err != nil {
					errs <- err
					return
				}
				if it, err := h.Get(ctx, "shared"); err != nil || !strings.HasPrefix(string(it.Data), "value-") {
					errs <- fmt.Errorf("torn read: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestExplicitBackendAndReasons(t *testing.T) {
	ctx := context.Background()
	_, err := Open(ctx, Options{Backend: "nonesuch"})
	if err == nil || !strings.Contains(err.Error(), "unknown keyring backend") || !strings.Contains(err.Error(), EnvBackend) {
		t.Fatalf("unknown backend: %v", err)
	}
	// secret-service without a session bus is skipped with its reason.
	_, err = Open(ctx, Options{Backend: "secret-service", Getenv: func(string) string { return "" }})
	if err == nil || !strings.Contains(err.Error(), "secret-service") {
		t.Fatalf("want a reason naming secret-service, got %v", err)
	}
	// Automatic selection for long-term keys never lands on keyctl.
	k, err := Open(ctx, Options{Persistent: true, FileDir: t.TempDir(), LockPath: filepath.Join(t.TempDir(), "l"),
		PassDir: t.TempDir(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	if k.Backend() == "keyctl" {
		t.Fatal("persistent automatic selection chose keyctl")
	}
}

func TestItemRedaction(t *testing.T) {
	it := Item{Key: "source:x", Data: []byte("TOPSECRETVALUE")}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("item", "it", it)
	for _, s := range []string{fmt.Sprint(it), fmt.Sprintf("%+v", it), fmt.Sprintf("%#v", it), logs.String()} {
		if strings.Contains(s, "TOPSECRET") {
			t.Fatalf("secret in %q", s)
		}
	}
}

func TestMemoryStore(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	if _, err := m.Get(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	_ = m.Set(ctx, Item{Key: "x", Data: []byte("1")})
	it, _ := m.Get(ctx, "x")
	it.Data[0] = '2'
	if again, _ := m.Get(ctx, "x"); string(again.Data) != "1" {
		t.Fatal("Get must return a copy")
	}
	keys, _ := m.Keys(ctx)
	if len(keys) != 1 || m.Backend() != "memory" {
		t.Fatal(keys)
	}
}

// TestUnavailableKeychainHint: a macOS build without cgo names the reason
// and the way to the Keychain; elsewhere the plain reason.
func TestUnavailableKeychainHint(t *testing.T) {
	if got := unavailable(Keychain, "darwin", false); !strings.Contains(got, "without cgo") || !strings.Contains(got, "go install") {
		t.Errorf("darwin without cgo: %q", got)
	}
	if got := unavailable(Keychain, "linux", false); got != "keychain: not available on this platform or session" {
		t.Errorf("linux: %q", got)
	}
}

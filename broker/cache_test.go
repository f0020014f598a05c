package broker

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/keyring"
)

// The test binary doubles as an ssmproxy-like child for the cross-process
// single-minter test.
const childEnv = "SSMPROXY_BROKER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// childMain is one "process" wanting credentials: it builds a broker from
// the environment (exported long-term key, SSMPROXY_ROLE_ARN), runs its
// refresh timer, and prints the access key id it got first and the one it
// got after the first refresh.
func childMain() int {
	b, err := New(context.Background(), Options{Target: testTarget, CacheDir: os.Getenv("CHILD_CACHE"),
		LockDir: os.Getenv("CHILD_LOCKS"), Notice: io.Discard,
		Keyring: func(context.Context, bool) (keyring.Store, error) { return keyring.NewMemory(), nil }})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer b.Close()
	ctx := context.Background()
	if err := b.Prepare(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := b.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	first, err := b.Retrieve(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		c, err := b.Retrieve(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if c.AccessKeyID != first.AccessKeyID {
			fmt.Print(first.AccessKeyID, " ", c.AccessKeyID)
			return 0
		}
	}
	fmt.Fprintln(os.Stderr, "no refresh within 30 s")
	return 1
}

func testEntry(key, akid string) *entry {
	now := time.Now()
	return &entry{Version: cacheVersion, Key: key, Profile: "p", Region: "us-east-1", Source: "test",
		Credentials: Credentials{AccessKeyID: akid, SecretAccessKey: "secret-" + akid + strings.Repeat("s", 3000),
			SessionToken: "token", Issued: now, Expires: now.Add(time.Hour)}}
}

func TestCacheFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ssmproxy", "creds")
	c := fileCache{dir: dir}
	if e, err := c.read("k"); e != nil || err != nil {
		t.Fatalf("empty cache: %v %v", e, err)
	}
	if err := c.write(testEntry("k", "ASIAONE")); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir mode %v", st.Mode().Perm())
	}
	fst, _ := os.Stat(c.path("k"))
	if fst.Mode().Perm() != 0o600 {
		t.Fatalf("cache file mode %v", fst.Mode().Perm())
	}
	e, err := c.read("k")
	if err != nil || e == nil || e.Credentials.AccessKeyID != "ASIAONE" || e.Credentials.Expires.IsZero() {
		t.Fatalf("read back: %v %v", e, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left behind: %v", ents)
	}
	// A file others can read, a symlink, garbage or a wrong key are misses.
	os.Chmod(c.path("k"), 0o644)
	if e, err := c.read("k"); e != nil || err == nil {
		t.Fatal("a group/world-readable cache file was accepted")
	}
	os.Chmod(c.path("k"), 0o600)
	os.Symlink(c.path("k"), c.path("link"))
	if e, _ := c.read("link"); e != nil {
		t.Fatal("a symlinked cache file was accepted")
	}
	os.WriteFile(c.path("bad"), []byte("{not json"), 0o600)
	if e, _ := c.read("bad"); e != nil {
		t.Fatal("garbage accepted")
	}
	os.WriteFile(c.path("other"), []byte(`{"version":1,"key":"k","credentials":{"access_key_id":"A","secret_access_key":"B"}}`), 0o600)
	if e, _ := c.read("other"); e != nil {
		t.Fatal("an entry under the wrong name was accepted")
	}
}

// TestCacheAtomicReplace: readers racing many writers only ever see a
// complete entry, old or new.
func TestCacheAtomicReplace(t *testing.T) {
	c := fileCache{dir: t.TempDir()}
	if err := c.write(testEntry("k", "ASIA0")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.write(testEntry("k", fmt.Sprintf("ASIAW%dN%d", w, i))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				e, err := c.read("k")
				if err != nil || e == nil || !strings.HasPrefix(e.Credentials.SecretAccessKey, "secret-"+e.Credentials.AccessKeyID) {
					errs <- fmt.Errorf("torn or missing read: %v", err)
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSingleMinterProcesses: twelve processes start at once against a slow
// STS and keep going until their credentials were refreshed once: exactly
// one AssumeRole per mint (two in all), and all use the same credentials.
func TestSingleMinterProcesses(t *testing.T) {
	const ttl = 8 * time.Second // refreshed 1.3-2 s before expiry
	e := newTestEnv(t, fakeaws.Options{CredTTL: ttl})
	e.ts.IAM.SetSTSDelay(700 * time.Millisecond)
	exe, _ := os.Executable()
	env := append(os.Environ(), childEnv+"=1", "CHILD_CACHE="+e.cacheDir, "CHILD_LOCKS="+e.lockDir,
		"AWS_ACCESS_KEY_ID="+e.ts.User.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+e.ts.User.SecretAccessKey,
		EnvRoleARN+"="+e.roleARN)
	const n = 12
	var wg sync.WaitGroup
	outs := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = env
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Errorf("child %d: %v %s", i, err, stderr.String())
			}
			outs[i] = string(out)
		}()
	}
	wg.Wait()
	if got := e.sts("AssumeRole"); got != 2 {
		t.Fatalf("%d processes made %d AssumeRole calls for two mints, want 2", n, got)
	}
	for i, o := range outs {
		keys := strings.Fields(o)
		if len(keys) != 2 || !strings.HasPrefix(keys[0], "ASIA") || keys[0] == keys[1] || o != outs[0] {
			t.Fatalf("child %d got %q, child 0 %q", i, o, outs[0])
		}
	}
	// Every AssumeRole was signed with the source key itself (not chained).
	for _, c := range e.calls("AssumeRole") {
		if c.CallerKeyID != e.ts.User.AccessKeyID {
			t.Fatalf("AssumeRole signed by %s", c.CallerKeyID)
		}
	}
}

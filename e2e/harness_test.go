// Package e2e runs the real binaries: bin/ssmproxy as ssh's ProxyCommand
// against bin/fakeaws, with the real OpenSSH client and server (and rsync),
// plus a pure-Go SSH variant that needs no OpenSSH server.
//
// OpenSSH tests skip when ssh or sshd is missing, unless
// SSMPROXY_E2E_REQUIRE_OPENSSH=1 (set by make e2e and CI), which turns the
// skip into a failure.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

var (
	ssmproxyBin string
	fakeawsBin  string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ssmproxy-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ssmproxyBin = filepath.Join(dir, "ssmproxy")
	fakeawsBin = filepath.Join(dir, "fakeaws")
	for _, b := range [][2]string{{ssmproxyBin, ".."}, {fakeawsBin, "../fakeaws/cmd/fakeaws"}} {
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", b[1], err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireOpenSSH skips (or fails under SSMPROXY_E2E_REQUIRE_OPENSSH=1) when
// the named OpenSSH programs are missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if tool == "sshd" {
				if _, err := os.Stat("/usr/sbin/sshd"); err == nil {
					continue
				}
			}
			if os.Getenv("SSMPROXY_E2E_REQUIRE_OPENSSH") == "1" {
				t.Fatalf("%s is required (SSMPROXY_E2E_REQUIRE_OPENSSH=1) but not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

// fake is a running bin/fakeaws process.
type fake struct {
	t     *testing.T
	cmd   *exec.Cmd
	env   []string // the export lines as KEY=VALUE
	url   string
	log   *bytes.Buffer
	allow map[string]bool
}

func startFake(t *testing.T, args ...string) *fake {
	t.Helper()
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	log := &bytes.Buffer{}
	cmd := exec.Command(fakeawsBin, append([]string{"-env-file", envFile}, args...)...)
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fake{t: t, cmd: cmd, log: log, allow: map[string]bool{}}
	t.Cleanup(f.stop)
	if !fakeaws.WaitFor(20*time.Second, func() bool { _, err := os.Stat(envFile); return err == nil }) {
		t.Fatalf("fakeaws did not start: %s", log)
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(envFile); st.Mode().Perm() != 0o600 {
		t.Errorf("env file mode %v, want 0600 (it holds a secret)", st.Mode().Perm())
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		kv := strings.TrimPrefix(line, "export ")
		k, v, _ := strings.Cut(kv, "=")
		v = strings.Trim(v, "'")
		f.env = append(f.env, k+"="+v)
		if k == "FAKEAWS_URL" {
			f.url = v
		}
	}
	return f
}

func (f *fake) stop() {
	if f.cmd.Process == nil {
		return
	}
	// Violations first, while the fake still answers.
	var vs []fakeaws.Violation
	if err := f.getJSON("/_fake/violations?severity=error", &vs); err == nil {
		for _, v := range vs {
			if !f.allow[v.Code] {
				f.t.Errorf("fakeaws violation %s: %s (session %s)", v.Code, v.Detail, v.Session)
			}
		}
	} else {
		f.t.Errorf("reading violations: %v", err)
	}
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- f.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = f.cmd.Process.Kill()
		<-done
		f.t.Errorf("fakeaws did not stop on SIGTERM")
	}
	f.cmd.Process = nil
}

func (f *fake) getJSON(path string, v any) error {
	resp, err := http.Get(f.url + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (f *fake) post(path string, body string) error {
	resp, err := http.Post(f.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return nil
}

func (f *fake) stats() fakeaws.Stats {
	var st fakeaws.Stats
	if err := f.getJSON("/_fake/stats", &st); err != nil {
		f.t.Fatal(err)
	}
	return st
}

// environ is the environment for ssmproxy: the fake's endpoints and keys,
// nothing from the developer's own AWS setup.
func (f *fake) environ(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.t.TempDir(),
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}
	env = append(env, f.env...)
	return append(env, extra...)
}

// sshd is a throwaway OpenSSH server on loopback.
type sshd struct {
	port    string
	dir     string
	userKey string
	user    string
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

func startSSHD(t *testing.T) *sshd {
	t.Helper()
	requireTools(t, "ssh", "sshd", "ssh-keygen")
	sshdPath, err := exec.LookPath("sshd")
	if err != nil {
		sshdPath = "/usr/sbin/sshd"
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"host", "user"} {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory, when root
	port := freePort(t)
	conf := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s/host
AuthorizedKeysFile %s/authorized_keys
PidFile %s/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
`, port, dir, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	logf, _ := os.Create(filepath.Join(dir, "sshd.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	if !fakeaws.WaitFor(10*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		b, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
		t.Fatalf("sshd did not start: %s", b)
	}
	user := os.Getenv("USER")
	if user == "" {
		user = "root"
	}
	if u, err := exec.Command("id", "-un").Output(); err == nil {
		user = strings.TrimSpace(string(u))
	}
	return &sshd{port: port, dir: dir, userKey: filepath.Join(dir, "user"), user: user}
}

// sshConfig writes an ssh_config using ssmproxy as the ProxyCommand and
// returns its path.
func (d *sshd) sshConfig(t *testing.T, proxyArgs string) string {
	p := filepath.Join(t.TempDir(), "ssh_config")
	conf := fmt.Sprintf(`Host i-* mi-*
    User %s
    Port %s
    IdentityFile %s
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
    ProxyCommand %s connect %s %%h %%p
`, d.user, d.port, d.userKey, ssmproxyBin, proxyArgs)
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs a command with env, failing the test on a non-zero exit.
func run(t *testing.T, env []string, stdin io.Reader, name string, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, tail(out.String()), errb.String())
	}
	return out.String(), errb.String()
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// lineReader helps interactive tests wait for output lines.
type lineReader struct {
	lines chan string
}

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.lines <- sc.Text()
		}
		close(lr.lines)
	}()
	return lr
}

func (lr *lineReader) expect(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	select {
	case got, ok := <-lr.lines:
		if !ok {
			t.Fatalf("output ended, want %q", want)
		}
		if got != want {
			t.Fatalf("got line %q, want %q", got, want)
		}
	case <-time.After(timeout):
		t.Fatalf("no line within %s, want %q", timeout, want)
	}
}

// Package rig starts the real processes the e2e suite, the benchmark and
// the demo run against: bin/fakeaws, a throwaway OpenSSH sshd (or the
// pure-Go server), and ssh_config files that use ssmproxy as ProxyCommand.
package rig

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// Target is the instance bin/fakeaws registers by default.
const Target = fakeaws.DefaultInstance

// Fake is a running bin/fakeaws process.
type Fake struct {
	cmd  *exec.Cmd
	Env  []string // the env file's variables as KEY=VALUE
	URL  string   // FAKEAWS_URL: API and admin endpoint
	Log  *SyncBuffer
	once sync.Once
	// http reaches the admin endpoint; with -tls it trusts the fake's CA
	// (AWS_CA_BUNDLE in the env file) and nothing else.
	http *http.Client
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers
// (a child process's output read while it runs).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartFake runs bin/fakeaws with args plus -env-file in dir and waits until
// it is ready.
func StartFake(bin, dir string, args ...string) (*Fake, error) {
	envFile := filepath.Join(dir, "fakeaws.env")
	f := &Fake{Log: &SyncBuffer{}}
	f.cmd = exec.Command(bin, append([]string{"-env-file", envFile}, args...)...)
	f.cmd.Stdout, f.cmd.Stderr = f.Log, f.Log
	if err := f.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(envFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			f.Stop()
			return nil, fmt.Errorf("fakeaws did not start: %s", f.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		f.Stop()
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		v = strings.ReplaceAll(strings.Trim(v, "'"), `'\''`, "'")
		f.Env = append(f.Env, k+"="+v)
		if k == "FAKEAWS_URL" {
			f.URL = v
		}
		if k == "AWS_CA_BUNDLE" {
			pem, err := os.ReadFile(v)
			roots := x509.NewCertPool()
			if err != nil || !roots.AppendCertsFromPEM(pem) {
				f.Stop()
				return nil, fmt.Errorf("fakeaws CA bundle %s: %v", v, err)
			}
			f.http = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		}
	}
	if f.http == nil {
		f.http = http.DefaultClient
	}
	return f, nil
}

// EnvFileMode returns the permission bits of the env file, which holds a
// secret.
func EnvFileMode(dir string) (os.FileMode, error) {
	st, err := os.Stat(filepath.Join(dir, "fakeaws.env"))
	if err != nil {
		return 0, err
	}
	return st.Mode().Perm(), nil
}

// Stop sends SIGTERM and waits (killing after 15 s). It reports whether the
// fake stopped by itself.
func (f *Fake) Stop() bool {
	clean := true
	f.once.Do(func() {
		_ = f.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = f.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = f.cmd.Process.Kill()
			<-done
			clean = false
		}
	})
	return clean
}

// Pid is the fake's process id (the benchmark reads its CPU time).
func (f *Fake) Pid() int { return f.cmd.Process.Pid }

// GetJSON reads an admin endpoint.
func (f *Fake) GetJSON(path string, v any) error {
	resp, err := f.http.Get(f.URL + path)
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

// Post calls an admin endpoint.
func (f *Fake) Post(path, body string) error {
	resp, err := f.http.Post(f.URL+path, "application/json", strings.NewReader(body))
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

// Stats reads /_fake/stats.
func (f *Fake) Stats() (fakeaws.Stats, error) {
	var st fakeaws.Stats
	err := f.GetJSON("/_fake/stats", &st)
	return st, err
}

// Violations reads the error-level violations.
func (f *Fake) Violations() ([]fakeaws.Violation, error) {
	var vs []fakeaws.Violation
	err := f.GetJSON("/_fake/violations?severity=error", &vs)
	return vs, err
}

// Environ is the environment for ssmproxy and ssh: the fake's endpoints and
// keys, PATH, a private HOME, and nothing from the caller's AWS setup.
func (f *Fake) Environ(home string, extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}
	env = append(env, f.Env...)
	return append(env, extra...)
}

// SSHD is a throwaway OpenSSH server on loopback.
type SSHD struct {
	Port    string
	Dir     string
	UserKey string // private key accepted by the server
	User    string
	cmd     *exec.Cmd
	log     *os.File
}

// ErrNoOpenSSH is returned when sshd or ssh-keygen is not installed.
var ErrNoOpenSSH = errors.New("OpenSSH server not installed")

// SSHDPath finds sshd (often outside PATH, in /usr/sbin).
func SSHDPath() (string, error) {
	if p, err := exec.LookPath("sshd"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoOpenSSH
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p, nil
}

// KeyPair writes an ed25519 key pair at path (and path.pub) with ssh-keygen.
func KeyPair(path string) error {
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ssmproxy-rig", "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	return nil
}

// StartSSHD runs OpenSSH's sshd in the foreground on a free loopback port,
// with keys and configuration in dir (which must be private to this run).
func StartSSHD(dir string) (*SSHD, error) { return StartSSHDKeys(dir, "") }

// StartSSHDKeys is StartSSHD with AuthorizedKeysFile set to authorizedKeys
// (an absolute path; "" means dir/authorized_keys holding UserKey), e.g. the
// file bin/fakeaws -eic-authorized-keys writes pushed keys to.
func StartSSHDKeys(dir, authorizedKeys string) (*SSHD, error) {
	sshdPath, err := SSHDPath()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		return nil, ErrNoOpenSSH
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, k := range []string{"host", "user"} {
		if err := KeyPair(filepath.Join(dir, k)); err != nil {
			return nil, err
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	if authorizedKeys == "" {
		authorizedKeys = filepath.Join(dir, "authorized_keys")
	}
	if os.Geteuid() == 0 {
		_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %[2]s/host
AuthorizedKeysFile %[3]s
PidFile %[2]s/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
`, port, dir, authorizedKeys)
	confPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	d := &SSHD{Port: port, Dir: dir, UserKey: filepath.Join(dir, "user"), User: CurrentUser(), cmd: cmd, log: logf}
	if err := WaitTCP("127.0.0.1:"+port, 10*time.Second); err != nil {
		d.Stop()
		b, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
		return nil, fmt.Errorf("sshd did not start: %v: %s", err, b)
	}
	return d, nil
}

// Stop kills sshd.
func (d *SSHD) Stop() {
	_ = d.cmd.Process.Kill()
	_ = d.cmd.Wait()
	d.log.Close()
}

// CurrentUser is the login name of this process's user.
func CurrentUser() string {
	if u, err := exec.Command("id", "-un").Output(); err == nil {
		return strings.TrimSpace(string(u))
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SSHConfig writes an ssh_config in dir for hosts i-* and mi-* that connects
// as user with key to port through proxyCommand (which receives %h %p) and
// returns its path.
func SSHConfig(dir, user, key, port, proxyCommand string) (string, error) {
	p := filepath.Join(dir, "ssh_config")
	conf := fmt.Sprintf(`Host i-* mi-*
    User %s
    Port %s
    IdentityFile %s
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
    ProxyCommand %s %%h %%p
`, user, port, key, proxyCommand)
	return p, os.WriteFile(p, []byte(conf), 0o600)
}

// Run runs a command with env and returns stdout, stderr and the error.
func Run(ctx context.Context, env []string, stdin io.Reader, name string, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), err
}

// PipeConn is a net.Conn over a ProxyCommand's stdout (Reader) and stdin
// (WriteCloser), which is how ssh talks through ssmproxy. Deadlines are not
// supported.
type PipeConn struct {
	io.Reader
	io.WriteCloser
}

func (PipeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (PipeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (PipeConn) SetDeadline(time.Time) error      { return nil }
func (PipeConn) SetReadDeadline(time.Time) error  { return nil }
func (PipeConn) SetWriteDeadline(time.Time) error { return nil }

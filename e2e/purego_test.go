//go:build unix

package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ssmproxy/ssmproxy/internal/rig"
	"github.com/ssmproxy/ssmproxy/internal/sshserver"
)

// proxyDial starts `ssmproxy connect target port` and returns an SSH client
// speaking over its stdin/stdout, and the process.
func proxyDial(t *testing.T, env []string, port string, signer ssh.Signer) (*ssh.Client, *exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(ssmproxyBin, "connect", target, port)
	cmd.Env = env
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn := rig.PipeConn{Reader: stdout, WriteCloser: stdin}
	c, chans, reqs, err := ssh.NewClientConn(conn, "ssm", &ssh.ClientConfig{
		User: "test", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second,
	})
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("ssh handshake through ssmproxy: %v; ssmproxy stderr: %s", err, stderr)
	}
	return ssh.NewClient(c, chans, reqs), cmd, stderr
}

func execOutput(t *testing.T, c *ssh.Client, command string, stdin io.Reader) []byte {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Stdin = stdin
	out, err := s.Output(command)
	if err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	return out
}

// TestPureGoSSH runs an x/crypto/ssh client over bin/ssmproxy to the pure-Go
// SSH server through bin/fakeaws: 64 MiB each way with checksums, while the
// service closes the websocket every second. It needs no OpenSSH.
func TestPureGoSSH(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	signer, _ := ssh.NewSignerFromKey(priv)
	srv, err := sshserver.Start("127.0.0.1:0", sshPub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// The ideal agent (resends every expired message): the real agent's
	// head-only resend would need one 100 ms tick per message lost at each
	// close, which says nothing about ssmproxy (see TestTransfersRealisticAgent).
	f := startFake(t, "-realistic-agent=false", "-close-every", "1s")
	client, cmd, stderr := proxyDial(t, f.environ(), srv.Port(), signer)

	const size = 64 << 20
	want := sha256.New()
	if _, err := io.Copy(want, io.LimitReader(sshserver.NewSource(1), size)); err != nil {
		t.Fatal(err)
	}
	wantSum := hex.EncodeToString(want.Sum(nil))

	start := time.Now()
	out := execOutput(t, client, "ssmproxy-sink", io.LimitReader(sshserver.NewSource(1), size))
	if got := strings.TrimSpace(string(out)); got != fmt.Sprintf("%d %s", size, wantSum) {
		t.Fatalf("upload: server saw %q, want %d %s", got, size, wantSum)
	}
	up := time.Since(start)

	start = time.Now()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	r, _ := sess.StdoutPipe()
	if err := sess.Start(fmt.Sprintf("ssmproxy-source %d", size)); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	if err := sess.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantSum {
		t.Fatalf("download checksum %s, want %s", got, wantSum)
	}
	down := time.Since(start)

	if got := string(execOutput(t, client, "ssmproxy-echo", strings.NewReader("ping\n"))); got != "ping\n" {
		t.Fatalf("echo %q", got)
	}
	client.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ssmproxy: %v; stderr: %s", err, stderr)
	}
	if stderr.Len() != 0 {
		t.Errorf("ssmproxy wrote to stderr on success: %s", stderr)
	}
	st := f.stats()
	t.Logf("64 MiB up %s (%.0f MB/s), down %s (%.0f MB/s); closes %d, ResumeSession %v", up.Round(time.Millisecond),
		size/up.Seconds()/1e6, down.Round(time.Millisecond), size/down.Seconds()/1e6, st.ScheduledCloses, st.API["ResumeSession"])
	if st.API["ResumeSession"]["200"] == 0 {
		t.Fatal("no reconnect was exercised")
	}
	if st.API["TerminateSession"]["200"] != 1 {
		t.Fatalf("TerminateSession %v, want one call on stdin EOF", st.API["TerminateSession"])
	}
}

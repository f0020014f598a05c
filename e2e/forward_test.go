//go:build unix

package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// forwarder is a running `ssmproxy forward`.
type forwarder struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *rig.SyncBuffer
	addrs  []string // listener addresses, in the order of the ready lines
	done   chan error
}

var readyLine = regexp.MustCompile(`^listening on (\S+) → (.+) via (\S+)$`)

// startForward runs ssmproxy forward with args and waits for want ready
// lines.
func startForward(t *testing.T, env []string, want int, args ...string) *forwarder {
	t.Helper()
	cmd := exec.Command(ssmproxyBin, append([]string{"forward"}, args...)...)
	cmd.Env = env
	pr, pw := io.Pipe()
	fw := &forwarder{t: t, cmd: cmd, stderr: &rig.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = io.MultiWriter(fw.stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { fw.done <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := readyLine.FindStringSubmatch(sc.Text()); m != nil {
				lines <- m[1]
			}
		}
		close(lines)
		_, _ = io.Copy(io.Discard, pr)
	}()
	timeout := time.After(30 * time.Second)
	for len(fw.addrs) < want {
		select {
		case a, ok := <-lines:
			if !ok {
				t.Fatalf("forward ended before %d ready lines: %s", want, fw.stderr)
			}
			fw.addrs = append(fw.addrs, a)
		case <-timeout:
			t.Fatalf("no %d ready lines within 30 s: %s", want, fw.stderr)
		}
	}
	return fw
}

// stop sends SIGTERM and returns the exit code.
func (fw *forwarder) stop() int {
	_ = fw.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-fw.done:
	case <-time.After(30 * time.Second):
		fw.t.Fatalf("forward did not exit 30 s after SIGTERM: %s", fw.stderr)
	}
	return fw.cmd.ProcessState.ExitCode()
}

// echoPort is a loopback echo service the fake agent can dial.
func echoPort(t *testing.T) string { return fakeaws.Listen(t, fakeaws.Echo) }

// echoStall is echoConn that also returns the longest wait for an echo.
func echoStall(addr string, chunk int, interval, d time.Duration) (time.Duration, error) {
	var worst time.Duration
	_, err := echoConnTimed(addr, chunk, interval, d, func(w time.Duration) { worst = max(worst, w) })
	return worst, err
}

// echoConn moves data both ways through one connection for d: chunk bytes
// every interval, each echoed back, and compares the SHA-256 of everything
// sent with everything received.
func echoConn(addr string, chunk int, interval, d time.Duration) (int64, error) {
	return echoConnTimed(addr, chunk, interval, d, func(time.Duration) {})
}

func echoConnTimed(addr string, chunk int, interval, d time.Duration, waited func(time.Duration)) (int64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	sent, got := sha256.New(), sha256.New()
	var n int64
	buf, back := make([]byte, chunk), make([]byte, chunk)
	for start := time.Now(); ; {
		_, _ = rand.Read(buf)
		sent.Write(buf)
		if _, err := c.Write(buf); err != nil {
			return n, fmt.Errorf("after %d bytes: write: %w", n, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
		asked := time.Now()
		if _, err := io.ReadFull(c, back); err != nil {
			return n, fmt.Errorf("after %d bytes: read: %w", n, err)
		}
		waited(time.Since(asked))
		got.Write(back)
		n += int64(chunk)
		if time.Since(start) >= d {
			break
		}
		time.Sleep(interval)
	}
	if string(sent.Sum(nil)) != string(got.Sum(nil)) {
		return n, fmt.Errorf("checksums differ after %d bytes", n)
	}
	return n, nil
}

// TestForwardThirtyTwoConnectionsSurvive: 32 TCP connections through one
// `forward -L` session move data both ways for 30 s while the service
// closes the data channel every 5 s and credentials live 20 s: every
// checksum is equal, no connection is dropped, one session serves them all
// (issue 8; docs/protocol.md 11.4).
func TestForwardThirtyTwoConnectionsSurvive(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo)
	f := startFake(t, "-cred-ttl", "20s", "-close-every", "5s", "-role", brokerRole)
	w := newBrokerWorld(t, f)
	w.login("default")
	fw := startForward(t, w.base, 1, target, "-L", "0:localhost:"+port)

	const conns = 32
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	var total int64
	var mu sync.Mutex
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := echoConn(fw.addrs[0], 4<<10, 250*time.Millisecond, 30*time.Second)
			mu.Lock()
			total += n
			mu.Unlock()
			if err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if code := fw.stop(); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0: %s", code, fw.stderr)
	}
	st := f.stats()
	t.Logf("%d connections, %d KiB echoed both ways; StartSession %d, ResumeSession %d, AssumeRole %d, TerminateSession %d",
		conns, total>>10, st.API["StartSession"]["200"], st.API["ResumeSession"]["200"], st.STS["AssumeRole"], st.API["TerminateSession"]["200"])
	if n := st.API["StartSession"]["200"]; n != 1 {
		t.Errorf("%d StartSession calls, want 1: the session must resume, not restart", n)
	}
	if n := st.API["ResumeSession"]["200"]; n < 4 {
		t.Errorf("%d ResumeSession calls, want at least 4 (closes every 5 s for 30 s)", n)
	}
	if n := st.STS["AssumeRole"]; n < 2 {
		t.Errorf("%d AssumeRole calls, want at least 2 (20 s credentials over 30 s)", n)
	}
	if n := st.API["TerminateSession"]["200"]; n != 1 {
		t.Errorf("%d TerminateSession calls after SIGTERM, want 1", n)
	}
	checkNoViolations(t, f)
}

// checkNoViolations fails on any violation the fake recorded.
func checkNoViolations(t *testing.T, f *fake) {
	t.Helper()
	vs, err := f.Violations()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		t.Errorf("fake violation: %+v", v)
	}
}

// TestForwardListeners: several -L in one process, a unix socket, a
// remote host, LPORT 0, the ready lines, ConnectToPortError closing only
// that connection, and a clean exit on SIGTERM.
func TestForwardListeners(t *testing.T) {
	p1 := fakeaws.Listen(t, fakeaws.Echo)
	p2 := fakeaws.Listen(t, fakeaws.Echo)
	refused := freePort(t)
	f := startFake(t)
	sock := t.TempDir() + "/fw.sock"
	fw := startForward(t, f.environ(), 4, target,
		"-L", "0:localhost:"+p1, "-L", "unix:"+sock+":127.0.0.1:"+p2, "-L", "127.0.0.1:0:localhost:"+refused, "-D", "0")
	if fw.addrs[1] != "unix:"+sock {
		t.Fatalf("ready lines %q, want the unix socket second", fw.addrs)
	}
	if _, err := echoConn(fw.addrs[0], 1000, 0, 0); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("over unix"))
	back := make([]byte, 9)
	if _, err := io.ReadFull(c, back); err != nil || string(back) != "over unix" {
		t.Fatalf("unix socket echo %q, %v", back, err)
	}
	c.Close()
	// A port nobody listens on: that connection closes, the listener stays.
	for range 2 {
		c, err := net.Dial("tcp", fw.addrs[2])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("x"))
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("refused destination: read %d, %v; want EOF", n, err)
		}
		c.Close()
	}
	if _, err := echoConn(fw.addrs[0], 1000, 0, 0); err != nil {
		t.Fatalf("after the refused connections: %v", err)
	}
	if code := fw.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM: %s", code, fw.stderr)
	}
	if n := strings.Count(fw.stderr.String(), "ConnectToPortError"); n != 2 {
		t.Errorf("%d ConnectToPortError lines, want 2: %s", n, fw.stderr)
	}
	st := f.stats()
	if s, term := st.API["StartSession"]["200"], st.API["TerminateSession"]["200"]; s != 3 || term != 3 {
		t.Errorf("StartSession %d, TerminateSession %d; want 3 each (one per -L, none yet for -D)", s, term)
	}
	checkNoViolations(t, f)
}

func freePort(t *testing.T) string {
	p, err := rig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestForwardBindFailure: a listener that cannot bind exits 2 with one line
// naming the address, before any AWS call.
func TestForwardBindFailure(t *testing.T) {
	f := startFake(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, errOut, err := rig.Run(ctx, f.environ(), nil, ssmproxyBin, "forward", target, "-L", port+":localhost:22")
	code := -1
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	if code != 2 || out != "" || !strings.Contains(errOut, "127.0.0.1:"+port) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and one line naming the address", code, out, errOut)
	}
	if n := f.stats().API["StartSession"]["200"]; n != 0 {
		t.Fatalf("%d StartSession calls", n)
	}
}

// httpServer serves its own name on loopback and returns its port.
func httpServer(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestForwardSOCKSCurl: curl through `forward -D` reaches several local
// HTTP servers, by address and by name; each destination gets its own
// ToRemoteHost session, reused by later requests to it.
func TestForwardSOCKSCurl(t *testing.T) {
	requireTools(t, "curl")
	ports := []string{httpServer(t, "alpha"), httpServer(t, "beta"), httpServer(t, "gamma")}
	f := startFake(t)
	fw := startForward(t, f.environ(), 1, target, "-D", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for round := range 2 {
		for i, port := range ports {
			host := "127.0.0.1"
			if i == 2 {
				host = "localhost" // resolved by the instance (--socks5-hostname)
			}
			url := fmt.Sprintf("http://%s:%s/r%d", host, port, round)
			out, errOut, err := rig.Run(ctx, nil, nil, "curl", "-sS", "--max-time", "20", "--socks5-hostname", fw.addrs[0], url)
			want := fmt.Sprintf("%s /r%d\n", []string{"alpha", "beta", "gamma"}[i], round)
			if err != nil || out != want {
				t.Fatalf("curl %s: %q, %v %s; want %q", url, out, err, errOut, want)
			}
		}
	}
	if code := fw.stop(); code != 0 {
		t.Fatalf("exit %d: %s", code, fw.stderr)
	}
	st := f.stats()
	if n := st.API["StartSession"]["200"]; n != 3 {
		t.Errorf("%d StartSession calls for 3 destinations over 2 rounds, want 3", n)
	}
	if n := st.API["TerminateSession"]["200"]; n != 3 {
		t.Errorf("%d TerminateSession calls, want 3", n)
	}
	checkNoViolations(t, f)
}

// TestConnectVia: ssh and rsync to an sshd that has no agent, reached by
// host and port through the instance (`connect --via`, one smux stream on
// a ToRemoteHost session).
func TestConnectVia(t *testing.T) {
	requireTools(t, "ssh", "rsync")
	d := startSSHD(t)
	f := startFake(t)
	dir := t.TempDir()
	conf := dir + "/ssh_config"
	writeFile(t, conf, fmt.Sprintf(`Host db-host
    HostName 127.0.0.1
    Port %s
    User %s
    IdentityFile %s
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
    ProxyCommand %s connect --via %s %%h %%p
`, d.Port, d.User, d.UserKey, ssmproxyBin, target))
	env := f.environ()
	out, _ := run(t, env, nil, "ssh", "-F", conf, "db-host", "echo via-ok; uname -s")
	if !strings.HasPrefix(out, "via-ok\n") {
		t.Fatalf("ssh output %q", out)
	}
	src, sum := randomFile(t, dir, 4<<20)
	dst := t.TempDir() + "/copy"
	run(t, env, nil, "rsync", "-e", "ssh -F "+conf, src, "db-host:"+dst)
	if got := sha256File(t, dst); got != sum {
		t.Fatalf("rsync copy differs")
	}
	if n := f.stats().API["StartSession"]["200"]; n != 2 {
		t.Errorf("%d sessions, want 2 (ssh, rsync)", n)
	}
	checkNoViolations(t, f)
}

// TestForwardBasicModeOldAgent: an agent too old for smux (3.0.196.0 and
// before) runs the forwarding document in basic mode: the ready line says
// so, connections are carried one at a time with DisconnectToPort between
// them, and a second connection waits for the first instead of mixing
// its bytes into it (docs/protocol.md 11.3).
func TestForwardBasicModeOldAgent(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo)
	f := startFake(t, "-agent-version", "3.0.100.0")
	fw := startForward(t, f.environ(), 1, target, "-L", "0:localhost:"+port)
	if !strings.Contains(fw.stderr.String(), "one connection at a time") {
		t.Fatalf("ready line does not say basic mode: %s", fw.stderr)
	}
	first, err := net.Dial("tcp", fw.addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, 5)
	_ = first.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(first, back); err != nil || string(back) != "first" {
		t.Fatalf("first connection: %q, %v", back, err)
	}
	second := make(chan error, 1)
	go func() {
		_, err := echoConn(fw.addrs[0], 4096, 0, 0)
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("the second connection was carried while the first was open (%v)", err)
	case <-time.After(time.Second):
	}
	first.Close()
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("second connection: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the second connection was not carried after the first closed")
	}
	if code := fw.stop(); code != 0 {
		t.Fatalf("exit %d: %s", code, fw.stderr)
	}
	if n := f.stats().API["StartSession"]["200"]; n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	checkNoViolations(t, f)
}

//go:build unix

package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

const target = "i-0123456789abcdef0"

func TestSSHCommand(t *testing.T) {
	d := startSSHD(t)
	f := startFake(t)
	conf := d.sshConfig(t, "")
	out, stderr := run(t, f.environ(), nil, "ssh", "-F", conf, target, "echo hello over ssm; echo to-stderr >&2; exit 0")
	if out != "hello over ssm\n" {
		t.Fatalf("stdout %q", out)
	}
	if stderr != "to-stderr\n" {
		t.Fatalf("stderr %q (ssmproxy must stay quiet on success)", stderr)
	}
	// The remote exit status comes through.
	cmd := exec.Command("ssh", "-F", conf, target, "exit 7")
	cmd.Env = f.environ()
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("remote exit status: %v", err)
	}
	// Both sessions end: sshd closing the connection ends the first
	// (channel_closed), ssh's SIGHUP at exit may also terminate it through
	// the API; either way no session is left behind.
	if st := f.stats(); st.API["StartSession"]["200"] != 2 {
		t.Fatalf("API calls %v: want 2 StartSession", st.API)
	}
	if !fakeaws.WaitFor(15*time.Second, func() bool {
		var ss []fakeaws.SessionInfo
		if err := f.getJSON("/_fake/sessions", &ss); err != nil {
			return false
		}
		for _, s := range ss {
			if s.State != "Terminated" {
				return false
			}
		}
		return len(ss) == 2
	}) {
		var ss []fakeaws.SessionInfo
		_ = f.getJSON("/_fake/sessions", &ss)
		t.Fatalf("sessions left running: %+v", ss)
	}
}

// TestSSHInteractive drives a remote shell line by line with pauses, as a
// person would, and checks every answer arrives before the next command.
func TestSSHInteractive(t *testing.T) {
	d := startSSHD(t)
	f := startFake(t)
	conf := d.sshConfig(t, "")
	cmd := exec.Command("ssh", "-F", conf, "-T", target, "/bin/sh")
	cmd.Env = f.environ()
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lr := newLineReader(stdout)
	for i := 0; i < 5; i++ {
		fmt.Fprintf(stdin, "echo line-%d $((%d*%d))\n", i, i, i)
		lr.expect(t, fmt.Sprintf("line-%d %d", i, i*i), 20*time.Second)
		time.Sleep(300 * time.Millisecond)
	}
	// A larger burst in one go.
	fmt.Fprintf(stdin, "head -c 200000 /dev/zero | tr '\\0' x | wc -c\n")
	lr.expect(t, "200000", 30*time.Second)
	fmt.Fprintf(stdin, "exit 3\n")
	stdin.Close()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("shell exit: %v", err)
	}
}

func randomFile(t *testing.T, dir string, size int) (string, string) {
	t.Helper()
	p := filepath.Join(dir, "random.bin")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, int64(size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// transfers moves a random file of size up and down with scp and with
// rsync, comparing checksums each way.
func transfers(t *testing.T, f *fake, d *sshd, size int) {
	conf := d.sshConfig(t, "")
	local := t.TempDir()
	remote := t.TempDir() // same machine: the "instance" is this host
	src, sum := randomFile(t, local, size)
	env := f.environ()

	t.Run("scp-up", func(t *testing.T) {
		dst := filepath.Join(remote, "scp-up.bin")
		run(t, env, nil, "scp", "-q", "-F", conf, src, target+":"+dst)
		if got := sha256File(t, dst); got != sum {
			t.Fatalf("scp upload checksum %s, want %s", got, sum)
		}
	})
	t.Run("scp-down", func(t *testing.T) {
		dst := filepath.Join(local, "scp-down.bin")
		run(t, env, nil, "scp", "-q", "-F", conf, target+":"+src, dst)
		if got := sha256File(t, dst); got != sum {
			t.Fatalf("scp download checksum %s, want %s", got, sum)
		}
	})
	rsh := "ssh -F " + conf
	t.Run("rsync-up", func(t *testing.T) {
		requireTools(t, "rsync")
		dst := filepath.Join(remote, "rsync-up.bin")
		run(t, env, nil, "rsync", "-e", rsh, src, target+":"+dst)
		if got := sha256File(t, dst); got != sum {
			t.Fatalf("rsync upload checksum %s, want %s", got, sum)
		}
	})
	t.Run("rsync-down", func(t *testing.T) {
		requireTools(t, "rsync")
		dst := filepath.Join(local, "rsync-down.bin")
		run(t, env, nil, "rsync", "-e", rsh, target+":"+src, dst)
		if got := sha256File(t, dst); got != sum {
			t.Fatalf("rsync download checksum %s, want %s", got, sum)
		}
	})
}

const bulkSize = 64 << 20

// TestTransfers: scp and rsync of 64 MiB both ways. The agent keeps the
// real agent's quirks except its 1 ms pacing, which would make each
// download take over a minute (TestTransfersRealisticAgent covers it).
func TestTransfers(t *testing.T) {
	d := startSSHD(t)
	requireTools(t, "scp")
	f := startFake(t, "-agent-pacing=false")
	transfers(t, f, d, bulkSize)
	st := f.stats()
	t.Logf("frames: %+v %+v", *st.Frames["client_to_agent"], *st.Frames["agent_to_client"])
}

// TestTransfersAcrossCloses: the same while the service closes both
// websocket legs every 300 ms with 1000 "Bye"; every close must be resumed.
// (At one close a second, a transfer that got faster than a second was never
// cut and the test saw too few closes.)
// Frames in flight toward a closed leg are lost; the ideal agent resends
// every expired message, where the real agent's head-only resend would take
// a 100 ms tick per lost message (TestTransfersRealisticAgent covers it).
func TestTransfersAcrossCloses(t *testing.T) {
	d := startSSHD(t)
	requireTools(t, "scp")
	f := startFake(t, "-realistic-agent=false", "-close-every", "300ms")
	start := time.Now()
	transfers(t, f, d, bulkSize)
	st := f.stats()
	resumes := st.API["ResumeSession"]["200"]
	t.Logf("%s, scheduled closes %d, ResumeSession %v, client legs %+v", time.Since(start).Round(time.Second),
		st.ScheduledCloses, st.API["ResumeSession"], *st.Websocket["client"])
	// Every transfer of 64 MiB lasts well over 300 ms (about a second
	// unpaced on two cores), so each one is cut at least once.
	if st.ScheduledCloses < 4 || resumes < 4 {
		t.Fatalf("too few closes survived: closes %d, resumes %d", st.ScheduledCloses, resumes)
	}
	for code, n := range st.API["ResumeSession"] {
		if code != "200" {
			t.Errorf("ResumeSession answered %s %d times", code, n)
		}
	}
}

// TestTransfersRealisticAgent: the fully realistic agent (1 KiB + 1 ms
// pacing, head-only resend) with closes every 2 s, on a smaller file.
func TestTransfersRealisticAgent(t *testing.T) {
	d := startSSHD(t)
	requireTools(t, "scp")
	f := startFake(t, "-close-every", "2s")
	transfers(t, f, d, 3<<20)
	st := f.stats()
	if st.ScheduledCloses == 0 || st.API["ResumeSession"]["200"] == 0 {
		t.Fatalf("no close was survived: %+v", st.API)
	}
}

func TestSSHHostKeyAndStdoutHygiene(t *testing.T) {
	// ssh refuses anything that is not an SSH banner before the banner; a
	// single status line on stdout would break the connection. Run with -v
	// so ssmproxy logs a lot, on stderr only.
	d := startSSHD(t)
	f := startFake(t)
	conf := d.sshConfig(t, "-v -v")
	out, stderr := run(t, f.environ(), nil, "ssh", "-F", conf, target, "echo ok")
	if out != "ok\n" {
		t.Fatalf("stdout %q", out)
	}
	if !strings.Contains(stderr, "handshake complete") {
		t.Fatalf("expected verbose diagnostics on stderr, got %q", stderr)
	}
}

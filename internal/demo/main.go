// Command demo shows ssmproxy doing its job with no AWS account: it starts
// bin/fakeaws (with the real agent's pacing and quirks, closing the data
// channel's websocket every 10 s as the service does hourly) and a throwaway
// SSH server on loopback, then runs ssh, scp and rsync through
// `ssmproxy connect` and checks every byte. `make demo` runs it.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ssmproxy/ssmproxy/internal/rig"
	"github.com/ssmproxy/ssmproxy/internal/sshserver"
)

func main() {
	bin := flag.String("bin", "bin", "directory with ssmproxy and fakeaws")
	closeEvery := flag.Duration("close-every", 10*time.Second, "how often the fake closes the websocket")
	upMB := flag.Int("upload-mb", 40, "upload size in MiB")
	downMB := flag.Int("download-mb", 10, "download size in MiB (the realistic agent sends about 0.9 MB/s)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *closeEvery, *upMB, *downMB); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	ctx        context.Context
	work       string
	ssmproxy   string
	fake       *rig.Fake
	env        []string
	conf       string // ssh_config (OpenSSH client)
	client     *ssh.Client
	moved      int64
	transfers  int
	bwlimitKBs int
}

func run(ctx context.Context, binDir string, closeEvery time.Duration, upMB, downMB int) error {
	ssmproxy, _ := filepath.Abs(filepath.Join(binDir, "ssmproxy"))
	fakeaws, _ := filepath.Abs(filepath.Join(binDir, "fakeaws"))
	work, err := os.MkdirTemp("", "ssmproxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	d := &demo{ctx: ctx, work: work, ssmproxy: ssmproxy}

	fake, err := rig.StartFake(fakeaws, d.dir("fake"), "-close-every", closeEvery.String())
	if err != nil {
		return err
	}
	defer fake.Stop()
	d.fake = fake
	d.env = fake.Environ(d.dir("home"))
	fmt.Printf("ssmproxy demo: fakeaws (STS, SSM API, message gateway, SSM agent with the real agent's 1 KiB + 1 ms pacing)\n")
	fmt.Printf("              on %s, closing the data channel's websocket every %s\n", strings.TrimPrefix(fake.URL, "http://"), closeEvery)

	// The SSH server: OpenSSH when installed, else the pure-Go one.
	var port, user, key, serverName string
	if sd, err := rig.StartSSHD(d.dir("sshd")); err == nil {
		defer sd.Stop()
		port, user, key, serverName = sd.Port, sd.User, sd.UserKey, "OpenSSH sshd"
	} else {
		srv, k, err := d.goServer()
		if err != nil {
			return err
		}
		defer srv.Close()
		port, user, key, serverName = srv.Port(), rig.CurrentUser(), k, "pure-Go SSH server (OpenSSH sshd not installed)"
	}
	_, haveSSH := exec.LookPath("ssh")
	clientName := "OpenSSH ssh/scp/rsync"
	if haveSSH != nil {
		clientName = "pure-Go SSH client (OpenSSH ssh not installed)"
	}
	fmt.Printf("              %s on 127.0.0.1:%s, client: %s\n\n", serverName, port, clientName)
	if d.conf, err = rig.SSHConfig(d.dir("ssh"), user, key, port, ssmproxy+" connect"); err != nil {
		return err
	}
	fmt.Printf("~/.ssh/config used:\n%s\n", indent(mustRead(d.conf)))

	up, upSum, err := d.randomFile("upload.bin", int64(upMB)<<20)
	if err != nil {
		return err
	}
	down, downSum, err := d.randomFile("download.bin", int64(downMB)<<20)
	if err != nil {
		return err
	}
	// Uploads are throttled so each spans at least one websocket close.
	d.bwlimitKBs = int(float64(upMB<<10) / (closeEvery.Seconds() * 1.3))

	if haveSSH == nil {
		err = d.openSSHSteps(up, upSum, down, downSum)
	} else {
		err = d.goClientSteps(port, key, up, upSum, down, downSum)
	}
	if err != nil {
		return err
	}
	st, err := fake.Stats()
	if err != nil {
		return err
	}
	vs, err := fake.Violations()
	if err != nil {
		return err
	}
	bad := 0
	for code, n := range st.API["ResumeSession"] {
		if code != "200" {
			bad += int(n)
		}
	}
	fmt.Printf("\nMoved %.1f MiB in %d transfers, every checksum equal; survived %d websocket closes with %d ResumeSession calls (%d refused); %d protocol violations recorded by the fake.\n",
		float64(d.moved)/(1<<20), d.transfers, st.ScheduledCloses, st.API["ResumeSession"]["200"], bad, len(vs))
	if len(vs) > 0 {
		return fmt.Errorf("protocol violations: first %s: %s", vs[0].Code, vs[0].Detail)
	}
	if st.API["ResumeSession"]["200"] == 0 {
		return errors.New("no websocket close happened during a transfer")
	}
	return nil
}

func (d *demo) dir(name string) string {
	p := filepath.Join(d.work, name)
	_ = os.MkdirAll(p, 0o700)
	return p
}

func (d *demo) resumes() int64 {
	st, err := d.fake.Stats()
	if err != nil {
		return 0
	}
	return st.API["ResumeSession"]["200"]
}

// step runs one demo step and prints a line for it.
func (d *demo) step(what string, size int64, fn func() error) error {
	before := d.resumes()
	start := time.Now()
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	el := time.Since(start)
	line := fmt.Sprintf("  %-34s %6.1fs", what, el.Seconds())
	if size > 0 {
		line += fmt.Sprintf("  %6.1f MiB  %5.2f MB/s  sha256 equal", float64(size)/(1<<20), float64(size)/el.Seconds()/1e6)
		d.moved += size
		d.transfers++
	}
	if n := d.resumes() - before; n > 0 {
		line += fmt.Sprintf("  (%d reconnect%s)", n, map[bool]string{true: "", false: "s"}[n == 1])
	}
	fmt.Println(line)
	return nil
}

func (d *demo) cmd(name string, args ...string) (string, error) {
	out, _, err := rig.Run(d.ctx, d.env, nil, name, args...)
	return out, err
}

func (d *demo) openSSHSteps(up, upSum, down, downSum string) error {
	remote := d.dir("remote")
	if err := d.step("ssh: run a command", 0, func() error {
		out, err := d.cmd("ssh", "-F", d.conf, rig.Target, "echo hello from $(uname -sn) through Session Manager")
		if err == nil {
			fmt.Printf("  > %s", out)
		}
		return err
	}); err != nil {
		return err
	}
	check := func(path, want string) error {
		if got, err := rig.SHA256File(path); err != nil || got != want {
			return fmt.Errorf("checksum of %s: %s (%v), want %s", path, got, err, want)
		}
		return nil
	}
	size := func(p string) int64 { st, _ := os.Stat(p); return st.Size() }
	kbits := fmt.Sprint(d.bwlimitKBs * 8)
	steps := []struct {
		name string
		file string
		fn   func() error
	}{
		{"scp: upload (throttled)", up, func() error {
			_, err := d.cmd("scp", "-q", "-F", d.conf, "-l", kbits, up, rig.Target+":"+remote+"/scp-up.bin")
			if err == nil {
				err = check(remote+"/scp-up.bin", upSum)
			}
			return err
		}},
		{"scp: download", down, func() error {
			_, err := d.cmd("scp", "-q", "-F", d.conf, rig.Target+":"+down, d.work+"/scp-down.bin")
			if err == nil {
				err = check(d.work+"/scp-down.bin", downSum)
			}
			return err
		}},
	}
	if _, err := exec.LookPath("rsync"); err == nil {
		rsh := "ssh -F " + d.conf
		steps = append(steps,
			struct {
				name string
				file string
				fn   func() error
			}{"rsync: upload (throttled)", up, func() error {
				_, err := d.cmd("rsync", "-e", rsh, fmt.Sprintf("--bwlimit=%d", d.bwlimitKBs), up, rig.Target+":"+remote+"/rsync-up.bin")
				if err == nil {
					err = check(remote+"/rsync-up.bin", upSum)
				}
				return err
			}},
			struct {
				name string
				file string
				fn   func() error
			}{"rsync: download", down, func() error {
				_, err := d.cmd("rsync", "-e", rsh, rig.Target+":"+down, d.work+"/rsync-down.bin")
				if err == nil {
					err = check(d.work+"/rsync-down.bin", downSum)
				}
				return err
			}})
	} else {
		fmt.Println("  (rsync not installed: skipping the rsync steps)")
	}
	for _, s := range steps {
		if err := d.step(s.name, size(s.file), s.fn); err != nil {
			return err
		}
	}
	return nil
}

// goClientSteps does the same with an x/crypto/ssh client speaking over
// `ssmproxy connect`'s stdin and stdout, as ssh would.
func (d *demo) goClientSteps(port, keyPath, up, upSum, down, downSum string) error {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(d.ctx, d.ssmproxy, "connect", rig.Target, port)
	cmd.Env = d.env
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	c, chans, reqs, err := ssh.NewClientConn(rig.PipeConn{Reader: stdout, WriteCloser: stdin}, "ssm", &ssh.ClientConfig{
		User: "demo", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		return err
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	run := func(command string, in io.Reader, out io.Writer) error {
		s, err := client.NewSession()
		if err != nil {
			return err
		}
		defer s.Close()
		s.Stdin, s.Stdout = in, out
		return s.Run(command)
	}
	if err := d.step("ssh: run a command", 0, func() error {
		var out strings.Builder
		err := run("echo hello from $(uname -sn) through Session Manager", nil, &out)
		fmt.Printf("  > %s", out.String())
		return err
	}); err != nil {
		return err
	}
	upInfo, _ := os.Stat(up)
	if err := d.step("upload (throttled)", upInfo.Size(), func() error {
		f, err := os.Open(up)
		if err != nil {
			return err
		}
		defer f.Close()
		var out strings.Builder
		if err := run("ssmproxy-sink", &throttled{r: f, bps: d.bwlimitKBs << 10, start: time.Now()}, &out); err != nil {
			return err
		}
		if want := fmt.Sprintf("%d %s", upInfo.Size(), upSum); strings.TrimSpace(out.String()) != want {
			return fmt.Errorf("server received %q, want %q", strings.TrimSpace(out.String()), want)
		}
		return nil
	}); err != nil {
		return err
	}
	downInfo, _ := os.Stat(down)
	return d.step("download", downInfo.Size(), func() error {
		h := sha256.New()
		if err := run("cat "+down, nil, h); err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != downSum {
			return fmt.Errorf("checksum %s, want %s", got, downSum)
		}
		return nil
	})
}

// goServer starts the pure-Go SSH server with a fresh client key written
// in OpenSSH format for the ssh client.
func (d *demo) goServer() (*sshserver.Server, string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "ssmproxy-demo")
	if err != nil {
		return nil, "", err
	}
	keyPath := filepath.Join(d.dir("keys"), "id_ed25519")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, "", err
	}
	srv, err := sshserver.Start("127.0.0.1:0", sshPub, nil)
	return srv, keyPath, err
}

func (d *demo) randomFile(name string, size int64) (string, string, error) {
	return rig.RandomFile(filepath.Join(d.dir("local"), name), size)
}

func mustRead(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// throttled reads at most bps bytes per second.
type throttled struct {
	r     io.Reader
	bps   int
	start time.Time
	n     int
}

func (t *throttled) Read(p []byte) (int, error) {
	if len(p) > 32<<10 {
		p = p[:32<<10]
	}
	if ahead := time.Duration(float64(t.n)/float64(t.bps)*float64(time.Second)) - time.Since(t.start); ahead > 0 {
		time.Sleep(ahead)
	}
	n, err := t.r.Read(p)
	t.n += n
	return n, err
}

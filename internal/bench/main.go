//go:build unix

// Command bench measures ssmproxy as ssh's ProxyCommand against bin/fakeaws:
// upload and download throughput of a large file with the realistic and the
// ideal (unpaced) agent, ssmproxy's CPU time and peak RSS, session start
// latency, and plain ssh over loopback TCP as the limit, in one run. Then
// `ssmproxy forward` throughput with 1 and 8 connections against plain
// loopback TCP (forward.go).
//
// It is run by `make bench`; it is not a test and asserts nothing.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/rig"
)

type usage struct {
	UserSec, SysSec float64
	MaxRSSKiB       int64
	FirstByteMs     float64 // latency mode: ProxyCommand start to first stdout byte
}

func main() {
	if len(os.Args) > 2 && (os.Args[1] == "-wrap" || os.Args[1] == "-wrap-latency") {
		os.Exit(wrap(os.Args[1] == "-wrap-latency", os.Args[2], os.Args[4:]))
	}
	var (
		bin      = flag.String("bin", "bin", "directory with ssmproxy and fakeaws")
		sizeMB   = flag.Int("mb", 256, "transfer size in MiB")
		realMB   = flag.Int("realistic-download-mb", 0, "download size with the paced agent (default: -mb)")
		latencyN = flag.Int("latency-runs", 7, "sessions for the start-latency median")
		fwMB     = flag.Int("forward-mb", 64, "forward: MiB per run (one connection, or split over 8)")
		fwRealMB = flag.Int("forward-realistic-download-mb", 8, "forward: download MiB per run with the paced agent (~1 MB/s per session)")
		only     = flag.String("only", "", "run only this part: ssh or forward (default: both)")
	)
	flag.Parse()
	if *realMB == 0 {
		*realMB = *sizeMB
	}
	if *only != "" && *only != "ssh" && *only != "forward" {
		fmt.Fprintln(os.Stderr, "bench: -only takes ssh or forward")
		os.Exit(2)
	}
	err := error(nil)
	if *only != "forward" {
		err = run(*bin, *sizeMB, *realMB, *latencyN)
	}
	if err == nil && *only != "ssh" {
		err = runForwardBench(*bin, *fwMB, *fwRealMB)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// wrap runs the ProxyCommand and records its resource usage. In latency
// mode it copies the child's stdout to find the first byte (the SSH
// banner); otherwise the child inherits stdin and stdout untouched.
func wrap(latency bool, out string, argv []string) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	// ssh sends SIGHUP to its ProxyCommand when it exits: pass signals on
	// and outlive the child, so its usage is always recorded.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			if cmd.Process != nil {
				_ = cmd.Process.Signal(s)
			}
		}
	}()
	var u usage
	start := time.Now()
	if latency {
		pr, err := cmd.StdoutPipe()
		if err != nil {
			return 1
		}
		if err := cmd.Start(); err != nil {
			return 1
		}
		buf := make([]byte, 32<<10)
		first := true
		for {
			n, err := pr.Read(buf)
			if n > 0 && first {
				u.FirstByteMs = float64(time.Since(start).Microseconds()) / 1000
				first = false
			}
			if n > 0 {
				if _, werr := os.Stdout.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
	} else {
		cmd.Stdout = os.Stdout
		if err := cmd.Start(); err != nil {
			return 1
		}
	}
	err := cmd.Wait()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u.UserSec = time.Duration(ru.Utime.Nano()).Seconds()
		u.SysSec = time.Duration(ru.Stime.Nano()).Seconds()
		u.MaxRSSKiB = ru.Maxrss
	}
	b, _ := json.Marshal(u)
	tmp := out + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

type result struct {
	upMBs, downMBs float64
	up, down       usage
}

func run(binDir string, sizeMB, realMB, latencyN int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ssmproxy, _ := filepath.Abs(filepath.Join(binDir, "ssmproxy"))
	fakeaws, _ := filepath.Abs(filepath.Join(binDir, "fakeaws"))
	for _, p := range []string{ssmproxy, fakeaws} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing: run make build fakeaws first", p)
		}
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		return errors.New("the OpenSSH client (ssh) is required")
	}
	work, err := os.MkdirTemp("", "ssmproxy-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	d, err := rig.StartSSHD(mkdir(work, "sshd"))
	if err != nil {
		return fmt.Errorf("sshd: %w (the benchmark needs OpenSSH's server)", err)
	}
	defer d.Stop()

	size := int64(sizeMB) << 20
	file := filepath.Join(work, "payload.bin")
	if err := randomFile(file, size); err != nil {
		return err
	}
	realFile := file
	if realMB != sizeMB {
		realFile = filepath.Join(work, "payload-realistic.bin")
		if err := randomFile(realFile, int64(realMB)<<20); err != nil {
			return err
		}
	}
	sshVersion, _ := exec.Command("ssh", "-V").CombinedOutput()
	fmt.Printf("ssmproxy benchmark: %d MiB through ssh, %d CPUs, %s, %s\n", sizeMB, runtime.NumCPU(), runtime.Version(), strings.TrimSpace(string(sshVersion)))
	fmt.Printf("throughput is measured over the data phase (first byte accepted to last byte delivered)\n\n")

	// The limit: plain ssh over loopback TCP.
	plainConf := filepath.Join(work, "plain_config")
	if err := os.WriteFile(plainConf, []byte(fmt.Sprintf("Host plain\n HostName 127.0.0.1\n Port %s\n User %s\n IdentityFile %s\n IdentitiesOnly yes\n StrictHostKeyChecking no\n UserKnownHostsFile /dev/null\n LogLevel ERROR\n BatchMode yes\n", d.Port, d.User, d.UserKey)), 0o600); err != nil {
		return err
	}
	progress("plain ssh over loopback TCP")
	plainUp, err := upload(os.Environ(), plainConf, "plain", file, size)
	if err != nil {
		return err
	}
	plainDown, err := download(os.Environ(), plainConf, "plain", file, size)
	if err != nil {
		return err
	}

	modes := []struct {
		name  string
		args  []string
		file  string
		size  int64
		label string
	}{
		{"unpaced", []string{"-realistic-agent=false"}, file, size, "ssmproxy, ideal agent (unpaced)"},
		{"realistic", nil, realFile, int64(realMB) << 20, "ssmproxy, realistic agent"},
	}
	results := map[string]result{}
	var agentRate float64 // bytes/s the paced agent sent during the realistic download
	latency := map[string][]float64{}
	for _, m := range modes {
		fdir := mkdir(work, "fake-"+m.name)
		f, err := rig.StartFake(fakeaws, fdir, m.args...)
		if err != nil {
			return err
		}
		env := f.Environ(mkdir(work, "home-"+m.name))
		usageFile := filepath.Join(work, "usage-"+m.name+".json")
		conf, err := rig.SSHConfig(mkdir(work, "conf-"+m.name), d.User, d.UserKey, d.Port,
			fmt.Sprintf("%s -wrap %s -- %s connect", self, usageFile, ssmproxy))
		if err != nil {
			f.Stop()
			return err
		}
		var r result
		progress(m.label + ": upload")
		if r.upMBs, err = upload(env, conf, rig.Target, file, size); err == nil {
			r.up, err = readUsage(usageFile)
		}
		if err == nil {
			progress(fmt.Sprintf("%s: download (%d MiB)", m.label, m.size>>20))
			if r.downMBs, err = download(env, conf, rig.Target, m.file, m.size); err == nil {
				r.down, err = readUsage(usageFile)
			}
		}
		if err == nil {
			progress(m.label + ": session start latency")
			latConf, cerr := rig.SSHConfig(mkdir(work, "lat-"+m.name), d.User, d.UserKey, d.Port,
				fmt.Sprintf("%s -wrap-latency %s -- %s connect", self, usageFile, ssmproxy))
			err = cerr
			for i := 0; i < latencyN && err == nil; i++ {
				if _, _, err = rig.Run(context.Background(), env, nil, "ssh", "-F", latConf, rig.Target, "true"); err == nil {
					var u usage
					if u, err = readUsage(usageFile); err == nil {
						latency[m.name] = append(latency[m.name], u.FirstByteMs)
					}
				}
			}
		}
		if m.name == "realistic" && err == nil {
			// The agent's own send rate during the download: the most
			// any client can receive from it.
			var sessions []struct {
				AgentOutputBytes   int64   `json:"agent_output_bytes"`
				AgentOutputSeconds float64 `json:"agent_output_seconds"`
			}
			if err = f.GetJSON("/_fake/sessions", &sessions); err == nil {
				for _, s := range sessions {
					if s.AgentOutputBytes >= m.size && s.AgentOutputSeconds > 0 {
						agentRate = float64(s.AgentOutputBytes) / s.AgentOutputSeconds
					}
				}
			}
		}
		if vs, verr := f.Violations(); verr == nil && len(vs) > 0 {
			fmt.Printf("warning: fakeaws recorded %d protocol violations in mode %s (first: %s %s)\n", len(vs), m.name, vs[0].Code, vs[0].Detail)
		}
		f.Stop()
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		results[m.name] = r
	}

	ceiling := pacingCeiling()
	fmt.Printf("%-34s %12s %14s %22s %14s\n", "", "upload MB/s", "download MB/s", "ssmproxy CPU s (u+s)", "peak RSS MiB")
	fmt.Printf("%-34s %12.1f %14.1f %22s %14s\n", "plain ssh over loopback TCP", plainUp, plainDown, "-", "-")
	for _, m := range modes {
		r := results[m.name]
		label := m.label
		if m.size != size {
			label = fmt.Sprintf("%s [down %d MiB]", m.label, m.size>>20)
		}
		fmt.Printf("%-34s %12.1f %14.2f %10.2f up %5.2f dn %7.1f up %4.1f dn\n", label, r.upMBs, r.downMBs,
			r.up.UserSec+r.up.SysSec, r.down.UserSec+r.down.SysSec, float64(r.up.MaxRSSKiB)/1024, float64(r.down.MaxRSSKiB)/1024)
	}
	fmt.Println()
	fmt.Printf("agent pacing ceiling: 1024 B per %.3f ms (1 ms sleep as measured here) = %.3f MB/s; realistic download = %.1f%% of it\n",
		1024/ceiling*1e3, ceiling/1e6, 100*results["realistic"].downMBs*1e6/ceiling)
	if agentRate > 0 {
		fmt.Printf("the fake agent's own send rate during that download: %.3f MB/s; ssmproxy delivered %.1f%% of it\n",
			agentRate/1e6, 100*results["realistic"].downMBs*1e6/agentRate)
	}
	fmt.Printf("upload vs plain ssh: ideal agent %.0f%%, realistic agent %.0f%%\n",
		100*results["unpaced"].upMBs/plainUp, 100*results["realistic"].upMBs/plainUp)
	for _, m := range modes {
		l := latency[m.name]
		sort.Float64s(l)
		if len(l) > 0 {
			fmt.Printf("session start latency (ProxyCommand start to SSH banner), %s: median %.0f ms, min %.0f, max %.0f over %d sessions\n",
				m.name, l[len(l)/2], l[0], l[len(l)-1], len(l))
		}
	}
	return nil
}

func mkdir(parent, name string) string {
	p := filepath.Join(parent, name)
	_ = os.MkdirAll(p, 0o700)
	return p
}

func progress(s string) { fmt.Fprintf(os.Stderr, "bench: %s...\n", s) }

// readUsage waits for the wrapper to record the ProxyCommand's usage (ssh
// does not wait for its ProxyCommand to exit) and consumes the record.
func readUsage(p string) (usage, error) {
	var u usage
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(p)
		if err == nil {
			_ = os.Remove(p)
			return u, json.Unmarshal(b, &u)
		}
		if time.Now().After(deadline) {
			return u, fmt.Errorf("ProxyCommand usage: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randomFile(p string, size int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// firstWriteTimer records when the first bytes were accepted from a reader.
type firstWriteTimer struct {
	r     io.Reader
	first time.Time
}

func (f *firstWriteTimer) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && f.first.IsZero() {
		f.first = time.Now()
	}
	return n, err
}

// sshCommand runs remote on host through ssh with the given config,
// collecting ssh's stderr for error messages.
func sshCommand(env []string, conf, host, remote string) (*exec.Cmd, *strings.Builder) {
	cmd := exec.Command("ssh", "-F", conf, host, remote)
	cmd.Env = env
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	return cmd, stderr
}

// upload pipes size bytes of file into `cat > /dev/null` on the host and
// returns MB/s from the first byte ssh accepted to ssh's exit.
func upload(env []string, conf, host, file string, size int64) (float64, error) {
	src, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	cmd, stderr := sshCommand(env, conf, host, "cat > /dev/null")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	// Measure when ssh starts reading: after the first 64 KiB (the pipe
	// buffer) has been accepted.
	t := &firstWriteTimer{r: src}
	head := make([]byte, 128<<10)
	n, _ := io.ReadFull(src, head)
	if _, err := stdin.Write(head[:n]); err != nil {
		return 0, fmt.Errorf("ssh upload: %v: %s", err, stderr.String())
	}
	t.first = time.Now()
	if _, err := io.Copy(stdin, t); err != nil {
		return 0, fmt.Errorf("ssh upload: %v: %s", err, stderr.String())
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("ssh upload: %v: %s", err, stderr.String())
	}
	return float64(size-64<<10) / time.Since(t.first).Seconds() / 1e6, nil
}

// download reads file from the host with cat and returns MB/s from the
// first byte received to the last.
func download(env []string, conf, host, file string, size int64) (float64, error) {
	cmd, stderr := sshCommand(env, conf, host, "cat "+file)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	buf := make([]byte, 256<<10)
	var got int64
	var first, last time.Time
	for {
		n, err := out.Read(buf)
		if n > 0 {
			if first.IsZero() {
				first = time.Now()
			}
			got += int64(n)
			last = time.Now()
		}
		if err != nil {
			break
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("ssh download: %v: %s", err, stderr.String())
	}
	if got != size {
		return 0, fmt.Errorf("download: got %d bytes, want %d", got, size)
	}
	return float64(size) / last.Sub(first).Seconds() / 1e6, nil
}

// pacingCeiling is the real agent's best case: 1024 bytes per loop of one
// send plus a 1 ms sleep, with the sleep measured on this machine. Bytes/s.
func pacingCeiling() float64 {
	const n = 2000
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Millisecond)
	}
	per := time.Since(start) / n
	return 1024 / per.Seconds()
}

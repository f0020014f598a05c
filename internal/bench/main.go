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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// fakeProcs runs the fake on one P: cheaper as the other end, the same on
// the wire (docs/bench.md).
const fakeProcs = "-procs=1"

type usage struct {
	UserSec, SysSec float64
	WallSec         float64 // the ProxyCommand's lifetime
	MaxRSSKiB       int64
	FirstByteMs     float64 // latency mode: ProxyCommand start to first stdout byte
	// From ssmproxy's own runtime at exit ($SSMPROXY_RUNTIME_STATS).
	Mallocs, AllocBytes uint64
	GCCycles            uint32
}

func (u usage) cpu() float64 { return u.UserSec + u.SysSec }

func main() {
	if len(os.Args) > 2 && (os.Args[1] == "-wrap" || os.Args[1] == "-wrap-latency") {
		os.Exit(wrap(os.Args[1] == "-wrap-latency", os.Args[2], os.Args[4:]))
	}
	var (
		bin      = flag.String("bin", "bin", "directory with ssmproxy and fakeaws")
		sizeMB   = flag.Int("mb", 256, "transfer size in MiB")
		realMB   = flag.Int("realistic-mb", 32, "MiB downloaded from the paced agent, and uploaded at its pace")
		latencyN = flag.Int("latency-runs", 7, "sessions for the start-latency median")
		fwMB     = flag.Int("forward-mb", 64, "forward: MiB per run (one connection, or split over 8)")
		fwRealMB = flag.Int("forward-realistic-download-mb", 8, "forward: download MiB per run with the paced agent (~1 MB/s per session)")
		fwSessMB = flag.Int("forward-sessions-mb", 8, "forward: MiB downloaded by each of 8 sessions at once with the paced agent")
		only     = flag.String("only", "", "run only this part: ssh or forward (default: both)")
		profDir  = flag.String("profile", "", "directory for a CPU profile of ssmproxy per ssh transfer (MODE-PHASE.pprof) and of fakeaws per mode (fakeaws-MODE.pprof)")
		args     = flag.String("ssmproxy-args", "", "extra flags for every ssmproxy connect and forward, space-separated (e.g. --read-coalesce=0)")
	)
	flag.Parse()
	extraArgs = strings.Fields(*args)
	if *profDir != "" {
		if err := os.MkdirAll(*profDir, 0o700); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		*profDir, _ = filepath.Abs(*profDir)
	}
	if *only != "" && *only != "ssh" && *only != "forward" {
		fmt.Fprintln(os.Stderr, "bench: -only takes ssh or forward")
		os.Exit(2)
	}
	err := error(nil)
	if *only != "forward" {
		err = run(*bin, *sizeMB, *realMB, *latencyN, *profDir)
	}
	if err == nil && *only != "ssh" {
		err = runForwardBench(*bin, *fwMB, *fwRealMB, *fwSessMB)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// extraArgs are -ssmproxy-args: flags added to every connect and forward,
// to compare settings in one run of the same binaries.
var extraArgs []string

// extraArgsString is extraArgs for a ProxyCommand line ("" or " ARGS").
func extraArgsString() string {
	if len(extraArgs) == 0 {
		return ""
	}
	return " " + strings.Join(extraArgs, " ")
}

// wrap runs the ProxyCommand and records its resource usage. In latency
// mode it copies the child's stdout to find the first byte (the SSH
// banner); otherwise the child inherits stdin and stdout untouched.
func wrap(latency bool, out string, argv []string) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	rtFile := out + ".runtime"
	cmd.Env = append(os.Environ(), "SSMPROXY_RUNTIME_STATS="+rtFile)
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
	u.WallSec = time.Since(start).Seconds()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u.UserSec = time.Duration(ru.Utime.Nano()).Seconds()
		u.SysSec = time.Duration(ru.Stime.Nano()).Seconds()
		u.MaxRSSKiB = ru.Maxrss
	}
	if b, rerr := os.ReadFile(rtFile); rerr == nil {
		var rt struct {
			Mallocs    uint64 `json:"mallocs"`
			AllocBytes uint64 `json:"alloc_bytes"`
			GCCycles   uint32 `json:"gc_cycles"`
		}
		if json.Unmarshal(b, &rt) == nil {
			u.Mallocs, u.AllocBytes, u.GCCycles = rt.Mallocs, rt.AllocBytes, rt.GCCycles
		}
		_ = os.Remove(rtFile)
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

// phase is one transfer through ssmproxy.
type phase struct {
	mbs     float64
	u       usage   // ssmproxy's
	fakeCPU float64 // fakeaws's user+system seconds over the transfer
	// machineCPU: every process's and the kernel's busy CPU seconds over
	// the transfer (/proc/stat): ssh, sshd and what they run included.
	machineCPU float64
	bytes      int64
}

type result struct {
	up, down phase
	pacedUp  phase // realistic mode: upload at the agent's pace
}

func run(binDir string, sizeMB, realMB, latencyN int, profDir string) error {
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
	if len(extraArgs) > 0 {
		fmt.Printf("every ssmproxy runs with %s\n", strings.Join(extraArgs, " "))
	}
	fmt.Printf("throughput is measured over the data phase (first byte accepted to last byte delivered)\n\n")

	// The limit: plain ssh over loopback TCP.
	plainConf := filepath.Join(work, "plain_config")
	if err := os.WriteFile(plainConf, []byte(fmt.Sprintf("Host plain\n HostName 127.0.0.1\n Port %s\n User %s\n IdentityFile %s\n IdentitiesOnly yes\n StrictHostKeyChecking no\n UserKnownHostsFile /dev/null\n LogLevel ERROR\n BatchMode yes\n", d.Port, d.User, d.UserKey)), 0o600); err != nil {
		return err
	}
	progress("plain ssh over loopback TCP")
	m0 := machineSeconds()
	plainUp, err := upload(os.Environ(), plainConf, "plain", file, size, false)
	if err != nil {
		return err
	}
	m1 := machineSeconds()
	plainDown, err := download(os.Environ(), plainConf, "plain", file, size)
	if err != nil {
		return err
	}
	// The whole machine's CPU seconds per GiB of plain ssh, up and down.
	gibs := float64(size) / (1 << 30)
	plainMachine := [2]float64{(m1 - m0) / gibs, (machineSeconds() - m1) / gibs}

	modes := []struct {
		name  string
		args  []string
		file  string
		size  int64
		label string
		paced bool // also upload at the agent's own pace
	}{
		{"unpaced", []string{"-realistic-agent=false", fakeProcs}, file, size, "ssmproxy, ideal agent (unpaced)", false},
		{"realistic", []string{fakeProcs}, realFile, int64(realMB) << 20, "ssmproxy, realistic agent", true},
	}
	results := map[string]result{}
	var agentRate float64 // bytes/s the paced agent sent during the realistic download
	latency := map[string][]float64{}
	// sessionCPU: ssmproxy's CPU milliseconds for a whole `ssh TARGET true`
	// (start, credentials, handshake, SSH key exchange, close), the fixed
	// cost inside every transfer's figure.
	sessionCPU := map[string][]float64{}
	for _, m := range modes {
		fdir := mkdir(work, "fake-"+m.name)
		fargs := m.args
		if profDir != "" {
			// The fake's profile covers its whole run in this mode
			// (every transfer and the latency sessions).
			fargs = append(fargs[:len(fargs):len(fargs)], "-cpuprofile", filepath.Join(profDir, "fakeaws-"+m.name+".pprof"))
		}
		f, err := rig.StartFake(fakeaws, fdir, fargs...)
		if err != nil {
			return err
		}
		env := f.Environ(mkdir(work, "home-"+m.name))
		usageFile := filepath.Join(work, "usage-"+m.name+".json")
		conf, err := rig.SSHConfig(mkdir(work, "conf-"+m.name), d.User, d.UserKey, d.Port,
			fmt.Sprintf("%s -wrap %s -- %s connect%s", self, usageFile, ssmproxy, extraArgsString()))
		if err != nil {
			f.Stop()
			return err
		}
		// measure runs one transfer and collects ssmproxy's usage and the
		// fake's CPU time over it.
		measure := func(name string, n int64, do func(env []string) (float64, error)) (phase, error) {
			e := env
			if profDir != "" {
				e = append(env[:len(env):len(env)], "SSMPROXY_CPUPROFILE="+filepath.Join(profDir, m.name+"-"+name+".pprof"))
			}
			before, machine := cpuSeconds(f.Pid()), machineSeconds()
			ph := phase{bytes: n}
			var err error
			if ph.mbs, err = do(e); err != nil {
				return ph, err
			}
			ph.machineCPU = machineSeconds() - machine
			ph.u, err = readUsage(usageFile)
			ph.fakeCPU = cpuSeconds(f.Pid()) - before
			return ph, err
		}
		var r result
		progress(m.label + ": upload")
		r.up, err = measure("upload", size, func(e []string) (float64, error) { return upload(e, conf, rig.Target, file, size, false) })
		if err == nil && m.paced {
			progress(fmt.Sprintf("%s: upload at the agent's pace (%d MiB)", m.label, m.size>>20))
			r.pacedUp, err = measure("upload-paced", m.size, func(e []string) (float64, error) { return upload(e, conf, rig.Target, m.file, m.size, true) })
		}
		if err == nil {
			progress(fmt.Sprintf("%s: download (%d MiB)", m.label, m.size>>20))
			r.down, err = measure("download", m.size, func(e []string) (float64, error) { return download(e, conf, rig.Target, m.file, m.size) })
		}
		if err == nil {
			progress(m.label + ": session start latency")
			latConf, cerr := rig.SSHConfig(mkdir(work, "lat-"+m.name), d.User, d.UserKey, d.Port,
				fmt.Sprintf("%s -wrap-latency %s -- %s connect%s", self, usageFile, ssmproxy, extraArgsString()))
			err = cerr
			for i := 0; i < latencyN && err == nil; i++ {
				if _, _, err = rig.Run(context.Background(), env, nil, "ssh", "-F", latConf, rig.Target, "true"); err == nil {
					var u usage
					if u, err = readUsage(usageFile); err == nil {
						latency[m.name] = append(latency[m.name], u.FirstByteMs)
						sessionCPU[m.name] = append(sessionCPU[m.name], u.cpu()*1000)
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
		fmt.Printf("%-34s %12.1f %14.2f %10.2f up %5.2f dn %7.1f up %4.1f dn\n", label, r.up.mbs, r.down.mbs,
			r.up.u.cpu(), r.down.u.cpu(), float64(r.up.u.MaxRSSKiB)/1024, float64(r.down.u.MaxRSSKiB)/1024)
		if m.paced {
			fmt.Printf("%-34s %12.2f %14s %10.2f up %8s %7.1f up\n", fmt.Sprintf("  upload at the agent's pace [%d MiB]", m.size>>20),
				r.pacedUp.mbs, "", r.pacedUp.u.cpu(), "", float64(r.pacedUp.u.MaxRSSKiB)/1024)
		}
	}
	fmt.Println()
	fmt.Printf("agent pacing ceiling: 1024 B per %.3f ms (1 ms sleep as measured here) = %.3f MB/s; realistic download = %.1f%% of it\n",
		1024/ceiling*1e3, ceiling/1e6, 100*results["realistic"].down.mbs*1e6/ceiling)
	if agentRate > 0 {
		fmt.Printf("the fake agent's own send rate during that download: %.3f MB/s; ssmproxy delivered %.1f%% of it\n",
			agentRate/1e6, 100*results["realistic"].down.mbs*1e6/agentRate)
	}
	fmt.Printf("upload vs plain ssh: ideal agent %.0f%%, realistic agent %.0f%%\n",
		100*results["unpaced"].up.mbs/plainUp, 100*results["realistic"].up.mbs/plainUp)
	for _, m := range modes {
		l := latency[m.name]
		sort.Float64s(l)
		if len(l) > 0 {
			fmt.Printf("session start latency (ProxyCommand start to SSH banner), %s: median %.0f ms, min %.0f, max %.0f over %d sessions\n",
				m.name, l[len(l)/2], l[0], l[len(l)-1], len(l))
			c := sessionCPU[m.name]
			sort.Float64s(c)
			fmt.Printf("  ssmproxy CPU for a whole `ssh TARGET true` (start to exit), %s: median %.0f ms\n", m.name, c[len(c)/2])
		}
	}
	printCosts(results["unpaced"], results["realistic"], plainUp, plainDown, plainMachine)
	return nil
}

// printCosts is the cost table of docs/bench.md: ssmproxy's own CPU (its
// rusage, not the process tree's), the fake's beside it, allocations and
// peak RSS, each with its target.
// machineSeconds is the busy CPU time of the whole machine so far (every
// field of /proc/stat's cpu line but idle and iowait), in seconds.
func machineSeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100 // USER_HZ
}

func printCosts(ideal, paced result, plainUp, plainDown float64, plainMachine [2]float64) {
	gib := func(p phase) float64 { return float64(p.bytes) / (1 << 30) }
	mib := func(p phase) float64 { return float64(p.bytes) / (1 << 20) }
	share := func(cpu, wall float64) string {
		if wall <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*cpu/wall)
	}
	fmt.Printf("\ncosts (ssmproxy: its own rusage; fakeaws: its /proc time over the same transfer)\n")
	fmt.Printf("%-52s %10s %10s   %s\n", "", "upload", "download", "target")
	row := func(label, up, down, target string) {
		fmt.Printf("%-52s %10s %10s   %s\n", label, up, down, target)
	}
	f2 := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	row("unpaced: ssmproxy CPU s per GiB", f2(ideal.up.u.cpu()/gib(ideal.up)), f2(ideal.down.u.cpu()/gib(ideal.down)), "<= 3")
	row("  of which in the kernel (system time)", f2(ideal.up.u.SysSec/gib(ideal.up)), f2(ideal.down.u.SysSec/gib(ideal.down)), "")
	row("unpaced: fakeaws CPU s per GiB", f2(ideal.up.fakeCPU/gib(ideal.up)), f2(ideal.down.fakeCPU/gib(ideal.down)), "")
	row("unpaced: the whole machine's CPU s per GiB", f2(ideal.up.machineCPU/gib(ideal.up)), f2(ideal.down.machineCPU/gib(ideal.down)), "")
	row("plain ssh: the whole machine's CPU s per GiB", f2(plainMachine[0]), f2(plainMachine[1]), "")
	row("unpaced: throughput / plain ssh", f2(ideal.up.mbs/plainUp), f2(ideal.down.mbs/plainDown), ">= 0.6")
	row("unpaced: ssmproxy allocations per MiB", fmt.Sprintf("%.0f", float64(ideal.up.u.Mallocs)/mib(ideal.up)),
		fmt.Sprintf("%.0f", float64(ideal.down.u.Mallocs)/mib(ideal.down)), "")
	row("unpaced: ssmproxy GC cycles", fmt.Sprint(ideal.up.u.GCCycles), fmt.Sprint(ideal.down.u.GCCycles), "")
	row("agent's pace: MB/s", f2(paced.pacedUp.mbs), f2(paced.down.mbs), "")
	row("agent's pace: ssmproxy CPU, share of one core", share(paced.pacedUp.u.cpu(), paced.pacedUp.u.WallSec),
		share(paced.down.u.cpu(), paced.down.u.WallSec), "<= 5%")
	row("agent's pace: fakeaws CPU, share of one core", share(paced.pacedUp.fakeCPU, paced.pacedUp.u.WallSec),
		share(paced.down.fakeCPU, paced.down.u.WallSec), "")
	row("agent's pace: ssmproxy allocations per MiB", fmt.Sprintf("%.0f", float64(paced.pacedUp.u.Mallocs)/mib(paced.pacedUp)),
		fmt.Sprintf("%.0f", float64(paced.down.u.Mallocs)/mib(paced.down)), "")
	var rss int64
	for _, r := range []result{ideal, paced} {
		for _, p := range []phase{r.up, r.down, r.pacedUp} {
			rss = max(rss, p.u.MaxRSSKiB)
		}
	}
	row("ssmproxy peak RSS, any run (MiB)", fmt.Sprintf("%.1f", float64(rss)/1024), "", "< 40")
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

// pacedReader hands out at most 1024 bytes per Read and sleeps 1 ms before
// each Read after the first: the real agent's send loop, turned around.
type pacedReader struct {
	r       io.Reader
	started bool
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.started {
		time.Sleep(time.Millisecond)
	}
	p.started = true
	return p.r.Read(b[:min(len(b), 1024)])
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
// returns MB/s from the first byte ssh accepted to ssh's exit. paced feeds
// it as the agent sends: 1024 bytes, then a 1 ms sleep.
func upload(env []string, conf, host, file string, size int64, paced bool) (float64, error) {
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
	var src2 io.Reader = t
	if paced {
		src2 = &pacedReader{r: t}
	}
	if _, err := io.Copy(stdin, src2); err != nil {
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

//go:build unix

package main

// The forward benchmark: `ssmproxy forward` with one -L to a sink (counts
// what it receives, discards it) and one to a source (sends what it is asked
// for), both local TCP servers that the fake agent dials as the instance's
// "localhost". It measures upload and download MB/s with one connection and
// with 8 concurrent ones, with the ideal and the realistic agent, against the
// same servers reached over plain loopback TCP in the same run; and
// ssmproxy's CPU time per phase (/proc) and its peak RSS (its rusage after
// SIGTERM). docs/protocol.md 11 describes the mux sessions measured here.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// fwPhases are the four measurements of a row, in table order.
var fwPhases = []struct {
	name  string
	up    bool
	conns int
}{
	{"upload, 1 connection", true, 1},
	{"upload, 8 connections", true, 8},
	{"download, 1 connection", false, 1},
	{"download, 8 connections", false, 8},
}

// fwRow is one line of the forward table.
type fwRow struct {
	label               string
	mbs                 [4]float64 // by fwPhases
	cpu                 [4]float64 // ssmproxy user+sys seconds per phase
	total               usage      // ssmproxy's rusage at exit
	downBytes           int64
	agentRate           float64 // bytes/s the fake agent itself sent on the source's session
	muxStreams, muxPeak int64   // smux streams the fake agent accepted; peak bytes buffered in its smux
}

// fwServers are the sink and the source; both answer plain TCP clients
// and, through the fake agent, forwarded ones.
type fwServers struct {
	sink, source net.Listener
	mu           sync.Mutex
	sunk         map[uint64]time.Time // request id -> when its last byte arrived
	chunk        []byte
}

// Requests open with a 16-byte header: the byte count, then (sink only) a
// request id under which the sink records when the last byte arrived.
func startFwServers() (*fwServers, error) {
	s := &fwServers{sunk: map[uint64]time.Time{}, chunk: make([]byte, 256<<10)}
	for i := range s.chunk {
		s.chunk[i] = byte(i*7 + i>>8) // not all zeros: nothing on the path compresses, but be safe
	}
	var err error
	if s.sink, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if s.source, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		s.sink.Close()
		return nil, err
	}
	go s.serve(s.sink, s.sinkConn)
	go s.serve(s.source, s.sourceConn)
	return s, nil
}

func (s *fwServers) close() { s.sink.Close(); s.source.Close() }

func (s *fwServers) serve(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Minute))
			handle(c)
		}()
	}
}

// sinkConn reads the announced bytes, records the time of the last one and
// answers one byte so the client knows.
func (s *fwServers) sinkConn(c net.Conn) {
	var h [16]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return
	}
	n, id := binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:])
	if got, err := io.CopyN(io.Discard, c, int64(n)); err != nil || got != int64(n) {
		return
	}
	s.mu.Lock()
	s.sunk[id] = time.Now()
	s.mu.Unlock()
	_, _ = c.Write([]byte{1})
	_, _ = io.Copy(io.Discard, c) // until the client closes
}

// sourceConn sends the announced bytes, then waits for the client to close.
func (s *fwServers) sourceConn(c net.Conn) {
	var h [16]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return
	}
	for left := int64(binary.BigEndian.Uint64(h[:8])); left > 0; {
		b := s.chunk[:min(left, int64(len(s.chunk)))]
		if _, err := c.Write(b); err != nil {
			return
		}
		left -= int64(len(b))
	}
	_, _ = io.Copy(io.Discard, c)
}

var fwRequestID uint64

// fwSpan is one connection's data phase.
type fwSpan struct {
	first, last time.Time
	err         error
}

// transfer moves total bytes split over conns concurrent connections to
// the sink (up) or from the source (down) at sinkAddr/sourceAddr, and
// returns MB/s over the wall time of the data phase: from the first byte
// written to the last byte the sink received (upload), from the first byte
// received to the last (download).
func (s *fwServers) transfer(sinkAddr, sourceAddr string, up bool, conns int, total int64) (float64, error) {
	per := total / int64(conns)
	// Bound the phase: nothing slower than 100 kB/s is a measurement.
	deadline := time.Now().Add(time.Minute + time.Duration(total/100e3)*time.Second)
	spans := make([]fwSpan, conns)
	var wg sync.WaitGroup
	for i := range conns {
		fwRequestID++
		id := fwRequestID
		wg.Add(1)
		go func() {
			defer wg.Done()
			sp := &spans[i]
			addr := sourceAddr
			if up {
				addr = sinkAddr
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				sp.err = err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(deadline)
			var h [16]byte
			binary.BigEndian.PutUint64(h[:8], uint64(per))
			binary.BigEndian.PutUint64(h[8:], id)
			sp.first = time.Now()
			if _, err := c.Write(h[:]); err != nil {
				sp.err = err
				return
			}
			if up {
				sp.err = s.send(c, per, id, sp)
				return
			}
			sp.first = time.Time{}
			buf := make([]byte, 256<<10)
			for got := int64(0); got < per; {
				n, err := c.Read(buf[:min(per-got, int64(len(buf)))])
				if n > 0 {
					if sp.first.IsZero() {
						sp.first = time.Now()
					}
					got += int64(n)
					sp.last = time.Now()
				}
				if err != nil {
					sp.err = fmt.Errorf("after %d of %d bytes: %w", got, per, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var first, last time.Time
	for i, sp := range spans {
		if sp.err != nil {
			return 0, fmt.Errorf("connection %d of %d: %w", i+1, conns, sp.err)
		}
		if first.IsZero() || sp.first.Before(first) {
			first = sp.first
		}
		if sp.last.After(last) {
			last = sp.last
		}
	}
	return float64(per*int64(conns)) / last.Sub(first).Seconds() / 1e6, nil
}

// send writes n bytes to the sink, waits for its one-byte answer and takes
// the sink's arrival time of the last byte.
func (s *fwServers) send(c net.Conn, n int64, id uint64, sp *fwSpan) error {
	for left := n; left > 0; {
		b := s.chunk[:min(left, int64(len(s.chunk)))]
		if _, err := c.Write(b); err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", n-left, n, err)
		}
		left -= int64(len(b))
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("no answer from the sink after %d bytes: %w", n, err)
	}
	s.mu.Lock()
	sp.last = s.sunk[id]
	s.mu.Unlock()
	return nil
}

var fwReady = regexp.MustCompile(`^listening on (\S+) → localhost:(\d+) via `)

// fwProc is a running ssmproxy forward.
type fwProc struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd.Wait has returned
	stderr *rig.SyncBuffer
	addrs  map[string]string // destination port -> local listener address
}

// startForward runs ssmproxy forward with one -L per port and reads the
// local address of each from its ready lines.
func startForward(ssmproxy string, env []string, ports ...string) (*fwProc, error) {
	args := append([]string{"forward"}, extraArgs...)
	args = append(args, rig.Target)
	for _, p := range ports {
		args = append(args, "-L", "0:localhost:"+p)
	}
	cmd := exec.Command(ssmproxy, args...)
	cmd.Env = env
	p := &fwProc{cmd: cmd, done: make(chan struct{}), stderr: &rig.SyncBuffer{}, addrs: map[string]string{}}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(p.stderr, pw)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); pw.Close(); close(p.done) }()
	found := make(chan [2]string)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := fwReady.FindStringSubmatch(sc.Text()); m != nil {
				found <- [2]string{m[2], m[1]}
			}
		}
		close(found)
		_, _ = io.Copy(io.Discard, pr)
	}()
	timeout := time.After(60 * time.Second)
	for len(p.addrs) < len(ports) {
		select {
		case m, ok := <-found:
			if !ok {
				<-p.done
				return nil, fmt.Errorf("ssmproxy forward ended before it was ready: %s", p.stderr)
			}
			p.addrs[m[0]] = m[1]
		case <-timeout:
			_ = cmd.Process.Kill()
			<-p.done
			return nil, fmt.Errorf("ssmproxy forward not ready within 60 s: %s", p.stderr)
		}
	}
	return p, nil
}

// cpuSeconds is a running process's user+system time from /proc (Linux;
// USER_HZ is 100 on every Linux ABI Go supports). -1 when unreadable.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

// forwardMode measures one agent mode: a fresh fake, one forward process
// for all four phases.
func forwardMode(srv *fwServers, ssmproxy, fakeaws, work, name, label string, fakeArgs []string, upBytes, downBytes int64) (fwRow, error) {
	row := fwRow{label: label, downBytes: downBytes}
	f, err := rig.StartFake(fakeaws, mkdir(work, "fwfake-"+name), append(fakeArgs, fakeProcs)...)
	if err != nil {
		return row, err
	}
	defer f.Stop()
	_, sinkPort, _ := net.SplitHostPort(srv.sink.Addr().String())
	_, sourcePort, _ := net.SplitHostPort(srv.source.Addr().String())
	p, err := startForward(ssmproxy, f.Environ(mkdir(work, "fwhome-"+name)), sinkPort, sourcePort)
	if err != nil {
		return row, err
	}
	cmd := p.cmd
	for i, ph := range fwPhases {
		n := downBytes
		if ph.up {
			n = upBytes
		}
		progress(fmt.Sprintf("%s: %s (%d MiB)", label, ph.name, n>>20))
		before := cpuSeconds(cmd.Process.Pid)
		if row.mbs[i], err = srv.transfer(p.addrs[sinkPort], p.addrs[sourcePort], ph.up, ph.conns, n); err != nil {
			err = fmt.Errorf("%s: %w (ssmproxy: %s)", ph.name, err, p.stderr)
			break
		}
		row.cpu[i] = cpuSeconds(cmd.Process.Pid) - before
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-p.done
		return row, errors.Join(err, fmt.Errorf("ssmproxy forward did not exit 30 s after SIGTERM: %s", p.stderr))
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		row.total = usage{UserSec: time.Duration(ru.Utime.Nano()).Seconds(), SysSec: time.Duration(ru.Stime.Nano()).Seconds(), MaxRSSKiB: ru.Maxrss}
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 && err == nil {
		fmt.Printf("warning: ssmproxy forward exited %d after SIGTERM in mode %s, want 0\n", code, name)
	}
	if st, serr := f.Stats(); serr == nil {
		if t := st.API["TerminateSession"]["200"]; t != 2 && err == nil {
			fmt.Printf("warning: the fake saw %d TerminateSession calls in mode %s, want 2 (one per -L)\n", t, name)
		}
		row.muxStreams, row.muxPeak = st.MuxStreamsAccepted, st.MuxBufferedPeak
	}
	// The source's session is the one the agent sent most on; its first to
	// last Output spans both downloads (and the short gap between them).
	var sessions []struct {
		AgentOutputBytes   int64   `json:"agent_output_bytes"`
		AgentOutputSeconds float64 `json:"agent_output_seconds"`
	}
	if f.GetJSON("/_fake/sessions", &sessions) == nil {
		var most int64
		for _, s := range sessions {
			if s.AgentOutputBytes > most && s.AgentOutputSeconds > 0 {
				most, row.agentRate = s.AgentOutputBytes, float64(s.AgentOutputBytes)/s.AgentOutputSeconds
			}
		}
	}
	if vs, verr := f.Violations(); verr == nil && len(vs) > 0 {
		fmt.Printf("warning: fakeaws recorded %d protocol violations in forward mode %s (first: %s %s)\n", len(vs), name, vs[0].Code, vs[0].Detail)
	}
	return row, err
}

// runForward measures the limit and both agent modes and prints the table.
func runForward(ssmproxy, fakeaws, work string, sizeMB, realMB, sessionsMB int) error {
	srv, err := startFwServers()
	if err != nil {
		return err
	}
	defer srv.close()
	size, realSize := int64(sizeMB)<<20, int64(realMB)<<20
	fmt.Printf("\nssmproxy forward: %d MiB per run over 1 connection or split over 8 concurrent ones, to a local sink and\n"+
		"from a local source that the fake agent dials (one -L and one mux session each); MB/s over the data phase\n"+
		"(upload: first byte written to last byte at the sink; download: first to last byte received)\n\n", sizeMB)
	limit := fwRow{label: "plain loopback TCP (the limit)", downBytes: size}
	progress("forward: plain loopback TCP")
	for i, ph := range fwPhases {
		if limit.mbs[i], err = srv.transfer(srv.sink.Addr().String(), srv.source.Addr().String(), ph.up, ph.conns, size); err != nil {
			return fmt.Errorf("plain TCP, %s: %w", ph.name, err)
		}
	}
	ideal, err := forwardMode(srv, ssmproxy, fakeaws, work, "unpaced", "forward, ideal agent (unpaced)", []string{"-realistic-agent=false"}, size, size)
	if err != nil {
		return fmt.Errorf("forward, ideal agent: %w", err)
	}
	paced, err := forwardMode(srv, ssmproxy, fakeaws, work, "realistic", "forward, realistic agent", nil, size, realSize)
	if err != nil {
		return fmt.Errorf("forward, realistic agent: %w", err)
	}
	paced.label = fmt.Sprintf("%s [down %d MiB]", paced.label, realMB)

	fmt.Printf("%-42s %22s %22s\n", "", "upload MB/s", "download MB/s")
	fmt.Printf("%-42s %10s %11s %10s %11s %30s %9s\n", "", "1 conn", "8 conns", "1 conn", "8 conns", "ssmproxy CPU s up1/up8/dn1/dn8", "peak RSS")
	for _, r := range []fwRow{limit, ideal, paced} {
		cpu, rss := "-", "-"
		if r.total.MaxRSSKiB > 0 {
			cpu = fmt.Sprintf("%.2f/%.2f/%.2f/%.2f", r.cpu[0], r.cpu[1], r.cpu[2], r.cpu[3])
			rss = fmt.Sprintf("%.1f MiB", float64(r.total.MaxRSSKiB)/1024)
		}
		fmt.Printf("%-42s %10.1f %11.1f %10.2f %11.2f %30s %9s\n", r.label, r.mbs[0], r.mbs[1], r.mbs[2], r.mbs[3], cpu, rss)
	}
	fmt.Println()
	for _, r := range []fwRow{ideal, paced} {
		fmt.Printf("%s: ssmproxy CPU %.2f s user + %.2f s system over the whole process (start, 4 runs, SIGTERM);\n"+
			"  the fake agent accepted %d smux streams (want 18), at most %d KiB buffered in one session's smux\n",
			r.label, r.total.UserSec, r.total.SysSec, r.muxStreams, r.muxPeak>>10)
	}
	fmt.Printf("vs plain TCP, ideal agent: upload %.0f%% (1 conn) %.0f%% (8 conns), download %.0f%% (1 conn) %.0f%% (8 conns)\n",
		100*ideal.mbs[0]/limit.mbs[0], 100*ideal.mbs[1]/limit.mbs[1], 100*ideal.mbs[2]/limit.mbs[2], 100*ideal.mbs[3]/limit.mbs[3])
	ceiling := pacingCeiling()
	fmt.Printf("realistic download vs the agent's pacing ceiling (%.3f MB/s for the whole session): %.0f%% (1 conn), %.0f%% (8 conns)\n",
		ceiling/1e6, 100*paced.mbs[2]*1e6/ceiling, 100*paced.mbs[3]*1e6/ceiling)
	if paced.agentRate > 0 {
		fmt.Printf("the fake agent's own send rate over both realistic downloads (smux frames included): %.3f MB/s\n", paced.agentRate/1e6)
	}
	return forwardSessions(srv, ssmproxy, fakeaws, work, sessionsMB)
}

// forwardSessions measures the cost of many sessions at once: one forward
// with 8 -L, each to its own source and so its own session, all
// downloading perMB at the realistic agent's pace together. It prints
// ssmproxy's CPU over the wall time of the downloads as a share of one
// core, and the fake's beside it.
func forwardSessions(srv *fwServers, ssmproxy, fakeaws, work string, perMB int) error {
	const sessions = 8
	var sources []net.Listener
	defer func() {
		for _, l := range sources {
			l.Close()
		}
	}()
	var ports []string
	for range sessions {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		sources = append(sources, l)
		go srv.serve(l, srv.sourceConn)
		_, port, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, port)
	}
	f, err := rig.StartFake(fakeaws, mkdir(work, "fwfake-sessions"), fakeProcs)
	if err != nil {
		return err
	}
	defer f.Stop()
	p, err := startForward(ssmproxy, f.Environ(mkdir(work, "fwhome-sessions")), ports...)
	if err != nil {
		return err
	}
	defer func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}()
	progress(fmt.Sprintf("forward: %d sessions at the agent's pace (%d MiB each)", sessions, perMB))
	per := int64(perMB) << 20
	cpu0, fake0, start := cpuSeconds(p.cmd.Process.Pid), cpuSeconds(f.Pid()), time.Now()
	errs := make(chan error, sessions)
	for _, port := range ports {
		go func() {
			_, err := srv.transfer("", p.addrs[port], false, 1, per)
			errs <- err
		}()
	}
	for range sessions {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	wall := time.Since(start).Seconds()
	cpu, fake := cpuSeconds(p.cmd.Process.Pid)-cpu0, cpuSeconds(f.Pid())-fake0
	if err != nil {
		return fmt.Errorf("%d sessions: %w (ssmproxy: %s)", sessions, err, p.stderr)
	}
	fmt.Printf("forward, %d sessions (one -L each) downloading %d MiB each at once from the realistic agent: %.2f MB/s in all;\n"+
		"  ssmproxy CPU %.2f s over %.1f s = %.1f%% of one core for all %d (target <= 30%%); fakeaws %.1f%%\n",
		sessions, perMB, float64(per*sessions)/wall/1e6, cpu, wall, 100*cpu/wall, sessions, 100*fake/wall)
	if vs, verr := f.Violations(); verr == nil && len(vs) > 0 {
		fmt.Printf("warning: fakeaws recorded %d protocol violations with %d sessions (first: %s %s)\n", len(vs), sessions, vs[0].Code, vs[0].Detail)
	}
	return nil
}

// runForwardBench is the forward part's entry point: its own work directory
// and binaries, so it runs with or without the ssh part.
func runForwardBench(binDir string, sizeMB, realMB, sessionsMB int) error {
	ssmproxy, _ := filepath.Abs(filepath.Join(binDir, "ssmproxy"))
	fakeaws, _ := filepath.Abs(filepath.Join(binDir, "fakeaws"))
	for _, p := range []string{ssmproxy, fakeaws} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing: run make build fakeaws first", p)
		}
	}
	work, err := os.MkdirTemp("", "ssmproxy-bench-forward-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	return runForward(ssmproxy, fakeaws, work, sizeMB, realMB, sessionsMB)
}

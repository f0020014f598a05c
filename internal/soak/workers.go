//go:build unix

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// shell is the interactive session: `ssh -T target /bin/sh`, asked one
// arithmetic command at a time, each answer checked.
type shell struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *rig.SyncBuffer
	first  time.Time // first answer
	last   time.Time // latest answer
	maxGap time.Duration
	maxRTT time.Duration
	n      int
}

// shellResult is what the interactive session saw.
type shellResult struct {
	answers int
	span    time.Duration // first to last answer, one ssh and one ssmproxy throughout
	maxGap  time.Duration // longest time between two answers
	maxRTT  time.Duration // longest time from command to answer
	stderr  string
}

func startShell(ctx context.Context, env []string, conf string) (*shell, error) {
	cmd := exec.CommandContext(ctx, "ssh", "-F", conf, "-T", rig.Target, "/bin/sh")
	cmd.Env = env
	ownGroup(cmd)
	sh := &shell{cmd: cmd, lines: make(chan string, 100), stderr: &rig.SyncBuffer{}}
	cmd.Stderr = sh.stderr
	var err error
	if sh.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			sh.lines <- sc.Text()
		}
		close(sh.lines)
	}()
	return sh, nil
}

// ask sends command i and waits for its answer.
func (sh *shell) ask(i int) error {
	sent := time.Now()
	if _, err := fmt.Fprintf(sh.stdin, "echo tick-%d $((%d*%d+7))\n", i, i, i); err != nil {
		return fmt.Errorf("command %d: %v: %s", i, err, sh.stderr.String())
	}
	want := fmt.Sprintf("tick-%d %d", i, i*i+7)
	timeout := time.After(answerWithin)
	for {
		select {
		case line, ok := <-sh.lines:
			if !ok {
				return fmt.Errorf("command %d: the session ended: %s", i, sh.stderr.String())
			}
			if line != want {
				return fmt.Errorf("command %d: answer %q, want %q", i, line, want)
			}
			now := time.Now()
			if sh.first.IsZero() {
				sh.first = now
			} else {
				sh.maxGap = max(sh.maxGap, now.Sub(sh.last))
			}
			sh.last = now
			sh.maxRTT = max(sh.maxRTT, now.Sub(sent))
			sh.n++
			return nil
		case <-timeout:
			return fmt.Errorf("command %d: no answer within %s", i, answerWithin)
		}
	}
}

func (sh *shell) span() time.Duration { return sh.last.Sub(sh.first) }

// close ends the shell with exit 0 and waits for ssh.
func (sh *shell) close() error {
	if _, err := fmt.Fprintln(sh.stdin, "exit 0"); err != nil {
		return fmt.Errorf("interactive session: %v", err)
	}
	sh.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- sh.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("interactive ssh ended with %v: %s", err, sh.stderr.String())
		}
		return nil
	case <-time.After(time.Minute):
		return fmt.Errorf("interactive ssh did not exit within a minute of exit 0")
	}
}

func (sh *shell) kill() {
	if sh.cmd.ProcessState == nil && sh.cmd.Process != nil {
		_ = syscall.Kill(-sh.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// ownGroup puts cmd in a process group of its own, which a cancelled run
// kills whole: rsync forks and its ssh and ssmproxy would otherwise outlive
// it and keep its output pipes open.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
}

func (sh *shell) result() shellResult {
	return shellResult{answers: sh.n, span: sh.span(), maxGap: sh.maxGap, maxRTT: sh.maxRTT, stderr: sh.stderr.String()}
}

// transfer is one rsync run, watched for progress through the size of its
// destination directory (rsync writes a temporary file there as it receives).
type transfer struct {
	name  string
	size  int64
	dst   string
	done  chan struct{}
	res   transferResult
	mu    sync.Mutex
	stall time.Duration // longest time without growth so far
	since time.Time     // last growth
	seen  int64         // bytes in the destination directory
}

type transferResult struct {
	dst      string
	elapsed  time.Duration
	maxStall time.Duration
	err      error
}

func startTransfer(ctx context.Context, name string, env []string, conf, src, dst string, size int64) *transfer {
	local := dst
	if _, path, ok := strings.Cut(dst, ":"); ok {
		local = path // the "remote" side is this machine
	}
	t := &transfer{name: name, size: size, dst: local, done: make(chan struct{}), since: time.Now()}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "rsync", "-e", "ssh -F "+conf, src, dst)
	cmd.Env = env
	ownGroup(cmd)
	var out rig.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	go t.watch(filepath.Dir(local))
	go func() {
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("rsync %s: %v: %s", name, err, strings.TrimSpace(out.String()))
		}
		t.mu.Lock()
		t.res = transferResult{dst: local, elapsed: time.Since(start), err: err}
		t.mu.Unlock()
		close(t.done)
	}()
	return t
}

// watch samples the destination directory's bytes every 100 ms until the
// transfer ends and keeps the longest time without growth.
func (t *transfer) watch(dir string) {
	var last int64 = -1
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			t.mu.Lock()
			t.stall = max(t.stall, time.Since(t.since))
			t.mu.Unlock()
			return
		case <-tick.C:
		}
		n := dirBytes(dir)
		now := time.Now()
		t.mu.Lock()
		if n != last {
			last = n
			t.since = now
		}
		t.seen = n
		t.stall = max(t.stall, now.Sub(t.since))
		t.mu.Unlock()
	}
}

func dirBytes(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}

// bytes is how much has arrived so far.
func (t *transfer) bytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seen
}

func (t *transfer) finished() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// stalled reports a transfer without progress for stallLimit.
func (t *transfer) stalled() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.finished() && time.Since(t.since) > stallLimit {
		return fmt.Errorf("%s: no progress for %s", t.name, stallLimit)
	}
	return nil
}

func (t *transfer) wait() transferResult {
	<-t.done
	time.Sleep(150 * time.Millisecond) // the watcher's last word
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.res
	r.maxStall = t.stall
	return r
}

// rssSampler reads VmHWM (peak resident set) of every running ssmproxy
// process of this run (executable bin/ssmproxy, this run's log file in its
// arguments) twice a second.
type rssSampler struct {
	exe   string
	mark  string // an argument only this run's ssmproxy processes have
	stopc chan struct{}
	done  chan struct{}
	peak  int64
	pids  map[int]bool
}

func startRSSSampler(exe, mark string) *rssSampler {
	r := &rssSampler{exe: exe, mark: mark, stopc: make(chan struct{}), done: make(chan struct{}), pids: map[int]bool{}}
	go func() {
		defer close(r.done)
		for {
			r.sample()
			select {
			case <-r.stopc:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return r
}

func (r *rssSampler) sample() {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != r.exe {
			continue
		}
		if args, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(args), r.mark) {
			continue
		}
		r.pids[pid] = true
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				if kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64); err == nil {
					r.peak = max(r.peak, kib)
				}
			}
		}
	}
}

// stop ends sampling and returns the peak in KiB and how many ssmproxy
// processes were seen.
func (r *rssSampler) stop() (int64, int) {
	close(r.stopc)
	<-r.done
	return r.peak, len(r.pids)
}

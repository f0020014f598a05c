//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// soak is one run's processes and places.
type soak struct {
	cfg      config
	work     string
	ssmproxy string
	fake     *rig.Fake
	env      []string // ssmproxy's and ssh's: no AWS key, the broker's keyring and role
	conf     string   // ssh_config with ssmproxy as ProxyCommand
	logFile  string
}

func run(ctx context.Context, cfg config) (*report, error) {
	s := &soak{cfg: cfg}
	s.ssmproxy, _ = filepath.Abs(filepath.Join(cfg.bin, "ssmproxy"))
	fakeBin, _ := filepath.Abs(filepath.Join(cfg.bin, "fakeaws"))
	for _, p := range []string{s.ssmproxy, fakeBin} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s missing: run make build fakeaws first", p)
		}
	}
	for _, tool := range []string{"ssh", "rsync", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is required", tool)
		}
	}
	var err error
	if s.work, err = os.MkdirTemp("", "ssmproxy-soak-"); err != nil {
		return nil, err
	}
	if cfg.keep {
		fmt.Printf("work directory (kept): %s\n", s.work)
	} else {
		defer os.RemoveAll(s.work)
	}
	d, err := rig.StartSSHD(s.dir("sshd"))
	if err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	defer d.Stop()
	if s.fake, err = rig.StartFake(fakeBin, s.dir("fake"), fakeArgs(cfg.credTTL)...); err != nil {
		return nil, err
	}
	defer s.fake.Stop()
	if err := s.login(); err != nil {
		return nil, err
	}
	s.logFile = filepath.Join(s.work, "ssmproxy.log")
	if s.conf, err = rig.SSHConfig(s.dir("ssh"), d.User, d.UserKey, d.Port, s.ssmproxy+" connect --log-file "+s.logFile); err != nil {
		return nil, err
	}

	sshVersion, _ := exec.Command("ssh", "-V").CombinedOutput()
	fmt.Printf("ssmproxy soak: %s each way with rsync plus an interactive ssh session, %s\n", sizeString(cfg.size), strings.TrimSpace(string(sshVersion)))
	fmt.Printf("fault plan: %s\n", planDescription(cfg.credTTL, cfg.agentLoss))
	if cfg.lifetimes > 0 {
		fmt.Printf("the interactive session runs until it has spanned %d credential lifetimes (%s)\n", cfg.lifetimes, time.Duration(cfg.lifetimes)*cfg.credTTL)
	}
	progress("writing %s of random data each way", sizeString(cfg.size))
	up, upSum, err := rig.RandomFile(filepath.Join(s.dir("local"), "up.bin"), cfg.size)
	if err != nil {
		return nil, err
	}
	down, downSum, err := rig.RandomFile(filepath.Join(s.dir("remote"), "down.bin"), cfg.size)
	if err != nil {
		return nil, err
	}
	if err := installPlan(s.fake, cfg.agentLoss); err != nil {
		return nil, err
	}

	r := &report{size: cfg.size, credTTL: cfg.credTTL}
	rss := startRSSSampler(s.ssmproxy, s.logFile)
	defer func() { r.peakRSSKiB, r.ssmproxyProcs = rss.stop() }()

	// The interactive session first: it must outlive everything else.
	sh, err := startShell(ctx, s.env, s.conf)
	if err != nil {
		return r, err
	}
	defer sh.kill()
	if err := sh.ask(0); err != nil {
		return r, fmt.Errorf("interactive session: %w", err)
	}
	shSession, err := s.newSession(nil)
	if err != nil {
		return r, err
	}

	start := time.Now()
	progress("rsync down and up in parallel, the interactive session answering every second")
	known, err := s.sessionIDs()
	if err != nil {
		return r, err
	}
	dl := startTransfer(ctx, "download", s.env, s.conf, rig.Target+":"+down, filepath.Join(s.dir("got"), "down.bin"), cfg.size)
	dlSession, err := s.newSession(known)
	if err != nil {
		return r, err
	}
	known[dlSession] = true
	ul := startTransfer(ctx, "upload", s.env, s.conf, up, rig.Target+":"+filepath.Join(s.dir("remote-got"), "up.bin"), cfg.size)
	ulSession, err := s.newSession(known)
	if err != nil {
		return r, err
	}

	r.roles = map[string]string{shSession: "shell", dlSession: "download", ulSession: "upload"}
	events := s.scheduleEvents(ctx, start, dl, ul, ulSession)
	minSpan := time.Duration(cfg.lifetimes) * cfg.credTTL
	var failure error
	for i := 1; ; i++ {
		if err := sh.ask(i); err != nil {
			failure = fmt.Errorf("interactive session: %w", err)
			break
		}
		if failure = firstErr(dl.stalled(), ul.stalled()); failure != nil {
			break
		}
		if dl.finished() && ul.finished() && sh.span() >= minSpan {
			break
		}
		select {
		case <-ctx.Done():
			failure = ctx.Err()
		case <-time.After(time.Second):
		}
		if failure != nil {
			break
		}
	}
	events.wait()
	r.down, r.up = dl.wait(), ul.wait()
	if failure == nil {
		failure = firstErr(r.down.err, r.up.err)
	}
	if failure == nil {
		failure = sh.close()
	}
	r.shell = sh.result()
	r.events = events.log
	r.lifetimes = r.shell.span.Seconds() / cfg.credTTL.Seconds()
	if failure == nil {
		derr, uerr := verify(r.down.dst, downSum, "download"), verify(r.up.dst, upSum, "upload")
		r.downOK, r.upOK = derr == nil, uerr == nil
		failure = firstErr(derr, uerr)
	}
	r.readSelfCounts(s.logFile)
	if err := s.collect(r, shSession); err != nil && failure == nil {
		failure = err
	}
	if failure == nil {
		failure = r.check()
	}
	if failure != nil {
		s.dumpLogs()
	}
	return r, failure
}

func (s *soak) dir(name string) string {
	p := filepath.Join(s.work, name)
	_ = os.MkdirAll(p, 0o700)
	return p
}

// login stores the fake's long-term key for alice with "ssmproxy login" in a
// file keyring, as the e2e broker tests do; ssmproxy then mints role
// credentials from it and re-mints them before each expiry.
func (s *soak) login() error {
	var id, secret string
	var base []string
	for _, kv := range s.fake.Environ(s.dir("home"),
		"XDG_CACHE_HOME="+s.dir("cache"), "XDG_CONFIG_HOME="+s.dir("config"), "SSMPROXY_LOCK_DIR="+s.dir("locks"),
		"SSMPROXY_KEYRING_BACKEND=file", "SSMPROXY_FILE_PASSPHRASE="+keyringPass, "SSMPROXY_ROLE_ARN="+soakRoleARN) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "AWS_ACCESS_KEY_ID":
			id = v
		case "AWS_SECRET_ACCESS_KEY":
			secret = v
		case "AWS_SESSION_TOKEN":
		default:
			base = append(base, kv)
		}
	}
	s.env = base
	_, _, err := rig.Run(context.Background(), append(base, "SSMPROXY_LOGIN_ACCESS_KEY_ID="+id, "SSMPROXY_LOGIN_SECRET_ACCESS_KEY="+secret),
		nil, s.ssmproxy, "login", "--profile", "default")
	if err != nil {
		return fmt.Errorf("ssmproxy login failed") // its error may hold the key: not repeated here
	}
	return nil
}

func (s *soak) sessionIDs() (map[string]bool, error) {
	var infos []fakeaws.SessionInfo
	if err := s.fake.GetJSON("/_fake/sessions", &infos); err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, in := range infos {
		ids[in.ID] = true
	}
	return ids, nil
}

// newSession waits for a session that is not in known to appear.
func (s *soak) newSession(known map[string]bool) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		ids, err := s.sessionIDs()
		if err != nil {
			return "", err
		}
		for id := range ids {
			if !known[id] {
				return id, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", errors.New("no new session appeared in the fake within a minute")
}

// dumpLogs prints the tail of ssmproxy's log for a failed run.
func (s *soak) dumpLogs() {
	b, err := os.ReadFile(s.logFile)
	if err != nil || len(b) == 0 {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	fmt.Printf("last lines of ssmproxy's log:\n  %s\n", strings.Join(lines, "\n  "))
}

func verify(path, want, what string) error {
	got, err := rig.SHA256File(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if got != want {
		return fmt.Errorf("%s: sha256 %s, want %s", what, got, want)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "progress: "+format+"...\n", a...)
}

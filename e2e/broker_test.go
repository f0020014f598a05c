//go:build unix

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// The credential broker end to end: bin/ssmproxy against bin/fakeaws, whose
// STS issues credentials that live 20 seconds and whose service closes every
// data channel every 7 seconds, so a two-minute session spans six credential
// lifetimes and a dozen reconnects.

const (
	brokerRole    = "ssmproxy-session"
	brokerRoleARN = "arn:aws:iam::123456789012:role/" + brokerRole
	credTTL       = 20 * time.Second
	filePass      = "e2e-keyring-passphrase"
)

// TestBrokerLongSession: an interactive ssh session and a 256 MiB rsync run
// side by side for about two minutes, over six credential lifetimes and
// many websocket closes, with the source key in the keyring: no disconnect,
// equal checksums, every ResumeSession answered 200, STS minting on its own.
func TestBrokerLongSession(t *testing.T) {
	requireTools(t, "rsync")
	d := startSSHD(t)
	f := startFake(t, "-cred-ttl", credTTL.String(), "-close-every", "7s", "-agent-pacing=false", "-role", brokerRole)
	w := newBrokerWorld(t, f)
	w.login("default")
	conf := d.sshConfig(t, "")

	src, sum := randomFile(t, t.TempDir(), 256<<20)
	dst := filepath.Join(t.TempDir(), "rsync-long.bin")
	start := time.Now()

	// The interactive session: a shell answering one command every few
	// seconds for as long as the transfer runs.
	sh := exec.Command("ssh", "-F", conf, "-T", target, "/bin/sh")
	sh.Env = w.base
	stdin, _ := sh.StdinPipe()
	stdout, _ := sh.StdoutPipe()
	var shErr strings.Builder
	sh.Stderr = &shErr
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	lr := newLineReader(stdout)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rs := exec.CommandContext(ctx, "rsync", "--bwlimit=2200", "-e", "ssh -F "+conf, src, target+":"+dst)
	rs.Env = w.base
	var rsOut strings.Builder
	rs.Stdout, rs.Stderr = &rsOut, &rsOut
	rsDone := make(chan error, 1)
	go func() { rsDone <- rs.Run() }()

	var rsErr error
	commands := 0
loop:
	for i := 0; ; i++ {
		fmt.Fprintf(stdin, "echo tick-%d $((%d*%d))\n", i, i, i)
		lr.expect(t, fmt.Sprintf("tick-%d %d", i, i*i), 30*time.Second)
		commands++
		select {
		case rsErr = <-rsDone:
			break loop
		case <-time.After(3 * time.Second):
		}
	}
	elapsed := time.Since(start)
	if rsErr != nil {
		t.Fatalf("rsync failed after %s: %v\n%s", elapsed, rsErr, rsOut.String())
	}
	fmt.Fprintf(stdin, "echo last; exit 0\n")
	lr.expect(t, "last", 30*time.Second)
	stdin.Close()
	if err := sh.Wait(); err != nil {
		t.Fatalf("interactive session ended badly: %v\n%s", err, shErr.String())
	}
	if shErr.Len() > 0 {
		t.Errorf("ssmproxy or ssh printed on stderr: %q", shErr.String())
	}
	if got := sha256File(t, dst); got != sum {
		t.Fatalf("rsync checksum %s, want %s", got, sum)
	}

	st := f.stats()
	resumes := st.API["ResumeSession"]
	t.Logf("session length %s = %.1f credential lifetimes of %s; %d shell commands; scheduled closes %d; "+
		"ResumeSession %v; StartSession %v; STS %v", elapsed.Round(time.Second), elapsed.Seconds()/credTTL.Seconds(), credTTL,
		commands, st.ScheduledCloses, resumes, st.API["StartSession"], st.STS)
	if elapsed < 5*credTTL || elapsed < 10*7*time.Second {
		t.Fatalf("the run lasted only %s: not five lifetimes and ten closes", elapsed)
	}
	for code, n := range resumes {
		if code != "200" {
			t.Errorf("ResumeSession answered %s %d times", code, n)
		}
	}
	// Two sessions (ssh and rsync), each closed every 7 s.
	if st.ScheduledCloses < 20 || resumes["200"] < 20 {
		t.Errorf("too few closes survived: closes %d, resumes %d", st.ScheduledCloses, resumes["200"])
	}
	// Both processes share one cache entry: about one AssumeRole per
	// lifetime, re-minted 3-5 s before expiry; never one per process.
	ar := st.STS["AssumeRole"]
	if ar < int64(elapsed/credTTL) || float64(ar) > elapsed.Seconds()/14+2 {
		t.Errorf("AssumeRole %d over %s: want one per refresh (every ~15-17 s)", ar, elapsed.Round(time.Second))
	}

	// "ssmproxy creds" describes it all without a secret.
	out, _ := run(t, w.base, nil, ssmproxyBin, "creds")
	for _, want := range []string{"file (long-term keys)", brokerRoleARN, "session name alice", "ssmproxy login", "hard deadline:  none"} {
		if !strings.Contains(out, want) {
			t.Errorf("creds output lacks %q:\n%s", want, out)
		}
	}
	_, secret := w.fakeKey()
	leaks := []string{secret}
	for _, e := range w.cacheEntries() {
		c, _ := e["credentials"].(map[string]any)
		for _, k := range []string{"secret_access_key", "session_token"} {
			if s, _ := c[k].(string); s != "" {
				leaks = append(leaks, s)
			}
		}
	}
	for _, s := range leaks {
		if strings.Contains(out, s) || strings.Contains(shErr.String(), s) {
			t.Fatal("a secret appears in the creds output or on stderr")
		}
	}
}

// TestBrokerExportedCredentialsExpire: the same setup with exported session
// credentials as the only source. ssmproxy says at connect time that they
// cannot be renewed and when they expire, warns, and after the last role
// credentials minted from them run out ends with one line naming the
// deadline and exit code 3, instead of hanging.
func TestBrokerExportedCredentialsExpire(t *testing.T) {
	// The echo target first: its cleanup waits for its connections, which
	// the fake's agent holds until the fake stops (cleanups run in reverse).
	port := fakeaws.Listen(t, fakeaws.Echo)
	d := startSSHD(t)
	f := startFake(t, "-cred-ttl", credTTL.String(), "-close-every", "7s", "-agent-pacing=false", "-role", brokerRole)
	w := newBrokerWorld(t, f)
	id, secret := w.fakeKey()
	c := mintSessionCreds(t, f, id, secret)
	deadline := c.Expires.Local().Format(time.RFC3339)
	env := append(w.base, "AWS_ACCESS_KEY_ID="+c.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+c.SecretAccessKey,
		"AWS_SESSION_TOKEN="+c.SessionToken, "AWS_CREDENTIAL_EXPIRATION="+c.Expires.UTC().Format(time.RFC3339))

	// ssmproxy directly, as ProxyCommand would run it, to see its exit code;
	// and ssh in parallel, to see what a user sees.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	px := exec.CommandContext(ctx, ssmproxyBin, "connect", target, port)
	px.Env = env
	pin, _ := px.StdinPipe()
	pout, _ := px.StdoutPipe()
	var perr rig.SyncBuffer
	px.Stderr = &perr
	start := time.Now()
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	conf := d.sshConfig(t, "")
	sshCmd := exec.CommandContext(ctx, "ssh", "-F", conf, target, "while sleep 1; do echo tick; done")
	sshCmd.Env = env
	var sshErr rig.SyncBuffer
	sshCmd.Stderr = &sshErr
	sshOut, _ := sshCmd.StdoutPipe()
	if err := sshCmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, sshOut) }()

	echoes := 0
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := fmt.Fprintf(pin, "ping %d\n", i); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	sc := bufio.NewScanner(pout)
	for sc.Scan() {
		echoes++
	}
	err := px.Wait()
	failedAfter := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("ssmproxy exited with %v after %s, want exit code 3\nstderr: %s", err, failedAfter, perr.String())
	}
	stderr := perr.String()
	t.Logf("exported credentials expiring at %s; ssmproxy ended after %s with %d echoes; stderr:\n%s",
		deadline, failedAfter.Round(time.Second), echoes, stderr)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "are temporary (the environment's session credentials) and expire at "+deadline) ||
		!strings.Contains(lines[0], "cannot be renewed from here") {
		t.Errorf("no connect-time notice with the deadline: %q", stderr)
	}
	if !strings.Contains(stderr, "ssmproxy: warning: the environment's session credentials") {
		t.Errorf("no warning before the deadline: %q", stderr)
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "ssmproxy: the environment's session credentials for profile \"default\" expired at "+deadline) ||
		!strings.Contains(last, "export fresh credentials") {
		t.Errorf("last line %q does not name the credential, the deadline and the fix", last)
	}
	// Authorised until the last role credentials minted before the deadline
	// ran out (at most one lifetime), then ended at the next resume.
	if until := time.Until(c.Expires); failedAfter < 15*time.Second || -until > credTTL+20*time.Second {
		t.Errorf("ended %s after start, %s after the deadline", failedAfter, -until)
	}
	if echoes < 10 {
		t.Errorf("only %d echoes before the end", echoes)
	}

	// ssh ends too (no hang) and shows the same line above its own.
	sshDone := make(chan error, 1)
	go func() { sshDone <- sshCmd.Wait() }()
	select {
	case <-sshDone:
	case <-time.After(40 * time.Second):
		t.Fatal("ssh still running 40 s after ssmproxy gave up")
	}
	if !strings.Contains(sshErr.String(), "expired at "+deadline) {
		t.Errorf("ssh's stderr lacks the deadline line: %q", sshErr.String())
	}
	if strings.Contains(stderr+sshErr.String(), c.SecretAccessKey) || strings.Contains(stderr+sshErr.String(), c.SessionToken) {
		t.Fatal("a secret appears on stderr")
	}
}

// TestBrokerTwelveProcesses: twelve ProxyCommands start at once against a
// slow STS and keep running over several credential lifetimes: each refresh
// is one AssumeRole, never one per process.
func TestBrokerTwelveProcesses(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo) // before the fake: see TestBrokerExportedCredentialsExpire
	f := startFake(t, "-cred-ttl", credTTL.String(), "-close-every", "7s", "-role", brokerRole)
	if err := f.post("/_fake/sts-delay?d=2s", ""); err != nil {
		t.Fatal(err)
	}
	w := newBrokerWorld(t, f)
	id, secret := w.fakeKey()
	env := append(w.base, "AWS_ACCESS_KEY_ID="+id, "AWS_SECRET_ACCESS_KEY="+secret) // a long-term key, exported

	// Watch the AssumeRole counter: every step must be exactly one.
	var steps []int64
	var stepTimes []time.Duration
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(watchDone)
		var last int64
		for watchCtx.Err() == nil {
			var st fakeaws.Stats
			if err := f.getJSON("/_fake/stats", &st); err == nil {
				if n := st.STS["AssumeRole"]; n != last {
					steps = append(steps, n-last)
					stepTimes = append(stepTimes, time.Since(start).Round(100*time.Millisecond))
					last = n
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	const n = 12
	const runFor = 45 * time.Second
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoSession(env, port, i, runFor)
		}()
	}
	wg.Wait()
	stopWatch()
	<-watchDone
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	st := f.stats()
	t.Logf("%d processes for %s: AssumeRole steps %v at %v; STS %v; ResumeSession %v", n, runFor, steps, stepTimes, st.STS, st.API["ResumeSession"])
	total := st.STS["AssumeRole"]
	for _, s := range steps {
		if s != 1 {
			t.Errorf("a refresh made %d AssumeRole calls, want 1 (steps %v)", s, steps)
		}
	}
	// One at start, then one every ~17 s (20 s lifetime, re-mint 3-5 s
	// early, 2 s STS delay): 3 or 4 over 45 s.
	if total < 2 || total > 5 {
		t.Errorf("AssumeRole %d for %d processes over %s", total, n, runFor)
	}
	if st.STS["GetCallerIdentity"] != 1 {
		t.Errorf("GetCallerIdentity %d, want 1", st.STS["GetCallerIdentity"])
	}
	for code, cnt := range st.API["ResumeSession"] {
		if code != "200" {
			t.Errorf("ResumeSession answered %s %d times", code, cnt)
		}
	}
}

// TestBrokerCredentialProcess: an ordinary SDK program whose profile uses
// "ssmproxy credential-process" gets the broker's scoped credentials: it may
// start a session on the target, not on another instance, and its
// Expiration comes a few minutes before the real one.
func TestBrokerCredentialProcess(t *testing.T) {
	f := startFake(t, "-role", brokerRole, "-target", target, "-target", "i-0fedcba9876543210")
	w := newBrokerWorld(t, f)
	w.login("src")
	client := filepath.Join(t.TempDir(), "sdkclient")
	if out, err := exec.Command("go", "build", "-o", client, "./testdata/sdkclient").CombinedOutput(); err != nil {
		t.Fatalf("build the SDK client: %v %s", err, out)
	}
	cfgFile := filepath.Join(w.dir, "aws-config")
	conf := fmt.Sprintf("[profile broker]\nregion = us-east-1\ncredential_process = %s credential-process --profile src --role-arn %s --target %s\n",
		ssmproxyBin, brokerRoleARN, target)
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(without(w.base, "SSMPROXY_ROLE_ARN"), "AWS_CONFIG_FILE="+cfgFile, "AWS_PROFILE=broker")
	out, _ := run(t, env, nil, client, target, "i-0fedcba9876543210")
	var r struct {
		CallerARN     string    `json:"caller_arn"`
		AccessKeyID   string    `json:"access_key_id"`
		Expires       time.Time `json:"expires"`
		StartSession  string    `json:"start_session"`
		Terminate     string    `json:"terminate"`
		OtherInstance string    `json:"other_instance"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	t.Logf("SDK client: %+v", r)
	if r.CallerARN != "arn:aws:sts::123456789012:assumed-role/"+brokerRole+"/alice" {
		t.Errorf("caller %s, want the scoped role session", r.CallerARN)
	}
	if r.StartSession != "ok" || r.Terminate != "ok" {
		t.Errorf("the target's session: start %s, terminate %s", r.StartSession, r.Terminate)
	}
	if !strings.Contains(r.OtherInstance, "AccessDenied") {
		t.Errorf("another instance: %s, want AccessDenied (the session policy)", r.OtherInstance)
	}
	ents := w.cacheEntries()
	if len(ents) != 1 {
		t.Fatalf("cache entries: %d", len(ents))
	}
	c := ents[0]["credentials"].(map[string]any)
	real, _ := time.Parse(time.RFC3339, c["expiration"].(string))
	if c["access_key_id"] != r.AccessKeyID || !r.Expires.Before(real.Add(-4*time.Minute)) || r.Expires.Before(real.Add(-6*time.Minute)) {
		t.Errorf("reported expiry %s for real %s: want about 5 minutes early", r.Expires, real)
	}

	// The command itself: JSON Version 1, and only that, on stdout.
	js, stderr := run(t, env, nil, ssmproxyBin, "credential-process", "--profile", "src", "--role-arn", brokerRoleARN, "--target", target)
	var cp map[string]any
	if err := json.Unmarshal([]byte(js), &cp); err != nil || cp["Version"] != float64(1) || cp["Expiration"] == "" || stderr != "" {
		t.Fatalf("credential-process printed %q / %q", js, stderr)
	}
	if f.stats().STS["AssumeRole"] != 1 {
		t.Errorf("AssumeRole %d: the second run should use the cache", f.stats().STS["AssumeRole"])
	}
	// creds shows the entry and no secret.
	st, _ := run(t, env, nil, ssmproxyBin, "creds", "--profile", "src", "--role-arn", brokerRoleARN)
	_, secret := w.fakeKey()
	for _, s := range []string{secret, c["secret_access_key"].(string), c["session_token"].(string)} {
		if strings.Contains(st, s) {
			t.Fatal("creds prints a secret")
		}
	}
	if !strings.Contains(st, target) || !strings.Contains(st, "[fresh]") {
		t.Errorf("creds output:\n%s", st)
	}
}

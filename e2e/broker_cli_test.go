//go:build unix

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

const mfaSerial = "arn:aws:iam::123456789012:mfa/alice"

// TestBrokerMFAWithoutTerminal: a key with an MFA device, run without a
// controlling terminal (as under an IDE or ssh -f). With no way to ask for a
// code, ssmproxy prints one line naming the device and the fix, exits 3, and
// writes nothing to stdout (the SSH stream). SSH_ASKPASS then supplies a
// code; the MFA session it mints is kept in the keyring and the next
// connection needs no code at all.
func TestBrokerMFAWithoutTerminal(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo) // before the fake: its cleanup waits for the agent's connections
	f := startFake(t, "-role", brokerRole, "-mfa-device", mfaSerial)
	w := newBrokerWorld(t, f)
	id, secret := w.fakeKey()
	run(t, append(w.base, "SSMPROXY_LOGIN_ACCESS_KEY_ID="+id, "SSMPROXY_LOGIN_SECRET_ACCESS_KEY="+secret),
		nil, ssmproxyBin, "login", "--mfa-serial", mfaSerial)

	// 1. No terminal, no askpass, no token.
	out, stderr, code := connectOnce(t, w.base, port, "")
	if code != 3 || out != "" {
		t.Fatalf("exit %d, stdout %q; want 3 and nothing on stdout\nstderr: %s", code, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], mfaSerial) || !strings.Contains(lines[0], "SSMPROXY_MFA_PROCESS") {
		t.Fatalf("want one line naming the device and the fix, got %q", stderr)
	}
	if n := f.stats().STS["GetSessionToken"]; n != 0 {
		t.Fatalf("GetSessionToken %d without a code", n)
	}

	// 2. SSH_ASKPASS supplies the code (stdin null, prompt as argument).
	askpass := filepath.Join(w.dir, "askpass.sh")
	report := filepath.Join(w.dir, "askpass.report")
	script := fmt.Sprintf("#!/bin/sh\n{ echo \"argv=$1\"; env | grep -c '^AWS_SECRET_ACCESS_KEY=' ; } > %s\necho 123456\n", report)
	if err := os.WriteFile(askpass, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = connectOnce(t, append(w.base, "SSH_ASKPASS="+askpass, "AWS_SECRET_ACCESS_KEY=must-not-reach-children"), port, "hello mfa\n")
	if code != 0 || out != "hello mfa\n" {
		t.Fatalf("with SSH_ASKPASS: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
	rep, _ := os.ReadFile(report)
	if !strings.Contains(string(rep), "argv=MFA code for "+mfaSerial) || !strings.HasSuffix(string(rep), "0\n") {
		t.Fatalf("askpass saw %q", rep)
	}

	// 3. The stored MFA session serves the next connection, no code needed.
	out, stderr, code = connectOnce(t, w.base, port, "again\n")
	if code != 0 || out != "again\n" {
		t.Fatalf("with the stored MFA session: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
	st := f.stats().STS
	if st["GetSessionToken"] != 1 || st["AssumeRole"] != 1 {
		t.Fatalf("STS %v: want one GetSessionToken and one AssumeRole (the second connection uses the cache)", st)
	}
}

// connectOnce runs ssmproxy connect in a new session (no controlling
// terminal), sends input, closes stdin and returns stdout, stderr and the
// exit code.
func connectOnce(t *testing.T, env []string, port, input string) (string, string, int) {
	t.Helper()
	return connectArgs(t, env, input, target, port)
}

// connectArgs is connectOnce with the connect command's arguments.
func connectArgs(t *testing.T, env []string, input string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ssmproxyBin, append([]string{"connect"}, args...)...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out rig.SyncBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = bufio.NewReader(outPipe).WriteTo(&out)
	}()
	if input != "" {
		_, _ = in.Write([]byte(input))
		// Wait for the echo (or the end) before closing stdin.
		end := time.Now().Add(30 * time.Second)
		for time.Now().Before(end) && len(out.String()) < len(input) {
			select {
			case <-done:
				end = time.Now()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	in.Close()
	<-done
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestBrokerRefusedCacheRemints: credentials in the shared cache that the
// service refuses (revoked here) are replaced at the next connect, not read
// again by every ssmproxy until they expire.
func TestBrokerRefusedCacheRemints(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo)
	f := startFake(t, "-role", brokerRole)
	w := newBrokerWorld(t, f)
	w.login("default")
	if out, stderr, code := connectOnce(t, w.base, port, "one\n"); code != 0 || out != "one\n" {
		t.Fatalf("first connect: %d %q %s", code, out, stderr)
	}
	ents := w.cacheEntries()
	if len(ents) != 1 {
		t.Fatalf("cache entries %d", len(ents))
	}
	akid := ents[0]["credentials"].(map[string]any)["access_key_id"].(string)
	if err := f.post("/_fake/credentials/expire?akid="+akid, ""); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := connectOnce(t, w.base, port, "two\n"); code != 0 || out != "two\n" {
		t.Fatalf("connect with refused cached credentials: %d %q %s", code, out, stderr)
	}
	st := f.stats()
	if st.STS["AssumeRole"] != 2 || st.API["StartSession"]["200"] != 2 {
		t.Fatalf("STS %v, StartSession %v: want a second AssumeRole and both sessions started", st.STS, st.API["StartSession"])
	}
}

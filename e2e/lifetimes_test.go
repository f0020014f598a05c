//go:build unix

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// shortTTL is the credential lifetime of TestBrokerThirtyLifetimes: short
// enough for 30 lifetimes in CI time, long enough for the broker's schedule
// (docs/credentials.md 5.5: re-mint 2/3 to 1 of W = lifetime/4 before
// expiry, i.e. 0.8-1.25 s here) to have room for an STS round trip.
const shortTTL = 5 * time.Second

// TestBrokerThirtyLifetimes: one ssmproxy process, one session, data
// flowing both ways every second, across at least 30 credential lifetimes
// (issue 7, "Long hauls"). The key is in the keyring, the broker mints role
// credentials that live 5 s, and the service closes the data channel every
// 4 s, so every reconnect signs a ResumeSession with whatever the broker
// holds at that moment: each must be answered 200, no byte may be lost, no
// new session started, and the broker must have minted about once per
// lifetime.
func TestBrokerThirtyLifetimes(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo) // before the fake: see TestBrokerExportedCredentialsExpire
	f := startFake(t, "-cred-ttl", shortTTL.String(), "-close-every", "4s", "-role", brokerRole)
	w := newBrokerWorld(t, f)
	w.login("default")

	const lifetimes = 30
	runFor := lifetimes*shortTTL + shortTTL/2
	ctx, cancel := context.WithTimeout(context.Background(), runFor+2*time.Minute)
	defer cancel()
	px := exec.CommandContext(ctx, ssmproxyBin, "connect", target, port)
	px.Env = w.base
	in, _ := px.StdinPipe()
	out, _ := px.StdoutPipe()
	var stderr rig.SyncBuffer
	px.Stderr = &stderr
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var moved int64
	var failure error
	block := make([]byte, 32<<10)
	back := make([]byte, len(block))
	for i := 0; time.Since(start) < runFor; i++ {
		_, _ = rand.Read(block)
		if _, err := in.Write(block); err != nil {
			failure = fmt.Errorf("block %d: write: %v", i, err)
			break
		}
		if _, err := io.ReadFull(out, back); err != nil {
			failure = fmt.Errorf("block %d: read: %v", i, err)
			break
		}
		if !bytes.Equal(block, back) {
			failure = fmt.Errorf("block %d came back different", i)
			break
		}
		moved += int64(len(block))
		time.Sleep(time.Second)
	}
	elapsed := time.Since(start)
	in.Close()
	err := px.Wait()
	if failure == nil && err != nil {
		failure = err
	}
	if failure != nil {
		var ee *exec.ExitError
		if errors.As(failure, &ee) {
			failure = fmt.Errorf("ssmproxy exited with code %d", ee.ExitCode())
		}
		t.Fatalf("after %s: %v\nstderr: %s", elapsed.Round(time.Second), failure, stderr.String())
	}
	if stderr.String() != "" {
		t.Errorf("ssmproxy printed on stderr: %q", stderr.String())
	}

	st := f.stats()
	resumes := st.API["ResumeSession"]
	spanned := elapsed.Seconds() / shortTTL.Seconds()
	t.Logf("one session for %s = %.1f credential lifetimes of %s; %d KiB echoed both ways; AssumeRole %d; "+
		"ResumeSession %v; scheduled closes %d; StartSession %v",
		elapsed.Round(time.Second), spanned, shortTTL, moved>>10, st.STS["AssumeRole"], resumes, st.ScheduledCloses, st.API["StartSession"])
	if spanned < lifetimes {
		t.Fatalf("only %.1f lifetimes", spanned)
	}
	if st.SessionsStarted != 1 || st.API["StartSession"]["200"] != 1 {
		t.Errorf("sessions started %d, StartSession %v: want exactly one session", st.SessionsStarted, st.API["StartSession"])
	}
	for code, n := range resumes {
		if code != "200" {
			t.Errorf("ResumeSession answered %s %d times", code, n)
		}
	}
	// A reconnect in (nearly) every lifetime: ResumeSession was signed with
	// credentials of each generation, not one long-lived set.
	if resumes["200"] < lifetimes {
		t.Errorf("%d resumes over %.1f lifetimes", resumes["200"], spanned)
	}
	// At least one AssumeRole per lifetime (each mints a distinct
	// credential), and never many more: the broker re-mints once per
	// expiry, not per call. The fake truncates expiry to the second, so a
	// 5 s credential lives 4-5 s and is re-minted W = lifetime/4 early at
	// most: one mint per 3 s at the fastest.
	fastest := (shortTTL - time.Second) * 3 / 4
	if ar := st.STS["AssumeRole"]; float64(ar) < spanned-1 || ar > int64(elapsed/fastest)+2 {
		t.Errorf("AssumeRole %d over %.1f lifetimes: want one per lifetime (at most one per %s)", ar, spanned, fastest)
	}
}

package broker

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// startedBroker is a prepared broker with its timer running on a fake clock
// (jitter 0) from a login key with the role.
func startedBroker(t *testing.T, e *testEnv, mods ...func(*Options)) (*Broker, *clock.Fake) {
	t.Helper()
	fc := clock.NewFake(time.Now())
	b := e.newBroker(append([]func(*Options){func(o *Options) { o.Clock = fc; o.Jitter = func() float64 { return 0 } }}, mods...)...)
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	return b, fc
}

func (b *Broker) current() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cur.Credentials.AccessKeyID
}

// TestRetrieveDoesNotWaitForRefresh: past the re-mint time, while the
// current credentials are still valid, Retrieve (a ResumeSession) returns
// them at once and the timer re-mints in the background, even against a
// slow STS.
func TestRetrieveDoesNotWaitForRefresh(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	fc := clock.NewFake(time.Now())
	b := e.newBroker(func(o *Options) { o.Clock = fc })
	ctx := context.Background()
	if err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := b.Retrieve(ctx)
	select { // the timer then starts with nothing pending
	case <-b.wake:
	default:
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	due := b.due
	b.mu.Unlock()
	if !fc.WaitForNext(due, 5*time.Second) {
		t.Fatal("the refresh timer was not armed")
	}
	// The timer now sleeps until its alarm. The re-mint becomes due without
	// it firing (the clock does not move), no other process has minted (no
	// cache entry), and the credentials are good for almost an hour.
	e.ts.IAM.SetSTSDelay(3 * time.Second)
	b.mu.Lock()
	b.due = fc.Now().Add(-time.Second)
	b.mu.Unlock()
	if err := os.Remove(b.chain.cache.file.path(b.chain.cache.key)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, err := b.Retrieve(ctx)
	if took := time.Since(start); err != nil || c.AccessKeyID != first.AccessKeyID || took > time.Second {
		t.Fatalf("Retrieve took %s (%v): it must serve the valid credentials without waiting for STS", took, err)
	}
	if !fakeaws.WaitFor(10*time.Second, func() bool { return b.current() != first.AccessKeyID }) {
		t.Fatal("the timer did not re-mint in the background")
	}
	if e.sts("AssumeRole") != 2 {
		t.Fatalf("AssumeRole %d, want 2", e.sts("AssumeRole"))
	}
}

// TestInvalidateTargetsRefusedKey: a call signed with the old credentials
// is refused after the timer adopted new ones: the new ones stay (no mint,
// no blacklisting of a fresh key). Once the new ones were handed out and
// are refused, Invalidate does mint.
func TestInvalidateTargetsRefusedKey(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	b, fc := startedBroker(t, e)
	ctx := context.Background()
	old, _ := b.Retrieve(ctx) // a ResumeSession signs with these
	b.mu.Lock()
	due := b.due
	b.mu.Unlock()
	if !fc.WaitForNext(due, 5*time.Second) {
		t.Fatal("no refresh timer")
	}
	fc.Set(due.Add(time.Second))
	if !fakeaws.WaitFor(5*time.Second, func() bool { return b.current() != old.AccessKeyID }) {
		t.Fatal("the timer did not re-mint")
	}
	fresh := b.current()
	b.Invalidate() // the service refused the call signed with old
	c, err := b.Retrieve(ctx)
	if err != nil || c.AccessKeyID != fresh || e.sts("AssumeRole") != 2 {
		t.Fatalf("after a refusal of the old credentials: %v, same fresh ones %v, AssumeRole %d (want 2)",
			err, c.AccessKeyID == fresh, e.sts("AssumeRole"))
	}
	// Now the fresh ones were handed out (just above) and are refused.
	fc.Advance(2 * refusalWindow)
	if _, err := b.Retrieve(ctx); err != nil {
		t.Fatal(err)
	}
	b.Invalidate()
	if c, err := b.Retrieve(ctx); err != nil || c.AccessKeyID == fresh || e.sts("AssumeRole") != 3 {
		t.Fatalf("refused fresh credentials: %v, AssumeRole %d (want 3)", err, e.sts("AssumeRole"))
	}
}

// TestFinalMintBeforeDeadline: exported session credentials that die in 20
// minutes, with a role. The connection cannot be promised more than the
// deadline (a chained role session is not assumed to outlive its parent),
// and the broker mints one last time shortly before the deadline instead of
// waiting for its regular schedule, which would come after it.
func TestFinalMintBeforeDeadline(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	src := e.sessionCreds()
	t0 := time.Now().Truncate(time.Second)
	src.Expires = t0.Add(20 * time.Minute)
	e.exportCreds(src)
	fc := clock.NewFake(t0)
	b := e.newBroker(func(o *Options) { o.Clock = fc; o.Jitter = func() float64 { return 0 } })
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	notice := e.notice.String()
	if !strings.Contains(notice, "expire at "+src.Expires.Local().Format(time.RFC3339)) || strings.Contains(notice, "stays authorised until") {
		t.Fatalf("connect notice %q: it must name the deadline and promise nothing beyond it", notice)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	final := src.Expires.Add(-5 * time.Minute) // finalLead of 1-hour credentials
	b.mu.Lock()
	due := b.due
	b.mu.Unlock()
	if !due.Equal(final) {
		t.Fatalf("next re-mint at %s, want the final mint at %s", due, final)
	}
	fc.Set(final.Add(time.Second))
	if !fakeaws.WaitFor(5*time.Second, func() bool { return e.sts("AssumeRole") == 2 }) {
		t.Fatalf("no final mint before the deadline (AssumeRole %d)", e.sts("AssumeRole"))
	}
	// That was the last one: the next re-mint is after the deadline.
	if !fakeaws.WaitFor(5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.due.After(src.Expires)
	}) {
		t.Fatal("another mint is scheduled before the deadline")
	}
}

// TestAuthorisedUntil: the estimate runs from the final mint, and a
// chained session is capped by its parent.
func TestAuthorisedUntil(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	d := &Deadline{At: now.Add(3 * time.Hour), What: "x"}
	role := func(chained bool, parent time.Time) *entry {
		return &entry{RoleARN: "r", Deadline: d, Chained: chained, ParentExpires: parent,
			Credentials: Credentials{Issued: now, Expires: now.Add(time.Hour)}}
	}
	cases := []struct {
		name string
		e    *entry
		want time.Time
	}{
		{"chained from the source itself", role(true, d.At), d.At},
		{"chained, parent outlives the deadline", role(true, d.At.Add(30*time.Minute)), d.At.Add(30 * time.Minute)},
		{"not chained: final mint plus a lifetime", role(false, time.Time{}), d.At.Add(55 * time.Minute)},
		{"no role: the credentials themselves", &entry{Deadline: d, Credentials: Credentials{Expires: d.At}}, d.At},
	}
	for _, c := range cases {
		if got := authorisedUntil(c.e, now); !got.Equal(c.want) {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

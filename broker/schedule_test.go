package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

func TestWindowScalesWithLifetime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		life           time.Duration
		earliest, last time.Duration // re-mint between expiry-earliest and expiry-last
	}{
		{time.Hour, 15 * time.Minute, 10 * time.Minute},
		{12 * time.Hour, 15 * time.Minute, 10 * time.Minute},
		{20 * time.Second, 5 * time.Second, 3333 * time.Millisecond},
	}
	for _, c := range cases {
		cr := Credentials{Issued: t0, Expires: t0.Add(c.life)}
		if got := refreshAt(cr, 0.999999); got.Sub(cr.Expires.Add(-c.earliest)).Abs() > 10*time.Millisecond {
			t.Errorf("%s: latest jitter re-mints at %s before expiry, want %s", c.life, cr.Expires.Sub(got), c.earliest)
		}
		if got := refreshAt(cr, 0); got.Sub(cr.Expires.Add(-c.last)).Abs() > 10*time.Millisecond {
			t.Errorf("%s: earliest jitter re-mints at %s before expiry, want %s", c.life, cr.Expires.Sub(got), c.last)
		}
		// A cache entry is fresh while more than the full window remains,
		// so any timer (which fires inside the window) finds it stale.
		if !fresh(cr, cr.Expires.Add(-c.earliest-time.Second)) || fresh(cr, cr.Expires.Add(-c.earliest+time.Millisecond)) {
			t.Errorf("%s: freshness boundary wrong", c.life)
		}
	}
	hour := Credentials{Issued: t0, Expires: t0.Add(time.Hour)}
	if got := hour.Expires.Sub(reportedExpiry(hour)); got != 5*time.Minute {
		t.Errorf("credential_process Expiration %s early, want 5m", got)
	}
}

// TestRefreshTimer drives the broker's own timer with a fake clock: no
// re-mint before the jittered due time, one right after it, a failed early
// refresh keeps the current credentials and is retried with backoff.
func TestRefreshTimer(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	fc := clock.NewFake(time.Now())
	b := e.newBroker(func(o *Options) { o.Clock = fc; o.Jitter = func() float64 { return 0 }; o.RoleDuration = 2 * time.Hour })
	ctx := context.Background()
	if err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	first, _ := b.Retrieve(ctx)
	b.mu.Lock()
	due := b.due
	b.mu.Unlock()
	// Jitter 0: two thirds of the 15 min window (to the second: the fake
	// STS truncates expiries).
	if want := first.Expires.Add(-10 * time.Minute); due.Sub(want).Abs() > time.Second {
		t.Fatalf("re-mint due %s before expiry, want 10m", first.Expires.Sub(due))
	}
	if !fc.WaitForNext(due, 5*time.Second) {
		t.Fatal("the refresh timer was not armed for the due time")
	}
	// A second before: the timer is provably still armed (the fake fires
	// every timer an Advance reaches before returning), so nothing re-mints.
	fc.Set(due.Add(-time.Second))
	if next, ok := fc.Next(); !ok || !next.Equal(due) {
		t.Fatalf("the refresh timer fired before the due time (next timer %v %v)", next, ok)
	}
	if n := e.sts("AssumeRole"); n != 1 {
		t.Fatalf("re-minted %d times before the due time", n-1)
	}
	fc.Set(due.Add(time.Second))
	if !fakeaws.WaitFor(5*time.Second, func() bool { return e.sts("AssumeRole") == 2 }) {
		t.Fatalf("the timer did not re-mint at the due time (AssumeRole %d)", e.sts("AssumeRole"))
	}
	// The STS call is recorded before its answer arrives; meanwhile the
	// old credentials are still served.
	var second aws.Credentials
	if !fakeaws.WaitFor(5*time.Second, func() bool {
		second, _ = b.Retrieve(ctx)
		return second.AccessKeyID != first.AccessKeyID
	}) {
		t.Fatal("Retrieve still returns the old credentials")
	}

	// STS now refuses the request (the role's maximum session became
	// shorter than the 2 h asked for): the early refresh fails, the current
	// credentials keep being served, and the refresh is retried.
	e.ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: time.Hour})
	b.mu.Lock()
	due = b.due
	b.mu.Unlock()
	fc.Set(due.Add(time.Second))
	if !fakeaws.WaitFor(5*time.Second, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.failures == 1 }) {
		t.Fatal("the failed refresh was not recorded")
	}
	c, err := b.Retrieve(ctx)
	if err != nil || c.AccessKeyID != second.AccessKeyID {
		t.Fatalf("a failed early refresh must keep serving valid credentials: %v", err)
	}
	e.ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})
	before := e.sts("AssumeRole")
	fc.Advance(2 * time.Second)
	if !fakeaws.WaitFor(5*time.Second, func() bool {
		c, _ := b.Retrieve(ctx)
		return c.AccessKeyID != second.AccessKeyID
	}) {
		t.Fatalf("no successful retry (AssumeRole %d → %d)", before, e.sts("AssumeRole"))
	}
}

// TestDeadlineNoticesAndFailure: exported session credentials that expire
// in 20 minutes: a connect notice with the exact deadline, two warnings
// before it, and a permanent error after it. No STS call is needed without a
// role.
func TestDeadlineNoticesAndFailure(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	fc := clock.NewFake(time.Now().Truncate(time.Second))
	c := e.sessionCreds()
	c.Expires = fc.Now().Add(20 * time.Minute)
	e.exportCreds(c)
	b := e.newBroker(func(o *Options) { o.Clock = fc; o.RoleARN = ""; o.Jitter = func() float64 { return 0.5 } })
	ctx := context.Background()
	if err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	stamp := c.Expires.Local().Format(time.RFC3339)
	if n := e.notice.String(); !strings.Contains(n, "expire at "+stamp+" (in 20m0s)") || !strings.Contains(n, "xport fresh credentials") {
		t.Fatalf("connect notice %q", n)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	warnings := func() int { return strings.Count(e.notice.String(), "warning:") }
	firstWarning := c.Expires.Add(-10 * time.Minute)
	if !fc.WaitForNext(firstWarning, 5*time.Second) {
		t.Fatal("the first warning is not scheduled 10 minutes before the deadline")
	}
	fc.Advance(9*time.Minute + 59*time.Second)
	if next, ok := fc.Next(); !ok || !next.Equal(firstWarning) || warnings() != 0 {
		t.Fatalf("warned too early (next timer %v %v, %d warnings)", next, ok, warnings())
	}
	fc.Advance(2 * time.Second)
	if !fakeaws.WaitFor(5*time.Second, func() bool { return warnings() == 1 }) {
		t.Fatalf("no warning 10 minutes before the deadline: %q", e.notice.String())
	}
	fc.WaitForTimers(1, 5*time.Second)
	fc.Set(c.Expires.Add(-3 * time.Minute))
	if !fakeaws.WaitFor(5*time.Second, func() bool { return warnings() == 2 }) {
		t.Fatalf("no second warning: %q", e.notice.String())
	}
	if _, err := b.Retrieve(ctx); err != nil {
		t.Fatalf("still valid 3 minutes before the deadline: %v", err)
	}
	fc.Set(c.Expires.Add(time.Second))
	_, err := b.Retrieve(ctx)
	var se *SourceError
	if !errors.As(err, &se) || !se.Permanent() || !strings.Contains(err.Error(), "expired at "+stamp) {
		t.Fatalf("after the deadline: %v", err)
	}
	if e.sts("AssumeRole") != 0 {
		t.Fatal("no role: nothing to mint")
	}
	e.assertNoSecrets("notices and logs", e.notice.String(), e.logs.String(), err.Error())
}

// TestStatusHasNoSecrets: the status behind "ssmproxy creds".
func TestStatusHasNoSecrets(t *testing.T) {
	e := newTestEnv(t, fakeaws.Options{})
	e.login("default", "")
	b := e.newBroker()
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := b.Status(context.Background())
	if len(st.Entries) != 1 || st.Entries[0].RoleSessionName != "alice" || !st.Entries[0].Fresh || st.KeyringBackend != "memory" {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(st.Source, "ssmproxy login") || st.Deadline != nil {
		t.Fatalf("source %q deadline %+v", st.Source, st.Deadline)
	}
	e.assertNoSecrets("the status", fmt.Sprintf("%+v %#v", st, st))
	if strings.Contains(fmt.Sprintf("%+v", st), e.ts.User.SecretAccessKey) {
		t.Fatal("the source secret appears in the status")
	}
}

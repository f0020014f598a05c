// Package broker keeps ssmproxy authorised for as long as the user's source
// of credentials lives, not as long as one set of temporary credentials
// does (credentials.md section 5).
//
// It reads a source (a long-term key stored in the keyring by "ssmproxy
// login", any shared-config profile, or the environment), optionally mints an
// MFA session (GetSessionToken, kept in the keyring), and mints short-lived
// credentials with AssumeRole and an inline session policy scoped to the
// target, the document and the caller's own sessions. Minted credentials go
// to a per-user cache file that every ssmproxy process reads, one process
// mints at a time (a per-key lock file), and a long-lived process re-mints
// ahead of expiry on its own timer. When the source cannot be renewed without
// a human, the broker says so at connect time and fails with a permanent
// error that names what expired, when, and the fix.
//
// A Broker is an aws.CredentialsProvider with Invalidate. ssmproxy passes it
// to the SSM client as is (not wrapped in the SDK's CredentialsCache, which
// would hide both the re-mint and Invalidate), so every StartSession,
// ResumeSession, TerminateSession and signed dial gets credentials valid at
// that moment.
package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/internal/lockfile"
	"github.com/ssmproxy/ssmproxy/keyring"
)

// Broker mints, caches and refreshes credentials for one profile and scope.
// It is safe for concurrent use.
type Broker struct {
	o       Options
	set     *settings
	src     source
	key     string // cache key
	cache   fileCache
	lockDir string
	clk     clock.Clock
	log     *slog.Logger

	krMu                 sync.Mutex
	persistent, volatile keyring.Store

	noSourceIdentity atomic.Bool
	// allowTTY is true only while Prepare runs: the terminal may be used
	// before the first SSH byte, never mid-session (ssh owns it then).
	allowTTY       *atomic.Bool
	waitNoticeOnce sync.Once

	mintMu sync.Mutex // one refresh at a time in this process

	mu          sync.Mutex
	cur         *entry
	due         time.Time // when this process re-mints cur
	rejected    string    // access key id the service refused (Invalidate)
	sessionName string    // learned role session name
	failures    int       // consecutive failed early refreshes
	retryAt     time.Time
	warnAt      []time.Time // pending deadline warnings

	wake    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
	started bool
}

// New resolves the settings and chooses the source. It makes no AWS call and
// reads no secret (it only lists keyring items), so it never prompts.
func New(ctx context.Context, o Options) (*Broker, error) {
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Notice == nil {
		o.Notice = io.Discard
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	allowTTY := new(atomic.Bool)
	if o.Keyring == nil {
		backend, prompter := o.KeyringBackend, o.Prompter
		o.Keyring = func(ctx context.Context, persistent bool) (keyring.Store, error) {
			return keyring.Open(ctx, keyring.Options{Backend: backend, Persistent: persistent,
				Prompt: func(text string) (string, error) {
					p := prompter
					p.NoTTY = p.NoTTY || !allowTTY.Load()
					return p.Secret(context.Background(), text, keyring.EnvFilePassphrase)
				}})
		}
	}
	set, err := resolveSettings(ctx, o)
	if err != nil {
		return nil, err
	}
	b := &Broker{o: o, set: set, key: set.cacheKey(), clk: o.Clock, log: o.Log, wake: make(chan struct{}, 1), allowTTY: allowTTY}
	if o.CacheDir == "" {
		if o.CacheDir, err = defaultCacheDir(); err != nil {
			return nil, err
		}
	}
	b.cache = fileCache{dir: o.CacheDir}
	b.lockDir = o.LockDir
	if b.lockDir == "" {
		if b.lockDir, err = lockfile.Dir(); err != nil {
			return nil, err
		}
	}
	if b.src, err = b.chooseSource(ctx); err != nil {
		return nil, err
	}
	b.log.Debug("credential broker", "profile", set.profile, "source", b.src.describe(), "role", set.roleARN,
		"region", set.region, "target", set.scope.Target)
	return b, nil
}

// Region is the resolved region.
func (b *Broker) Region() string { return b.set.region }

// Profile is the broker profile.
func (b *Broker) Profile() string { return b.set.profile }

// InSharedConfig reports whether the profile exists in the AWS config files.
func (b *Broker) InSharedConfig() bool { return b.set.inConfig }

// Prepare obtains the first credentials, allowing prompts (the terminal
// only now, before the first SSH byte), and prints the connect-time notice
// when the source has a hard deadline.
func (b *Broker) Prepare(ctx context.Context) error {
	b.allowTTY.Store(true)
	_, err := b.refresh(ctx, true)
	b.allowTTY.Store(false)
	if err != nil {
		return err
	}
	b.mu.Lock()
	e := b.cur
	now := b.clk.Now()
	if d := e.Deadline; d.Known() && !d.Renewable {
		for _, lead := range warnLeads(d.At.Sub(now)) {
			if at := d.At.Add(-lead); at.After(now) {
				b.warnAt = append(b.warnAt, at)
			}
		}
	}
	b.mu.Unlock()
	if line := connectNotice(b.set.profile, e.Deadline, b.authorisedUntil(e), now); line != "" {
		b.notify(line)
	}
	return nil
}

// authorisedUntil estimates how long the connection stays authorised when
// the source dies at its deadline: until the last credentials minted before
// it expire (for role credentials, one lifetime later).
func (b *Broker) authorisedUntil(e *entry) time.Time {
	d := e.Deadline
	if !d.Known() {
		return time.Time{}
	}
	if e.RoleARN == "" {
		return d.At
	}
	return d.At.Add(lifetimeOf(e.Credentials))
}

// Retrieve returns credentials valid now. It serves the current ones until
// this process's re-mint time, then refreshes (cache file or STS, one
// process at a time). While a refresh is under way, or after one failed and
// until its retry is due, it keeps serving the current credentials as long
// as they are valid; a source that can no longer be renewed yields a
// permanent *SourceError once they are not.
func (b *Broker) Retrieve(ctx context.Context) (aws.Credentials, error) {
	b.mu.Lock()
	cur, due, rejected, retryAt, failures := b.cur, b.due, b.rejected, b.retryAt, b.failures
	b.mu.Unlock()
	now := b.clk.Now()
	if cur != nil && rejected == "" {
		if due.IsZero() || now.Before(due) {
			return cur.Credentials.AWS(cur.Source), nil
		}
		if usable(cur.Credentials, now) {
			if failures < 0 || now.Before(retryAt) {
				return cur.Credentials.AWS(cur.Source), nil // the last refresh failed; its retry is not due
			}
			if !b.mintMu.TryLock() {
				return cur.Credentials.AWS(cur.Source), nil // another goroutine is refreshing
			}
			b.mintMu.Unlock()
		}
	}
	e, err := b.refresh(ctx, false)
	if err == nil {
		return e.Credentials.AWS(e.Source), nil
	}
	b.mu.Lock()
	cur, rejected = b.cur, b.rejected
	b.mu.Unlock()
	if cur != nil && cur.Credentials.AccessKeyID != rejected && usable(cur.Credentials, b.clk.Now()) {
		return cur.Credentials.AWS(cur.Source), nil
	}
	return aws.Credentials{}, err
}

// Invalidate is called when the service refused the current credentials.
// The next Retrieve mints for real: it does not take the same credentials
// from the cache file again.
func (b *Broker) Invalidate() {
	b.mu.Lock()
	if b.cur != nil {
		b.rejected = b.cur.Credentials.AccessKeyID
	}
	b.mu.Unlock()
	b.log.Info("credentials were refused by the service; the next call mints new ones")
}

// refresh obtains credentials (adopting the current ones when another
// goroutine refreshed meanwhile) and makes them current.
func (b *Broker) refresh(ctx context.Context, interactive bool) (*entry, error) {
	b.mintMu.Lock()
	defer b.mintMu.Unlock()
	b.mu.Lock()
	cur, due, rejected := b.cur, b.due, b.rejected
	b.mu.Unlock()
	if cur != nil && rejected == "" && (due.IsZero() || b.clk.Now().Before(due)) {
		return cur, nil
	}
	e, err := b.obtain(ctx, interactive, rejected)
	if err != nil {
		b.noteFailure(ctx, err)
		return nil, err
	}
	b.adopt(e)
	return e, nil
}

// noteFailure records a failed refresh: a permanent one stops the retries
// (the next Retrieve reports it once the current credentials are no longer
// usable); any other is retried with backoff while they still are.
func (b *Broker) noteFailure(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if isPermanent(err) {
		if b.failures >= 0 {
			b.log.Warn("credentials can no longer be renewed", "err", err)
		}
		b.failures = -1
		return
	}
	b.failures++
	var c Credentials
	if b.cur != nil {
		c = b.cur.Credentials
	}
	b.retryAt = b.clk.Now().Add(retryDelay(b.failures, c))
	b.log.Warn("credential refresh failed; keeping the current credentials while they are valid",
		"err", err, "attempt", b.failures, "retryAt", b.retryAt)
}

// adopt makes e current and schedules its re-mint with this process's jitter.
func (b *Broker) adopt(e *entry) {
	b.mu.Lock()
	b.cur = e
	b.due = refreshAt(e.Credentials, b.o.Jitter())
	if now := b.clk.Now(); !b.due.IsZero() && !b.due.After(now) {
		// A source that hands back the same credentials (exported session
		// credentials, a stored MFA session) cannot be refreshed early:
		// keep them until they expire instead of refreshing on every call.
		b.due = e.Credentials.Expires
	}
	b.rejected = ""
	b.failures = 0
	b.retryAt = time.Time{}
	b.mu.Unlock()
	b.kick()
}

// obtain returns fresh credentials: from the cache file when another process
// minted them, else minted here under the per-key lock.
func (b *Broker) obtain(ctx context.Context, interactive bool, rejected string) (*entry, error) {
	if !b.cacheable() {
		return b.mintChecked(ctx, interactive, rejected)
	}
	if e := b.readCache(rejected); e != nil {
		return e, nil
	}
	release, err := lockfile.Acquire(ctx, b.lockPath("role-"+b.key), lockfile.Options{
		Timeout: roleLockTimeout, Notice: b.waitingNotice("credentials"),
	})
	if err != nil {
		return nil, fmt.Errorf("wait for another ssmproxy process to refresh credentials: %w", err)
	}
	defer release()
	// Another process may have minted while we waited.
	if e := b.readCache(rejected); e != nil {
		return e, nil
	}
	e, err := b.mintChecked(ctx, interactive, rejected)
	if err != nil {
		return nil, err
	}
	if err := b.cache.write(e); err != nil {
		b.log.Warn("could not write the credential cache", "err", err)
	}
	return e, nil
}

// mintChecked mints and refuses to hand back the credentials the service
// just rejected.
func (b *Broker) mintChecked(ctx context.Context, interactive bool, rejected string) (*entry, error) {
	e, err := b.mint(ctx, interactive)
	if err != nil {
		return nil, err
	}
	if rejected != "" && e.Credentials.AccessKeyID == rejected {
		b.src.invalidate()
		if d := e.Deadline; d != nil && !d.Renewable {
			return nil, &SourceError{Profile: b.set.profile, What: d.What,
				Reason: "were refused by the service and cannot be renewed from here", Fix: d.Fix}
		}
		return nil, &SourceError{Profile: b.set.profile, What: "the credentials from " + b.src.describe(),
			Reason: "were refused by the service, and the source has no others",
			Fix:    "check them, or store a new key with \"ssmproxy login\""}
	}
	return e, nil
}

// readCache returns the cached entry when it is fresh and not the rejected one.
func (b *Broker) readCache(rejected string) *entry {
	e, err := b.cache.read(b.key)
	if err != nil {
		b.log.Warn("credential cache", "err", err)
		return nil
	}
	if e == nil || e.Credentials.AccessKeyID == rejected || !fresh(e.Credentials, b.clk.Now()) {
		return nil
	}
	if e.Deadline == nil {
		// The deadline is the source's, which this process knows too.
		e.Deadline = b.src.deadline()
	}
	return e
}

// cacheable reports whether minted credentials may go to the cache file:
// never a long-term key, never full-power session credentials of an MFA
// session (those live in the keyring), and nothing from the environment
// (already at hand in every process).
func (b *Broker) cacheable() bool {
	if b.set.roleARN != "" {
		return true
	}
	_, sdk := b.src.(*sdkSource)
	return sdk && b.mfaSerial() == ""
}

// waitingNotice prints the "waiting for another ssmproxy process" line once.
func (b *Broker) waitingNotice(what string) func() {
	return func() {
		b.waitNoticeOnce.Do(func() {
			b.notify(fmt.Sprintf("waiting for another ssmproxy process to refresh %s…", what))
		})
	}
}

// notify writes one user-facing line to Notice and the log.
func (b *Broker) notify(line string) {
	b.log.Warn(line)
	_, _ = fmt.Fprintf(b.o.Notice, "ssmproxy: %s\n", line)
}

func (b *Broker) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// errNotPrepared is returned by Start before Prepare succeeded.
var errNotPrepared = errors.New("broker: Prepare has not succeeded")

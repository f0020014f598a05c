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

	// Lock waits; zero means the defaults (tests shorten them).
	roleLockTimeout time.Duration
	lockNoticeAfter time.Duration

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
	finalAt     time.Time // set when due is the final mint before a hard deadline
	finalDone   time.Time // the deadline whose final mint has happened
	rej         rejection // credentials the service refused (Invalidate)
	served      handedOut // the credentials Retrieve handed out last
	prevServed  handedOut // and the different ones before them
	sessionName string    // learned role session name
	failures    int       // consecutive failed early refreshes; -1 after a permanent one
	retryAt     time.Time
	warnAt      []time.Time // pending deadline warnings

	wake    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
	started bool
}

// rejection names credentials the service refused.
type rejection struct {
	key string // access key id; "" for none
	// sure is false when other credentials, handed out just before these,
	// may have been the refused ones.
	sure bool
}

// handedOut records credentials Retrieve returned, and when it last did.
type handedOut struct {
	key string
	at  time.Time
}

// refusalWindow is how long after credentials were last handed out a call
// signed with them may still come back refused (ssm's calls time out after
// 30 s).
const refusalWindow = time.Minute

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
	b := &Broker{clk: o.Clock, log: o.Log, wake: make(chan struct{}, 1), allowTTY: new(atomic.Bool)}
	if o.Keyring == nil {
		backend, prompter := o.KeyringBackend, o.Prompter
		o.Keyring = func(ctx context.Context, persistent bool) (keyring.Store, error) {
			return keyring.Open(ctx, keyring.Options{Backend: backend, Persistent: persistent,
				Notice: b.waitingNotice("finish with the keyring"),
				Prompt: func(ctx context.Context, text string) (string, error) {
					p := prompter
					p.NoTTY = p.NoTTY || !b.allowTTY.Load()
					return p.Secret(ctx, text, keyring.EnvFilePassphrase)
				}})
		}
	}
	b.o = o
	set, err := resolveSettings(ctx, o)
	if err != nil {
		return nil, err
	}
	b.set = set
	if o.CacheDir == "" {
		if o.CacheDir, err = defaultCacheDir(); err != nil {
			return nil, err
		}
		b.o.CacheDir = o.CacheDir
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
	b.key = set.cacheKey(b.src.fingerprint())
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
// only now, before the first SSH byte, and never when Options.Prompter
// forbids it), and prints the connect-time notice when the source has a
// hard deadline.
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
	if line := connectNotice(b.set.profile, e.Deadline, authorisedUntil(e, now), now); line != "" {
		b.notify(line)
	}
	return nil
}

// Retrieve returns credentials valid now. It serves the current ones until
// this process's re-mint time; after it, while they are still usable, a
// running refresh timer (Start) re-mints in the background and Retrieve
// keeps serving them, so that no ResumeSession waits for STS. It blocks on
// a refresh (cache file or STS, one process at a time) only when the current
// credentials are unusable or were refused, or when no timer runs. A source
// that can no longer be renewed yields a permanent error once they are not
// usable.
func (b *Broker) Retrieve(ctx context.Context) (aws.Credentials, error) {
	b.mu.Lock()
	cur, due, rejected, retryAt, failures, running := b.cur, b.due, b.rej.key, b.retryAt, b.failures, b.stop != nil
	b.mu.Unlock()
	now := b.clk.Now()
	if cur != nil && rejected == "" {
		if due.IsZero() || now.Before(due) {
			return b.serve(cur), nil
		}
		if usable(cur.Credentials, now) {
			if running {
				b.kick() // the timer refreshes (or retries when due)
				return b.serve(cur), nil
			}
			if failures < 0 || now.Before(retryAt) {
				return b.serve(cur), nil // the last refresh failed; its retry is not due
			}
			if !b.mintMu.TryLock() {
				return b.serve(cur), nil // another goroutine is refreshing
			}
			b.mintMu.Unlock()
		}
	}
	e, err := b.refresh(ctx, false)
	if err == nil {
		return b.serve(e), nil
	}
	b.mu.Lock()
	cur, rejected = b.cur, b.rej.key
	b.mu.Unlock()
	if cur != nil && cur.Credentials.AccessKeyID != rejected && usable(cur.Credentials, b.clk.Now()) {
		return b.serve(cur), nil
	}
	return aws.Credentials{}, err
}

// serve records that e's credentials are handed out now, for Invalidate.
func (b *Broker) serve(e *entry) aws.Credentials {
	now := b.clk.Now()
	b.mu.Lock()
	if b.served.key != e.Credentials.AccessKeyID {
		b.prevServed = b.served
	}
	b.served = handedOut{key: e.Credentials.AccessKeyID, at: now}
	b.mu.Unlock()
	return e.Credentials.AWS(e.Source)
}

// Invalidate is called when the service refused credentials this broker
// handed out. The next Retrieve mints for real (it does not take the same
// credentials from the cache file or the source's cache again). Only the
// credentials that may have signed the refused call are affected: when the
// timer has adopted new ones that nobody has used yet, the refusal was of
// the old ones and the new ones stay.
func (b *Broker) Invalidate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == nil {
		return
	}
	cur := b.cur.Credentials.AccessKeyID
	switch {
	case b.served.key != "" && b.served.key != cur:
		b.log.Info("refused credentials were already replaced; keeping the new ones",
			"refused", MaskKeyID(b.served.key), "current", MaskKeyID(cur))
		return
	case b.served.key == cur && b.prevServed.key != "" && b.clk.Now().Sub(b.prevServed.at) < refusalWindow:
		// The previous credentials were handed out moments ago too: the
		// refused call may have been signed with either.
		b.rej = rejection{key: cur}
	default:
		b.rej = rejection{key: cur, sure: true}
	}
	b.log.Info("credentials were refused by the service; the next call mints new ones", "accessKeyId", MaskKeyID(cur))
}

// refresh obtains credentials (adopting the current ones when another
// goroutine refreshed meanwhile) and makes them current.
func (b *Broker) refresh(ctx context.Context, interactive bool) (*entry, error) {
	b.mintMu.Lock()
	defer b.mintMu.Unlock()
	b.mu.Lock()
	cur, due, rej, finalAt := b.cur, b.due, b.rej, b.finalAt
	b.mu.Unlock()
	now := b.clk.Now()
	if cur != nil && rej.key == "" && (due.IsZero() || now.Before(due)) {
		return cur, nil
	}
	var notBefore time.Time
	if !finalAt.IsZero() && !now.Before(finalAt) {
		// The final mint before the deadline: only credentials minted from
		// now on (here or by another process) extend the connection.
		notBefore = finalAt
	}
	e, err := b.obtain(ctx, interactive, rej, notBefore)
	if err != nil {
		b.noteFailure(ctx, err)
		return nil, err
	}
	if !notBefore.IsZero() && cur != nil && cur.Deadline != nil {
		b.mu.Lock()
		b.finalDone = cur.Deadline.At
		b.mu.Unlock()
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

// adopt makes e current and schedules its re-mint with this process's
// jitter, or the final mint before a hard deadline when that comes first.
func (b *Broker) adopt(e *entry) {
	now := b.clk.Now()
	b.mu.Lock()
	b.cur = e
	b.due = refreshAt(e.Credentials, b.o.Jitter())
	if !b.due.IsZero() && !b.due.After(now) {
		// A source that hands back the same credentials (exported session
		// credentials, a stored MFA session) cannot be refreshed early:
		// keep them until they expire instead of refreshing on every call.
		b.due = e.Credentials.Expires
	}
	b.finalAt = time.Time{}
	if fm := finalMintAt(e, now); !fm.IsZero() && !e.Deadline.At.Equal(b.finalDone) && (b.due.IsZero() || fm.Before(b.due)) {
		b.due, b.finalAt = fm, fm
	}
	b.rej = rejection{}
	b.failures = 0
	b.retryAt = time.Time{}
	b.mu.Unlock()
	b.kick()
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

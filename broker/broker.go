// Package broker keeps ssmproxy authorised for as long as the user's source
// of credentials lives, not as long as one set of temporary credentials
// does (docs/credentials.md section 5).
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
// The minting is a chain of small aws.CredentialsProviders (chain.go):
// source → MFA session → role mint → shared cache. The Broker on top keeps
// the current credentials, the refresh timer, the deadline notices and
// Invalidate.
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
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/keyring"
	"github.com/ssmproxy/ssmproxy/prompt"
)

// Broker mints, caches and refreshes credentials for one profile and scope.
// It is safe for concurrent use.
type Broker struct {
	set    *settings
	chain  *chain
	clk    clock.Clock
	log    *slog.Logger
	note   *notifier
	jitter func() float64

	mintMu sync.Mutex // one refresh at a time in this process

	mu        sync.Mutex
	cur       *entry
	due       time.Time // when this process re-mints cur
	finalAt   time.Time // set when due is the final mint before a hard deadline
	finalDone time.Time // the deadline whose final mint has happened
	rej       rejection // credentials the service refused (Invalidate)
	handed    handout   // the credentials Retrieve handed out
	failures  int       // consecutive failed early refreshes; -1 after a permanent one
	retryAt   time.Time
	warnAt    []time.Time // pending deadline warnings

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
	note := &notifier{w: o.Notice, log: o.Log}
	if o.Keyring == nil {
		backend, ask := o.KeyringBackend, keyring.PassphrasePrompt(o.Prompter)
		o.Keyring = func(ctx context.Context, persistent bool) (keyring.Store, error) {
			return keyring.Open(ctx, keyring.Options{Backend: backend, Persistent: persistent,
				Notice: note.waiting("finish with the keyring"), Prompt: ask})
		}
	}
	set, err := resolveSettings(ctx, o)
	if err != nil {
		return nil, err
	}
	if o.CacheDir == "" {
		if o.CacheDir, err = defaultCacheDir(); err != nil {
			return nil, err
		}
	}
	c, err := newChain(ctx, o, set, note)
	if err != nil {
		return nil, err
	}
	return &Broker{set: set, chain: c, clk: o.Clock, log: o.Log, note: note, jitter: o.Jitter,
		wake: make(chan struct{}, 1)}, nil
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
	if _, err := b.refresh(ctx); err != nil {
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
		b.note.line(line)
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
// usable. It never prompts on the terminal: ssh owns it mid-session.
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
	e, err := b.refresh(prompt.WithoutTerminal(ctx))
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

// refresh obtains credentials from the chain (adopting the current ones when
// another goroutine refreshed meanwhile) and makes them current. ctx says
// whether prompts may use the terminal.
func (b *Broker) refresh(ctx context.Context) (*entry, error) {
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
	e, err := b.chain.cache.obtain(ctx, rej, notBefore)
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
	e.Credentials.register()
	now := b.clk.Now()
	b.mu.Lock()
	b.cur = e
	b.due = refreshAt(e.Credentials, b.jitter())
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

func (b *Broker) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// errNotPrepared is returned by Start before Prepare succeeded.
var errNotPrepared = errors.New("broker: Prepare has not succeeded")

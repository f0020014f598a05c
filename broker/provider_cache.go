package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// cacheProvider is the last link (docs/credentials.md 5.3, 5.6): the cache file
// every ssmproxy process of the user reads, and the per-key lock that makes
// one of them mint at a time. A fresh entry is served as it is; otherwise the
// role link mints under the lock, after reading the file once more (another
// process may have minted while this one waited), and the result is written
// for the others.
type cacheProvider struct {
	role  *roleProvider
	file  fileCache
	key   string
	locks *locker
	// deadline is the source's current hard deadline, which a cached entry
	// takes over (nil: the source renews itself).
	deadline func() *Deadline
	// cacheable: the credentials may go to the file, which holds them in
	// plaintext. Only what ssmproxy minted itself with AssumeRole and its
	// scoped session policy (docs/credentials.md 5.3): never the source's
	// own credentials, whatever minted them (an external
	// credential_process, SSO, the instance role, the environment), which
	// carry the user's full power and are fetched from their source by
	// every process; nor the MFA session's (kept in the keyring). Long-term
	// keys are kept out by obtain too.
	cacheable bool
	dropOld   sync.Once
	// early: the mint's base is obtained before the role lock, where a
	// human may be asked (the keyring's passphrase, an MFA code) and the
	// cost is local, so that processes waiting for the lock never time out
	// behind a prompt. An SDK source resolves under the lock, so that only
	// one process calls it.
	early bool
	// lockWait bounds the wait for another process's mint: short, unless
	// the holder may be waiting for a human (an SDK role chain asks for its
	// MFA code while resolving).
	lockWait time.Duration
	clk      clock.Clock
	log      *slog.Logger
}

// Retrieve makes the link an aws.CredentialsProvider.
func (p *cacheProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	e, err := p.obtain(ctx, rejection{}, time.Time{})
	if err != nil {
		return aws.Credentials{}, err
	}
	return e.Credentials.AWS(e.Source), nil
}

// obtain returns fresh credentials: from the cache file when another process
// minted them, else minted here under the per-key lock. Entries issued
// before notBefore, and the rejected credentials, do not count as fresh.
func (p *cacheProvider) obtain(ctx context.Context, rej rejection, notBefore time.Time) (*entry, error) {
	if !p.cacheable {
		// An earlier version cached such credentials too: take its entry
		// out of the plaintext file, once per process.
		p.dropOld.Do(func() {
			if err := p.file.remove(p.key); err != nil {
				p.log.Warn("could not remove an old credential cache entry", "err", err)
			}
		})
		return p.role.mint(ctx, rej, nil)
	}
	if e := p.read(rej.key, notBefore); e != nil {
		return e, nil
	}
	var pre *based
	if p.early {
		bs, err := p.role.mfa.based(ctx)
		if err != nil {
			return nil, err
		}
		pre = &bs
	}
	release, err := p.locks.acquire(ctx, "role-"+p.key, p.lockWait, "refresh credentials")
	if err != nil {
		return nil, err
	}
	defer release()
	// Another process may have minted while we waited.
	if e := p.read(rej.key, notBefore); e != nil {
		return e, nil
	}
	e, err := p.role.mint(ctx, rej, pre)
	if err != nil {
		return nil, err
	}
	if e.Credentials.Temporary() { // never a long-term key in a plain file
		if err := p.file.write(e); err != nil {
			p.log.Warn("could not write the credential cache", "err", err)
		}
	}
	return e, nil
}

// read returns the cached entry when it is fresh, temporary, issued no
// earlier than notBefore and not the rejected one. Its hard deadline is the
// current source's.
func (p *cacheProvider) read(rejected string, notBefore time.Time) *entry {
	e, err := p.file.read(p.key)
	if err != nil {
		p.log.Warn("credential cache", "err", err)
		return nil
	}
	if e == nil || e.Credentials.AccessKeyID == rejected || !e.Credentials.Temporary() ||
		!fresh(e.Credentials, p.clk.Now()) || e.Credentials.Issued.Before(notBefore) {
		return nil
	}
	if d := p.deadline(); d != nil {
		e.Deadline = d
	}
	return e
}

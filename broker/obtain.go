package broker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/lockfile"
)

// obtain returns fresh credentials: from the cache file when another process
// minted them, else minted here under the per-key lock. Entries issued
// before notBefore do not count as fresh.
func (b *Broker) obtain(ctx context.Context, interactive bool, rej rejection, notBefore time.Time) (*entry, error) {
	if !b.cacheable() {
		return b.mintChecked(ctx, interactive, rej, nil)
	}
	if e := b.readCache(rej.key, notBefore); e != nil {
		return e, nil
	}
	// Whatever may need a human (the file keyring's passphrase, an MFA
	// code) happens before the role lock, so that processes waiting for it
	// never time out behind a prompt.
	var pre *based
	if b.promptsBeforeLock() {
		bs, err := b.base(ctx, interactive)
		if err != nil {
			return nil, err
		}
		pre = &bs
	}
	release, err := b.acquire(ctx, "role-"+b.key, b.roleLockWait(), "refresh credentials")
	if err != nil {
		return nil, err
	}
	defer release()
	// Another process may have minted while we waited.
	if e := b.readCache(rej.key, notBefore); e != nil {
		return e, nil
	}
	e, err := b.mintChecked(ctx, interactive, rej, pre)
	if err != nil {
		return nil, err
	}
	if e.Credentials.Temporary() { // never a long-term key in a plain file
		if err := b.cache.write(e); err != nil {
			b.log.Warn("could not write the credential cache", "err", err)
		}
	}
	return e, nil
}

// mintChecked mints (from pre when given) and does not hand back the
// credentials the service just refused. Without a role the credentials are
// the source's own, or its MFA session: when the source hands back the
// refused ones from its cache, it is made to read afresh (and the MFA
// session is forgotten) and asked once more; the refusal is final only when
// it still has nothing else.
func (b *Broker) mintChecked(ctx context.Context, interactive bool, rej rejection, pre *based) (*entry, error) {
	var bs based
	if pre != nil {
		bs = *pre
	} else {
		var err error
		if bs, err = b.base(ctx, interactive); err != nil {
			return nil, err
		}
	}
	e, err := b.mintFrom(ctx, bs)
	if err != nil || rej.key == "" || e.Credentials.AccessKeyID != rej.key {
		return e, err
	}
	b.log.Info("the source handed back the refused credentials; asking it for new ones", "accessKeyId", MaskKeyID(rej.key))
	b.src.invalidate()
	if bs.mfa != "" {
		b.forgetMFASession(ctx, bs.mfa)
	}
	if bs, err = b.base(ctx, interactive); err != nil {
		return nil, err
	}
	if e, err = b.mintFrom(ctx, bs); err != nil {
		return nil, err
	}
	if e.Credentials.AccessKeyID != rej.key || !rej.sure {
		return e, nil
	}
	if d := e.Deadline; d != nil && !d.Renewable {
		return nil, &SourceError{Profile: b.set.profile, What: d.What,
			Reason: "were refused by the service and cannot be renewed from here", Fix: d.Fix}
	}
	return nil, &SourceError{Profile: b.set.profile, What: "the credentials from " + b.src.describe(),
		Reason: "were refused by the service, and the source has no others",
		Fix:    "check them, or store a new key with \"ssmproxy login\""}
}

// readCache returns the cached entry when it is fresh, temporary, issued no
// earlier than notBefore and not the rejected one. Its hard deadline is the
// current source's.
func (b *Broker) readCache(rejected string, notBefore time.Time) *entry {
	e, err := b.cache.read(b.key)
	if err != nil {
		b.log.Warn("credential cache", "err", err)
		return nil
	}
	if e == nil || e.Credentials.AccessKeyID == rejected || !e.Credentials.Temporary() ||
		!fresh(e.Credentials, b.clk.Now()) || e.Credentials.Issued.Before(notBefore) {
		return nil
	}
	if d := b.src.deadline(); d != nil {
		e.Deadline = d
	}
	return e
}

// cacheable reports whether minted credentials may go to the cache file:
// never full-power session credentials of an MFA session (those live in the
// keyring), and nothing from the environment (already at hand in every
// process). Long-term keys are kept out by obtain.
func (b *Broker) cacheable() bool {
	if b.set.roleARN != "" {
		return true
	}
	_, sdk := b.src.(*sdkSource)
	return sdk && b.mfaSerial() == ""
}

// promptsBeforeLock reports whether the mint's base is obtained before the
// role lock: where a human may be asked (the keyring's passphrase, an MFA
// code) and the cost is local. An SDK source resolves under the lock, so
// that only one process calls it.
func (b *Broker) promptsBeforeLock() bool {
	switch b.src.(type) {
	case *keyringSource, *envSource:
		return true
	}
	return b.mfaSerial() != ""
}

// roleLockWait bounds the wait for another process's mint: short, unless
// the holder may be waiting for a human (an SDK role chain asks for its MFA
// code while resolving).
func (b *Broker) roleLockWait() time.Duration {
	if b.roleLockTimeout > 0 {
		return b.roleLockTimeout
	}
	if s, ok := b.src.(*sdkSource); ok && s.mayPrompt() {
		return mfaLockTimeout
	}
	return roleLockTimeout
}

// acquire takes a lock of the lock directory, telling the user once when it
// has to wait for another process to finish doing activity.
func (b *Broker) acquire(ctx context.Context, name string, timeout time.Duration, activity string) (func(), error) {
	path := b.lockPath(name)
	release, err := lockfile.Acquire(ctx, path, lockfile.Options{
		Timeout: timeout, NoticeAfter: b.lockNoticeAfter, Notice: b.waitingNotice(activity),
	})
	if err != nil {
		if errors.Is(err, lockfile.ErrTimeout) {
			return nil, fmt.Errorf("gave up waiting for another ssmproxy process to %s (%w); "+
				"if no other ssmproxy is running, some other program holds %s", activity, err, path)
		}
		return nil, fmt.Errorf("wait for another ssmproxy process to %s: %w", activity, err)
	}
	return release, nil
}

// waitingNotice prints the one "waiting for another ssmproxy process" line.
func (b *Broker) waitingNotice(activity string) func() {
	return func() {
		b.waitNoticeOnce.Do(func() {
			b.notify(fmt.Sprintf("waiting for another ssmproxy process to %s…", activity))
		})
	}
}

// lockPath is a lock file in the lock directory.
func (b *Broker) lockPath(name string) string {
	return filepath.Join(b.lockDir, name+".lock")
}

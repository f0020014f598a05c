package keyring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	kr "github.com/99designs/keyring"
)

// The file backend encrypts each item with a passphrase (JWE, PBES2). With a
// wrong passphrase the library's Get fails, but its Set succeeds and leaves
// items under two passphrases in one directory. A canary item, written with
// the first passphrase ever used and read back before any write, turns that
// into an error.
const (
	canaryKey  = "ssmproxy-canary"
	canaryData = "ssmproxy keyring canary v1"
)

// passphrase is the file backend's passphrase for one Keyring: from the
// environment, else asked once through the caller's prompt, outside the
// keyring lock (see Keyring.locked).
type passphrase struct {
	o  Options
	mu sync.Mutex
	pw string
}

// errNeedPassphrase tells Keyring.locked to release the lock, ask, and retry.
var errNeedPassphrase = errors.New("the file keyring passphrase has not been entered yet")

// libFunc is the library's passphrase hook, called under the lock: it never
// prompts. The library keeps the answer for the Keyring's lifetime.
func (p *passphrase) libFunc(string) (string, error) {
	if pw := p.o.getenv(EnvFilePassphrase); pw != "" {
		return pw, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.pw != "":
		return p.pw, nil
	case p.o.Prompt == nil:
		return "", errNoPassphrase
	}
	return "", errNeedPassphrase
}

// ask prompts for the passphrase unless it is known. Goroutines of this
// process asking at once wait for the one prompt.
func (p *passphrase) ask(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pw != "" || p.o.getenv(EnvFilePassphrase) != "" {
		return nil
	}
	if p.o.Prompt == nil {
		return errNoPassphrase
	}
	pw, err := p.o.Prompt(ctx, "ssmproxy: passphrase for the file keyring in "+p.o.FileDir)
	if err != nil {
		return fmt.Errorf("%w: %v", errNoPassphrase, err)
	}
	if pw == "" {
		return errors.New("the file keyring passphrase must not be empty")
	}
	p.pw = pw
	return nil
}

// checkCanaryLocked proves the passphrase before the first write: it reads
// the canary, or, when there is none yet, reads any existing item, and then
// writes the canary. Only the file backend needs it. The caller holds the
// lock.
func (k *Keyring) checkCanaryLocked() error {
	if k.backend != File || k.canaryChecked {
		return nil
	}
	it, err := k.ring.Get(canaryKey)
	switch {
	case err == nil:
		if !bytes.Equal(it.Data, []byte(canaryData)) {
			return fmt.Errorf("keyring (file): the canary item in %s has unexpected content; refusing to write", k.fileDir)
		}
		k.canaryChecked = true
		return nil
	case !errors.Is(err, kr.ErrKeyNotFound):
		return k.mapErr("verify passphrase with", canaryKey, err)
	}
	// No canary: an older directory, or a new one. Any existing item must
	// decrypt with this passphrase before we add ours.
	keys, err := k.ring.Keys()
	if err != nil {
		return fmt.Errorf("keyring (file): list items: %w", err)
	}
	for _, key := range keys {
		if key == canaryKey {
			continue
		}
		if _, err := k.ring.Get(key); err != nil {
			return k.mapErr("verify passphrase with", key, err)
		}
		break
	}
	if err := k.ring.Set(kr.Item{Key: canaryKey, Data: []byte(canaryData), Label: "ssmproxy canary"}); err != nil {
		return k.mapErr("write", canaryKey, err)
	}
	k.canaryChecked = true
	return nil
}

package keyring

import (
	"bytes"
	"errors"
	"fmt"

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

// filePassphrase returns the library's passphrase hook: the environment
// variable, else the caller's prompt, else an error naming the variable. The
// library calls it once and keeps the answer for the Keyring's lifetime.
func filePassphrase(o Options) kr.PromptFunc {
	return func(prompt string) (string, error) {
		if p := o.getenv(EnvFilePassphrase); p != "" {
			return p, nil
		}
		if o.Prompt == nil {
			return "", errNoPassphrase
		}
		p, err := o.Prompt("ssmproxy: passphrase for the file keyring in " + o.FileDir)
		if err != nil {
			return "", fmt.Errorf("%w: %v", errNoPassphrase, err)
		}
		if p == "" {
			return "", errors.New("the file keyring passphrase must not be empty")
		}
		return p, nil
	}
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

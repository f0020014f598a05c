// Package keyring is ssmproxy's small interface over the operating system's
// secret stores, built on github.com/99designs/keyring v1.2.2 so the library
// can be swapped later (docs/credentials.md section 4).
//
// It adds what the library lacks and ssmproxy needs:
//
//   - a backend choice that works on headless Linux (keyctl with the "user"
//     scope, then pass, then the encrypted file), with the reasons each
//     backend was skipped instead of the library's bare ErrNoAvailImpl;
//   - prompts that never touch stdin or stdout, which are the SSH stream when
//     ssmproxy runs as a ProxyCommand (see package prompt);
//   - serialised access: an in-process semaphore plus a cross-process flock
//     around every call, because the file backend tears under concurrent
//     writers and macOS keychain writes race too;
//   - a canary item that detects a wrong file passphrase before the first
//     write, which the library would otherwise accept silently.
package keyring

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	kr "github.com/99designs/keyring"

	"github.com/ssmproxy/ssmproxy/internal/lockfile"
)

// ServiceName is the one service name all of ssmproxy's items live under.
const ServiceName = "ssmproxy"

// Errors callers branch on.
var (
	// ErrNotFound: the item does not exist.
	ErrNotFound = errors.New("keyring item not found")
	// ErrWrongPassphrase: the file backend's passphrase does not decrypt the
	// items already stored.
	ErrWrongPassphrase = errors.New("wrong keyring passphrase")
)

// Item is one secret in the keyring.
type Item struct {
	Key  string
	Data []byte // the secret; never logged (see String)
	// Label is what GUI keychains show.
	Label string
	// AskBeforeRead makes the macOS Keychain ask the user before any program
	// reads the item (KeychainNotTrustApplication). Used for long-term keys.
	AskBeforeRead bool
}

// String redacts the data.
func (i Item) String() string {
	return fmt.Sprintf("keyring.Item{Key:%q Data:[%d bytes redacted]}", i.Key, len(i.Data))
}

// GoString redacts the data for %#v.
func (i Item) GoString() string { return i.String() }

// LogValue redacts the data for log/slog.
func (i Item) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key", i.Key), slog.String("data", "[redacted]"))
}

// Store is what the broker needs from a secret store. Keyring implements it
// over the OS backends; NewMemory implements it in memory for tests.
type Store interface {
	Get(ctx context.Context, key string) (Item, error)
	Set(ctx context.Context, item Item) error
	// Remove deletes the item; removing a missing item is not an error.
	Remove(ctx context.Context, key string) error
	// Keys lists the item keys without reading any secret (it never prompts).
	Keys(ctx context.Context) ([]string, error)
	// Backend names the backend in use, e.g. "keyctl" or "file".
	Backend() string
}

// Keyring is an opened OS backend, safe for concurrent use by goroutines and
// processes.
type Keyring struct {
	ring     kr.Keyring
	backend  Backend
	lockPath string
	timeout  time.Duration
	notice   func()
	noticeIn time.Duration
	fileDir  string
	pass     *passphrase // file backend only

	// canaryChecked is set once the file passphrase was verified; guarded by
	// the lock taken around every call.
	canaryChecked bool
}

// Backend names the backend in use.
func (k *Keyring) Backend() string { return string(k.backend) }

// FileDir is the directory of the file backend ("" for other backends).
func (k *Keyring) FileDir() string { return k.fileDir }

// locked runs fn under the in-process semaphore and the cross-process lock.
// The lock is never held while a human is asked for the file backend's
// passphrase: when fn needs it and it is not known yet, the lock is released,
// the passphrase obtained, and fn run again. Other processes waiting for the
// lock therefore never time out behind a prompt.
func (k *Keyring) locked(ctx context.Context, fn func() error) error {
	for asked := false; ; asked = true {
		release, err := lockfile.Acquire(ctx, k.lockPath, lockfile.Options{Timeout: k.timeout, Notice: k.notice, NoticeAfter: k.noticeIn})
		if err != nil {
			return fmt.Errorf("keyring: %w", err)
		}
		err = fn()
		release()
		if asked || k.pass == nil || !errors.Is(err, errNeedPassphrase) {
			return err
		}
		if err := k.pass.ask(ctx); err != nil {
			return err
		}
	}
}

// Get returns the item, ErrNotFound, or ErrWrongPassphrase (file backend).
func (k *Keyring) Get(ctx context.Context, key string) (Item, error) {
	var out Item
	err := k.locked(ctx, func() error {
		it, err := k.ring.Get(key)
		if err != nil {
			return k.mapErr("read", key, err)
		}
		out = Item{Key: key, Data: it.Data, Label: it.Label, AskBeforeRead: it.KeychainNotTrustApplication}
		return nil
	})
	return out, err
}

// Set stores the item, replacing any previous one. On the file backend it
// first proves the passphrase against the canary item.
func (k *Keyring) Set(ctx context.Context, item Item) error {
	if item.Key == "" || item.Key == canaryKey {
		return fmt.Errorf("keyring: invalid item key %q", item.Key)
	}
	return k.locked(ctx, func() error {
		if err := k.checkCanaryLocked(); err != nil {
			return err
		}
		label := item.Label
		if label == "" {
			label = "ssmproxy " + item.Key
		}
		err := k.ring.Set(kr.Item{
			Key: item.Key, Data: item.Data, Label: label,
			Description:                 "ssmproxy credentials",
			KeychainNotTrustApplication: item.AskBeforeRead,
			KeychainNotSynchronizable:   true,
		})
		if err != nil {
			return k.mapErr("write", item.Key, err)
		}
		return nil
	})
}

// Remove deletes the item; a missing item is not an error.
func (k *Keyring) Remove(ctx context.Context, key string) error {
	return k.locked(ctx, func() error {
		err := k.ring.Remove(key)
		if err == nil || errors.Is(err, kr.ErrKeyNotFound) || isNotExist(err) {
			return nil
		}
		return k.mapErr("remove", key, err)
	})
}

// Keys lists the item keys (never the canary).
func (k *Keyring) Keys(ctx context.Context) ([]string, error) {
	var out []string
	err := k.locked(ctx, func() error {
		keys, err := k.ring.Keys()
		if err != nil {
			return fmt.Errorf("keyring (%s): list items: %w", k.backend, err)
		}
		for _, key := range keys {
			if key != canaryKey {
				out = append(out, key)
			}
		}
		return nil
	})
	return out, err
}

// mapErr turns library errors into ours, with context and without secrets.
func (k *Keyring) mapErr(op, key string, err error) error {
	switch {
	case errors.Is(err, kr.ErrKeyNotFound), isNotExist(err):
		return ErrNotFound
	case errors.Is(err, ErrWrongPassphrase), errors.Is(err, errNoPassphrase), errors.Is(err, errNeedPassphrase):
		return err
	case isIntegrityFailure(err):
		return fmt.Errorf("keyring (%s): %s %q: %w for %s", k.backend, op, key, ErrWrongPassphrase, k.fileDir)
	}
	return fmt.Errorf("keyring (%s): %s %q: %w", k.backend, op, key, err)
}

// isIntegrityFailure recognises jose2go's answer to a wrong PBES2 passphrase
// ("aes.KeyUnwrap(): integrity check failed").
func isIntegrityFailure(err error) bool {
	return strings.Contains(err.Error(), "integrity check failed")
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

//go:build !cgo

package keyring

// builtWithCgo: the macOS Keychain backend of github.com/99designs/keyring
// needs cgo (docs/platforms.md 2).
const builtWithCgo = false

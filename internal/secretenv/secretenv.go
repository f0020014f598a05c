// Package secretenv keeps ssmproxy's own secret environment variables (the
// file keyring passphrase, the login key, a one-time MFA code) out of the
// process environment once they have been read, so that no child process
// inherits them, including children that libraries start with the full
// os.Environ() (the keyring library's "pass" backend, the SDK's default
// credential_process runner). awsconf.ScrubEnv covers the children ssmproxy
// starts itself.
package secretenv

import (
	"os"
	"sync"
)

var (
	mu    sync.Mutex
	taken = map[string]string{}
)

// Take moves the named variables from the process environment into memory.
// Variables that are unset are left alone.
func Take(names ...string) {
	mu.Lock()
	defer mu.Unlock()
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok {
			taken[n] = v
			_ = os.Unsetenv(n)
		}
	}
}

// Get returns the variable's value: the taken one, else the environment's.
func Get(name string) string {
	mu.Lock()
	v, ok := taken[name]
	mu.Unlock()
	if ok {
		return v
	}
	return os.Getenv(name)
}

// reset forgets every taken value (tests).
func reset() {
	mu.Lock()
	taken = map[string]string{}
	mu.Unlock()
}

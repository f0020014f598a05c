package keyring

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	kr "github.com/99designs/keyring"

	"github.com/ssmproxy/ssmproxy/internal/lockfile"
	"github.com/ssmproxy/ssmproxy/internal/secretenv"
	"github.com/ssmproxy/ssmproxy/prompt"
)

// Backend names one secret store.
type Backend string

// The backends, in the order automatic selection tries them
// (docs/credentials.md 4.3): the platform's own first, then the generic ones.
const (
	WinCred       Backend = "wincred"
	Keychain      Backend = "keychain"
	SecretService Backend = "secret-service"
	KWallet       Backend = "kwallet"
	KeyCtl        Backend = "keyctl"
	Pass          Backend = "pass"
	File          Backend = "file"
)

var order = []Backend{WinCred, Keychain, SecretService, KWallet, KeyCtl, Pass, File}

// Environment variables the package reads.
const (
	EnvBackend        = "SSMPROXY_KEYRING_BACKEND"
	EnvFilePassphrase = secretenv.FilePassphrase
)

// KeyCtlScope is the kernel keyring ssmproxy uses: "user" is shared by every
// process of the user (the library refuses to open keyctl without a scope,
// which is why aws-vault fails on headless boxes; "process" would not be
// shared at all).
const KeyCtlScope = "user"

// Options select and configure the backend.
type Options struct {
	// Backend forces a backend, or a comma-separated preference list. Empty
	// means $SSMPROXY_KEYRING_BACKEND, and if that is empty too, automatic.
	Backend string
	// Persistent excludes volatile backends (keyctl, which the kernel forgets
	// at reboot) from automatic selection: a long-term key must not live
	// only there unless the user chose it explicitly (docs/credentials.md 5.2).
	Persistent bool
	// ServiceName defaults to ServiceName. Tests use their own.
	ServiceName string
	// FileDir is the file backend's directory, default
	// os.UserConfigDir()/ssmproxy/keyring.
	FileDir string
	// PassDir is the pass store, default $PASSWORD_STORE_DIR or
	// ~/.password-store.
	PassDir string
	// LockPath is the cross-process lock file, default
	// lockfile.Dir()/keyring-<service>.lock.
	LockPath string
	// LockTimeout bounds the wait for another process's keyring call
	// (default 2 min: a keychain dialog may be open).
	LockTimeout time.Duration
	// Notice, if set, is called once when a call has waited LockNoticeAfter
	// (default 5 s) for another process's, so the user learns why nothing
	// happens.
	Notice          func()
	LockNoticeAfter time.Duration
	// Prompt asks the user for the file passphrase when
	// $SSMPROXY_FILE_PASSPHRASE is unset, with the context of the keyring
	// call that needs it (which says whether the terminal may be used). nil
	// means never prompt: the backend then fails with a message naming the
	// variable. Use PassphrasePrompt; never anything that reads stdin.
	Prompt func(ctx context.Context, prompt string) (string, error)
	// Getenv reads the environment (default secretenv.Get, which also sees
	// the secrets main moved out of the process environment); tests replace it.
	Getenv func(string) string
}

// PassphrasePrompt is an Options.Prompt that asks with p, naming
// $SSMPROXY_FILE_PASSPHRASE when no prompt method works.
func PassphrasePrompt(p prompt.Prompter) func(ctx context.Context, text string) (string, error) {
	return func(ctx context.Context, text string) (string, error) { return p.Secret(ctx, text, EnvFilePassphrase) }
}

func (o Options) getenv(k string) string {
	if o.Getenv != nil {
		return o.Getenv(k)
	}
	return secretenv.Get(k)
}

// ParseBackends parses a comma-separated backend list, refusing unknown names.
func ParseBackends(s string) ([]Backend, error) {
	var out []Backend
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		b := Backend(f)
		known := false
		for _, k := range order {
			known = known || k == b
		}
		if !known {
			return nil, fmt.Errorf("unknown keyring backend %q (known: %s)", f, joinBackends(order))
		}
		out = append(out, b)
	}
	return out, nil
}

func joinBackends(bs []Backend) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = string(b)
	}
	return strings.Join(s, ", ")
}

// Open picks and opens a backend. With an explicit choice it opens exactly
// the listed backends in order; otherwise it tries every backend available
// on this platform in the preference order, skipping those that cannot work
// here, and on failure reports why each was skipped.
func Open(ctx context.Context, o Options) (*Keyring, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if o.ServiceName == "" {
		o.ServiceName = ServiceName
	}
	choice := o.Backend
	if choice == "" {
		choice = o.getenv(EnvBackend)
	}
	candidates := order
	explicit := choice != ""
	if explicit {
		var err error
		if candidates, err = ParseBackends(choice); err != nil {
			return nil, fmt.Errorf("keyring: %w (from --keyring-backend or %s)", err, EnvBackend)
		}
	}
	if o.FileDir == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil, fmt.Errorf("keyring: locate the file backend directory: %w", err)
		}
		o.FileDir = filepath.Join(dir, "ssmproxy", "keyring")
	}
	if o.LockPath == "" {
		dir, err := lockfile.Dir()
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		o.LockPath = filepath.Join(dir, "keyring-"+o.ServiceName+".lock")
	}
	available := map[Backend]bool{}
	for _, b := range kr.AvailableBackends() {
		available[Backend(b)] = true
	}
	var reasons []string
	for _, b := range candidates {
		if !available[b] {
			reasons = append(reasons, unavailable(b, runtime.GOOS, builtWithCgo))
			continue
		}
		if !explicit && o.Persistent && b == KeyCtl {
			reasons = append(reasons, "keyctl: volatile (lost at reboot); choose it explicitly to keep long-term keys there")
			continue
		}
		if why := unusable(b, o); why != "" {
			reasons = append(reasons, string(b)+": "+why)
			continue
		}
		pass := &passphrase{o: o}
		ring, err := kr.Open(libConfig(b, o, pass))
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", b, err))
			continue
		}
		k := &Keyring{ring: ring, backend: b, lockPath: o.LockPath, timeout: o.LockTimeout, notice: o.Notice, noticeIn: o.LockNoticeAfter}
		if b == File {
			k.fileDir, k.pass = o.FileDir, pass
		}
		return k, nil
	}
	return nil, fmt.Errorf("keyring: no usable backend (%s); set %s to one of: %s",
		strings.Join(reasons, "; "), EnvBackend, joinBackends(order))
}

// unusable explains why a backend the library offers cannot work here, or
// returns "". The library's own openers succeed too eagerly: pass opens
// without an initialised store, and the D-Bus backends would autolaunch a
// session bus (leaving a dbus-daemon behind, keyring #103).
func unusable(b Backend, o Options) string {
	switch b {
	case SecretService, KWallet:
		if o.getenv("DBUS_SESSION_BUS_ADDRESS") == "" {
			return "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset)"
		}
	case Pass:
		if _, err := exec.LookPath("pass"); err != nil {
			return "the pass program is not installed"
		}
		if _, err := os.Stat(filepath.Join(passDir(o), ".gpg-id")); err != nil {
			return "the password store is not initialised (run \"pass init GPG-ID\")"
		}
	}
	return ""
}

func passDir(o Options) string {
	if o.PassDir != "" {
		return o.PassDir
	}
	if d := o.getenv("PASSWORD_STORE_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".password-store")
}

// libConfig is the library configuration for one backend. Every prompt hook
// is ours: the library's TerminalPrompt reads stdin and writes stdout, which
// in a ProxyCommand are the SSH stream.
func libConfig(b Backend, o Options, pass *passphrase) kr.Config {
	return kr.Config{
		AllowedBackends:          []kr.BackendType{kr.BackendType(b)},
		ServiceName:              o.ServiceName,
		KeychainName:             "login",
		KeychainTrustApplication: false,
		KeychainSynchronizable:   false,
		KeychainPasswordFunc:     noPrompt("the macOS keychain password"),
		FilePasswordFunc:         pass.libFunc,
		FileDir:                  o.FileDir,
		KeyCtlScope:              KeyCtlScope,
		KeyCtlPerm:               keyctlPerm(),
		LibSecretCollectionName:  "login",
		KWalletAppID:             o.ServiceName,
		KWalletFolder:            o.ServiceName,
		PassDir:                  passDir(o),
		PassPrefix:               o.ServiceName,
		WinCredPrefix:            o.ServiceName,
	}
}

func noPrompt(what string) kr.PromptFunc {
	return func(string) (string, error) {
		return "", fmt.Errorf("ssmproxy does not prompt for %s", what)
	}
}

// errNoPassphrase is returned when the file backend needs a passphrase and
// no way to obtain one exists.
var errNoPassphrase = errors.New("the file keyring needs a passphrase: set " + EnvFilePassphrase +
	" (or run from a terminal, or set SSH_ASKPASS)")

// unavailable says why backend b cannot be used here. The release builds
// for macOS are made without cgo (make dist cross-compiles), and the
// Keychain backend needs it: they fall back to pass or the file backend,
// and say how to get the Keychain (docs/platforms.md 2).
func unavailable(b Backend, goos string, cgo bool) string {
	if b == Keychain && goos == "darwin" && !cgo {
		return "keychain: this build has no Keychain support (built without cgo, as the release archives are); " +
			"build on the Mac with \"go install\" (cgo on) to use it, or use the file backend"
	}
	return fmt.Sprintf("%s: not available on this platform or session", b)
}

package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// The cache file holds minted scoped credentials for every ssmproxy process
// of the user (docs/credentials.md 5.3): a plain file, because every ProxyCommand
// start reads it, keychains can pop dialogs, and the keyring's file backend
// tears under concurrency and costs a PBKDF2 run per read. The credentials in
// it are short-lived and least-privilege. Long-term keys and full-power MFA
// sessions never go here; they live in the keyring.

const cacheVersion = 1

// entry is one cache file.
type entry struct {
	Version         int    `json:"version"`
	Key             string `json:"key"`
	Profile         string `json:"profile"`
	RoleARN         string `json:"role_arn,omitempty"`
	Region          string `json:"region"`
	Target          string `json:"target,omitempty"`
	Document        string `json:"document,omitempty"`
	Lookup          bool   `json:"lookup,omitempty"` // the read-only lookup scope (LookupPolicy)
	PolicyHash      string `json:"policy_hash,omitempty"`
	RoleSessionName string `json:"role_session_name,omitempty"`
	// SourceID fingerprints the source key the session name was derived
	// from (a hash of its access key id), so the next minter, maybe another
	// process, can reuse the name without asking STS again.
	SourceID string `json:"source_id,omitempty"`
	// Source describes where the credentials came from, for status output.
	Source string `json:"source"`
	// Credentials carry the REAL expiration STS returned, never an
	// expiry adjusted by a cache window. Only temporary credentials are
	// ever cached.
	Credentials Credentials `json:"credentials"`
	// Chained is set when the role session was assumed with temporary
	// credentials (role chaining); ParentExpires is then their expiry, when
	// known. A chained session is not assumed to outlive its parent.
	Chained       bool      `json:"chained,omitempty"`
	ParentExpires time.Time `json:"parent_expires,omitzero"`
	// Deadline is the source's hard deadline (docs/credentials.md 5.8), nil when
	// the source renews itself.
	Deadline *Deadline `json:"hard_deadline,omitempty"`
}

// String never shows the secrets.
func (e *entry) String() string {
	return fmt.Sprintf("entry{profile:%q role:%q target:%q creds:%s}", e.Profile, e.RoleARN, e.Target, e.Credentials)
}

// LogValue redacts for log/slog.
func (e *entry) LogValue() slog.Value { return slog.StringValue(e.String()) }

// Deadline is the moment after which nothing can be minted without a human.
type Deadline struct {
	At        time.Time `json:"at,omitzero"` // zero: unknown, may be any time
	What      string    `json:"what"`        // e.g. "the environment's session credentials"
	Fix       string    `json:"fix"`         // the command or action that extends it
	Renewable bool      `json:"renewable,omitempty"`
}

// Known reports whether the deadline's instant is known.
func (d *Deadline) Known() bool { return d != nil && !d.At.IsZero() }

type fileCache struct{ dir string }

// defaultCacheDir is os.UserCacheDir()/ssmproxy/creds.
func defaultCacheDir() (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("locate cache directory: %w", err)
	}
	return filepath.Join(c, "ssmproxy", "creds"), nil
}

func (c fileCache) path(key string) string { return filepath.Join(c.dir, key+".json") }

// maxEntrySize bounds what read accepts.
const maxEntrySize = 1 << 20

// read returns the entry for key, or nil when there is none or it fails
// validation (a miss, never an error the caller must handle). The file is
// opened without following a symlink and checked through its descriptor, so
// nothing can be swapped in between the check and the read; the directory
// must be the user's own and closed to others.
func (c fileCache) read(key string) (*entry, error) {
	if err := c.checkDir(); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	p := c.path(key)
	f, err := openNoFollow(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("credential cache %s cannot be opened (%v); ignoring it", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("credential cache %s: %w", p, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("credential cache %s is not a regular file; ignoring it", p)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credential cache %s has mode %v, readable by others; ignoring it", p, st.Mode().Perm())
	}
	if !ownedByMe(st) {
		return nil, fmt.Errorf("credential cache %s belongs to another user; ignoring it", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxEntrySize+1))
	if err != nil {
		return nil, fmt.Errorf("credential cache %s: %w", p, err)
	}
	if len(b) > maxEntrySize {
		return nil, fmt.Errorf("credential cache %s is too large; ignoring it", p)
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("credential cache %s is not valid JSON; ignoring it", p)
	}
	if e.Version != cacheVersion || e.Key != key || !e.Credentials.valid() {
		return nil, fmt.Errorf("credential cache %s does not match its key or version; ignoring it", p)
	}
	return &e, nil
}

// checkDir refuses a cache directory that is a symlink, belongs to another
// user, or is open to others: whoever controls it could swap the files.
func (c fileCache) checkDir() error {
	st, err := os.Lstat(c.dir)
	if err != nil {
		return err
	}
	switch {
	case !st.IsDir():
		return fmt.Errorf("credential cache directory %s is not a directory (a symlink?); not using it", c.dir)
	case !ownedByMe(st):
		return fmt.Errorf("credential cache directory %s belongs to another user; not using it", c.dir)
	case runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("credential cache directory %s has mode %v, open to others; not using it", c.dir, st.Mode().Perm())
	}
	return nil
}

// write replaces the entry atomically: a temp file in the same directory,
// mode 0600, written and fsynced, then renamed over the old one. Readers see
// the old file or the new one, never a torn mix.
func (c fileCache) write(e *entry) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("create credential cache directory: %w", err)
	}
	if st, err := os.Lstat(c.dir); err == nil && st.IsDir() && ownedByMe(st) {
		_ = os.Chmod(c.dir, 0o700)
	}
	if err := c.checkDir(); err != nil {
		return err
	}
	if !e.Credentials.Temporary() {
		return errors.New("credential cache: refusing to write long-term credentials")
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("encode credential cache entry: %w", err)
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-"+e.Key+"-*")
	if err != nil {
		return fmt.Errorf("credential cache: %w", err)
	}
	name := tmp.Name()
	defer os.Remove(name) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("credential cache: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("credential cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("credential cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("credential cache: %w", err)
	}
	if err := os.Rename(name, c.path(e.Key)); err != nil {
		return fmt.Errorf("credential cache: %w", err)
	}
	syncDir(c.dir)
	return nil
}

// list returns every valid entry.
func (c fileCache) list() []*entry {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return nil
	}
	var out []*entry
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue
		}
		if e, err := c.read(strings.TrimSuffix(name, ".json")); err == nil && e != nil {
			out = append(out, e)
		}
	}
	return out
}

// remove deletes the entry for key, if any, from a directory that passes
// checkDir.
func (c fileCache) remove(key string) error {
	if err := c.checkDir(); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := os.Remove(c.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove credential cache entry: %w", err)
	}
	return nil
}

// removeProfile deletes every entry of the profile.
func (c fileCache) removeProfile(profile string) (int, error) {
	n := 0
	for _, e := range c.list() {
		if e.Profile != profile {
			continue
		}
		if err := os.Remove(c.path(e.Key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("remove credential cache entry: %w", err)
		}
		n++
	}
	return n, nil
}

// syncDir makes a rename durable; failures only cost durability.
func syncDir(dir string) {
	if runtime.GOOS == "windows" {
		return
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

package target

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/internal/lockfile"
)

// The lookup cache (docs/architecture.md section 6): an scp or rsync runs
// ssh, so ssmproxy, several times in a row for one host name, and each run
// would otherwise repeat the describe calls. Answers are kept for TTL per
// profile and region, in one 0600 file per pair in a 0700 directory of the
// user's own, next to the credential cache (docs/credentials.md 5.3) and
// with its checks. The file holds ids, names and ping states, no secret.
// Writers replace the file atomically; two racing writers can lose one
// entry, which costs one lookup, so there is no lock.

// DefaultTTL is how long an answer is reused.
const DefaultTTL = 30 * time.Second

const (
	cacheVersion   = 1
	maxCacheFile   = 1 << 20 // read bound
	maxCacheQuery  = 64      // entries kept per file
	maxCachedCands = 200     // candidates kept per entry
)

// Cache is the lookup cache of one profile and region. A nil *Cache
// caches nothing.
type Cache struct {
	Dir             string // default DefaultCacheDir()
	Profile, Region string
	TTL             time.Duration // default DefaultTTL
	Clock           clock.Clock
	Log             *slog.Logger
}

// DefaultCacheDir is os.UserCacheDir()/ssmproxy/targets.
func DefaultCacheDir() (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("locate cache directory: %w", err)
	}
	return filepath.Join(c, "ssmproxy", "targets"), nil
}

type cacheFile struct {
	Version int                   `json:"version"`
	Profile string                `json:"profile"`
	Region  string                `json:"region"`
	Entries map[string]cacheEntry `json:"entries"`
}

type cacheEntry struct {
	At         time.Time   `json:"at"`
	Candidates []Candidate `json:"candidates"`
}

func (c *Cache) path() string {
	h := sha256.Sum256([]byte(c.Profile + "\x00" + c.Region))
	return filepath.Join(c.Dir, hex.EncodeToString(h[:16])+".json")
}

func (c *Cache) ttl() time.Duration {
	if c.TTL > 0 {
		return c.TTL
	}
	return DefaultTTL
}

func (c *Cache) debug(msg string, args ...any) {
	if c.Log != nil {
		c.Log.Debug(msg, args...)
	}
}

// get returns the fresh answer for q, if any. Every problem is a miss.
func (c *Cache) get(q Query) ([]Candidate, bool) {
	if c == nil {
		return nil, false
	}
	f, err := c.read()
	if err != nil {
		c.debug("target cache not used", "err", err)
		return nil, false
	}
	e, ok := f.Entries[q.cacheKey()]
	if !ok {
		return nil, false
	}
	age := clock.Or(c.Clock).Now().Sub(e.At)
	if age < 0 || age >= c.ttl() {
		return nil, false
	}
	c.debug("target answered from the cache", "target", q.Raw, "age", age)
	return e.Candidates, true
}

// put records an answer (Resolve calls it for answers only, not for no,
// several or an offline match). Failures only cost the cache.
func (c *Cache) put(q Query, cands []Candidate) {
	if c == nil || len(cands) == 0 || len(cands) > maxCachedCands {
		return
	}
	now := clock.Or(c.Clock).Now()
	f, err := c.read()
	if err != nil {
		f = &cacheFile{}
	}
	f.Version, f.Profile, f.Region = cacheVersion, c.Profile, c.Region
	if f.Entries == nil {
		f.Entries = map[string]cacheEntry{}
	}
	for k, e := range f.Entries {
		if now.Sub(e.At) >= c.ttl() || now.Before(e.At) {
			delete(f.Entries, k)
		}
	}
	if len(f.Entries) >= maxCacheQuery {
		f.Entries = map[string]cacheEntry{}
	}
	f.Entries[q.cacheKey()] = cacheEntry{At: now, Candidates: cands}
	if err := c.write(f); err != nil {
		c.debug("target cache not written", "err", err)
	}
}

// read loads the file after the credential cache's checks: a directory of
// the user's own that nobody else may write, a regular 0600 file that is
// not a symbolic link, of bounded size.
func (c *Cache) read() (*cacheFile, error) {
	if err := lockfile.CheckDir(c.Dir); err != nil {
		return nil, err
	}
	p := c.path()
	st, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || (runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0) {
		return nil, fmt.Errorf("target cache %s is not a private regular file; ignoring it", p)
	}
	fh, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if st2, err := fh.Stat(); err != nil || !os.SameFile(st, st2) {
		return nil, fmt.Errorf("target cache %s changed while opened; ignoring it", p)
	}
	b, err := io.ReadAll(io.LimitReader(fh, maxCacheFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCacheFile {
		return nil, fmt.Errorf("target cache %s is too large; ignoring it", p)
	}
	var f cacheFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("target cache %s is not valid JSON; ignoring it", p)
	}
	if f.Version != cacheVersion || f.Profile != c.Profile || f.Region != c.Region {
		return nil, fmt.Errorf("target cache %s belongs to another version, profile or region; ignoring it", p)
	}
	return &f, nil
}

// write replaces the file atomically (temp file 0600, rename).
func (c *Cache) write(f *cacheFile) error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	if err := lockfile.CheckDir(c.Dir); err != nil {
		return err
	}
	if st, err := os.Stat(c.Dir); err == nil && runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return errors.New("target cache directory is open to others; not writing")
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(c.Dir, ".tmp-target-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, c.path()); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

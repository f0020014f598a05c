package target

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
)

// Known lists the instance ids and names in the lookup caches under dir,
// whatever their age, for shell completion (docs/cli.md 2): completing a
// word must not call AWS, ask for an MFA code or wait on the network, so
// it offers what earlier lookups saw. Files that fail the cache's checks
// (not private, too large, not ours) are skipped.
func Known(dir string) []string {
	if dir == "" {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	seen := map[string]bool{}
	for _, p := range files {
		st, err := os.Lstat(p)
		if err != nil || !st.Mode().IsRegular() || (runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0) {
			continue
		}
		fh, err := os.Open(p)
		if err != nil {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(fh, maxCacheFile+1))
		fh.Close()
		var f cacheFile
		if err != nil || len(b) > maxCacheFile || json.Unmarshal(b, &f) != nil || f.Version != cacheVersion {
			continue
		}
		for _, e := range f.Entries {
			for _, c := range e.Candidates {
				if IsID(c.ID) {
					seen[c.ID] = true
				}
				if c.Name != "" && plain(c.Name) == nil {
					seen[c.Name] = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

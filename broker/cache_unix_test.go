//go:build unix

package broker

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestCacheDirChecks: a cache directory open to others, owned by another
// user, or replaced by a symlink is not used, neither read nor written; a
// symlinked or special cache file is a miss.
func TestCacheDirChecks(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "creds")
	c := fileCache{dir: dir}
	if err := c.write(testEntry("k", "ASIAONE")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if e, err := c.read("k"); e != nil || err == nil {
		t.Fatal("read from a cache directory open to others")
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A symlink in place of the directory.
	link := fileCache{dir: filepath.Join(base, "link")}
	if err := os.Symlink(dir, link.dir); err != nil {
		t.Fatal(err)
	}
	if e, err := link.read("k"); e != nil || err == nil {
		t.Fatal("read through a symlinked cache directory")
	}
	if err := link.write(testEntry("k", "ASIATWO")); err == nil {
		t.Fatal("wrote through a symlinked cache directory")
	}
	// A FIFO is refused without blocking.
	if err := syscall.Mkfifo(c.path("fifo"), 0o600); err == nil {
		done := make(chan struct{})
		go func() { defer close(done); _, _ = c.read("fifo") }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("reading a FIFO in the cache blocked")
		}
	}
	// Another user's directory (needs root to create one).
	if os.Getuid() == 0 {
		other := fileCache{dir: filepath.Join(base, "other")}
		if err := other.write(testEntry("k", "ASIATHREE")); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other.dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if e, err := other.read("k"); e != nil || err == nil {
			t.Fatal("read from another user's cache directory")
		}
		if err := other.write(testEntry("k", "ASIAFOUR")); err == nil {
			t.Fatal("wrote into another user's cache directory")
		}
	}
}

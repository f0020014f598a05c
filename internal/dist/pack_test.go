package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// build writes fake binaries for two platforms and returns their dirs.
func build(t *testing.T, content string) []string {
	t.Helper()
	root := t.TempDir()
	var dirs []string
	for _, p := range []struct{ dir, bin string }{{"linux_arm64", "ssmproxy"}, {"windows_amd64", "ssmproxy.exe"}} {
		d := filepath.Join(root, p.dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, p.bin), []byte(content+p.dir), 0o700); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	return dirs
}

// TestPackReproducible: the same inputs give the same bytes, whatever the
// files' own times and modes and the wall clock; another binary gives
// other bytes; SHA256SUMS matches the archives; the archives hold what they
// should with the commit's time.
func TestPackReproducible(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(doc, []byte("# readme\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	pack := func(content string) (string, map[string][]byte) {
		dirs := build(t, content)
		out := t.TempDir()
		names, err := packAll(out, "v1.2.3", when, dirs, []string{doc})
		if err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{}
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(out, n))
			if err != nil {
				t.Fatal(err)
			}
			files[n] = b
		}
		return out, files
	}
	_, a := pack("binary-")
	// Touch the inputs differently: other mtimes, other modes.
	time.Sleep(10 * time.Millisecond)
	_ = os.Chtimes(doc, time.Now(), time.Now())
	_ = os.Chmod(doc, 0o644)
	_, b := pack("binary-")
	if len(a) != 3 {
		t.Fatalf("wrote %d files, want 2 archives and SHA256SUMS", len(a))
	}
	for n := range a {
		if !bytes.Equal(a[n], b[n]) {
			t.Errorf("%s differs between two packs of the same inputs", n)
		}
	}
	_, c := pack("other-")
	if bytes.Equal(a["SHA256SUMS"], c["SHA256SUMS"]) {
		t.Error("another binary gives the same SHA256SUMS")
	}
	for _, line := range strings.Split(strings.TrimSpace(string(a["SHA256SUMS"])), "\n") {
		sum, name, _ := strings.Cut(line, "  ")
		h := sha256.Sum256(a[name])
		if hex.EncodeToString(h[:]) != sum {
			t.Errorf("SHA256SUMS line %q does not match %s", line, name)
		}
	}
	tgz := a["ssmproxy_v1.2.3_linux_arm64.tar.gz"]
	gz, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	if gz.Name != "" || !gz.ModTime.IsZero() {
		t.Errorf("gzip header carries name %q, time %v", gz.Name, gz.ModTime)
	}
	tr := tar.NewReader(gz)
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(when) || h.Uid != 0 || h.Uname != "" {
			t.Errorf("%s: time %v uid %d uname %q", h.Name, h.ModTime, h.Uid, h.Uname)
		}
		got = append(got, h.Name+":"+os.FileMode(h.Mode).String())
	}
	if want := "ssmproxy_v1.2.3_linux_arm64/README.md:-rw-r--r-- ssmproxy_v1.2.3_linux_arm64/ssmproxy:-rwxr-xr-x"; strings.Join(got, " ") != want {
		t.Errorf("tar entries %q, want %q", got, want)
	}
	z := a["ssmproxy_v1.2.3_windows_amd64.zip"]
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	if len(zr.File) != 2 || zr.File[1].Name != "ssmproxy_v1.2.3_windows_amd64/ssmproxy.exe" || !zr.File[1].Modified.Equal(when) {
		t.Errorf("zip entries: %v", zr.File)
	}
}

func TestPackRefusesBadDir(t *testing.T) {
	if _, err := packAll(t.TempDir(), "v", time.Unix(1, 0), []string{t.TempDir() + "/nounderscore"}, nil); err == nil {
		t.Error("a build directory not named OS_ARCH was accepted")
	}
}

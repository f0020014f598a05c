package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// entry is one file of an archive.
type entry struct {
	name string // path inside the archive
	mode int64
	data []byte
}

// packAll writes one archive per build directory and SHA256SUMS into out,
// and returns the names written, sorted.
func packAll(out, version string, mtime time.Time, buildDirs, docs []string) ([]string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var names []string
	sums := map[string]string{}
	for _, dir := range buildDirs {
		osArch := filepath.Base(dir)
		goos, _, ok := strings.Cut(osArch, "_")
		if !ok {
			return nil, fmt.Errorf("%s: build directory must be named OS_ARCH", dir)
		}
		bin := "ssmproxy"
		if goos == "windows" {
			bin += ".exe"
		}
		top := "ssmproxy_" + version + "_" + osArch
		var files []entry
		b, err := os.ReadFile(filepath.Join(dir, bin))
		if err != nil {
			return nil, err
		}
		files = append(files, entry{top + "/" + bin, 0o755, b})
		for _, d := range docs {
			b, err := os.ReadFile(d)
			if err != nil {
				return nil, err
			}
			files = append(files, entry{top + "/" + filepath.Base(d), 0o644, b})
		}
		var data []byte
		name := top + ".tar.gz"
		if goos == "windows" {
			name = top + ".zip"
			data, err = zipBytes(files, mtime)
		} else {
			data, err = tarGzBytes(files, mtime)
		}
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			return nil, err
		}
		h := sha256.Sum256(data)
		sums[name] = hex.EncodeToString(h[:])
		names = append(names, name)
	}
	sort.Strings(names)
	var sb strings.Builder
	for _, n := range names {
		fmt.Fprintf(&sb, "%s  %s\n", sums[n], n)
	}
	if err := os.WriteFile(filepath.Join(out, "SHA256SUMS"), []byte(sb.String()), 0o644); err != nil {
		return nil, err
	}
	return append(names, "SHA256SUMS"), nil
}

func sorted(files []entry) []entry {
	s := append([]entry(nil), files...)
	sort.Slice(s, func(i, j int) bool { return s[i].name < s[j].name })
	return s
}

// tarGzBytes: PAX-free ustar headers with fixed owner, mode and time, in
// name order; gzip without name or time (Go's writer records OS 255).
func tarGzBytes(files []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(gz)
	for _, f := range sorted(files) {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: mtime,
			Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// zipBytes: deflated entries in name order, with the commit time and Unix
// modes recorded, nothing from the build machine.
func zipBytes(files []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range sorted(files) {
		hdr := &zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: mtime}
		hdr.SetMode(os.FileMode(f.mode))
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(w, bytes.NewReader(f.data)); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

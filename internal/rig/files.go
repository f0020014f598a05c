package rig

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
)

// RandomFile writes size random bytes to a new file at p and returns p and
// the hex SHA-256 of what it wrote: the payload the demo and the soak move
// and check end to end.
func RandomFile(p string, size int64) (string, string, error) {
	f, err := os.Create(p)
	if err != nil {
		return "", "", err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		f.Close()
		return "", "", err
	}
	return p, hex.EncodeToString(h.Sum(nil)), f.Close()
}

// SHA256File returns the hex SHA-256 of the file at p.
func SHA256File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

package sshconfig

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotOurs: the output file exists and ssmproxy did not write it.
var ErrNotOurs = errors.New("exists and was not written by ssmproxy ssh-config (no marker line); not overwriting it")

// Write replaces path with text atomically (a temporary file in the same
// directory, fsync, rename), mode 0644 like ~/.ssh/config's includes. It
// refuses a file that lacks the marker and reports false when the file
// already holds text.
func Write(path, text string) (changed bool, err error) {
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if !bytes.HasPrefix(old, []byte(Marker+"\n")) {
			return false, fmt.Errorf("%s %w", path, ErrNotOurs)
		}
		if string(old) == text {
			return false, nil
		}
	case !errors.Is(err, os.ErrNotExist):
		return false, err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".ssmproxy-ssh-config-*")
	if err != nil {
		return false, err
	}
	name := tmp.Name()
	defer os.Remove(name) // a no-op once renamed
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(name, path); err != nil {
		return false, err
	}
	return true, nil
}

// Included reports whether the ssh config at config includes file before
// its first Host or Match line (an Include inside a Host block applies to
// that block only), following ssh's rules for Include paths: ~ is home,
// relative paths are under ~/.ssh, globs expand. A missing config
// includes nothing.
func Included(config, home, file string) (bool, error) {
	f, err := os.Open(config)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	want, err := filepath.Abs(file)
	if err != nil {
		return false, err
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.Replace(strings.TrimSpace(sc.Text()), "=", " ", 1))
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch strings.ToLower(fields[0]) {
		case "host", "match":
			return false, nil
		case "include":
			for _, p := range fields[1:] {
				if strings.HasPrefix(p, "~/") {
					p = filepath.Join(home, p[2:])
				} else if !filepath.IsAbs(p) {
					p = filepath.Join(home, ".ssh", p)
				}
				if ok, _ := filepath.Match(p, want); ok || p == want {
					return true, nil
				}
			}
		}
	}
	return false, sc.Err()
}

// IncludeLine is the line to add to ~/.ssh/config for file: ~/ when it
// lives under home.
func IncludeLine(home, file string) string {
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	if rel, err := filepath.Rel(home, abs); err == nil && !strings.HasPrefix(rel, "..") {
		return "Include ~/" + filepath.ToSlash(rel)
	}
	return "Include " + abs
}

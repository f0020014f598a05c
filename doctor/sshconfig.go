package doctor

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ProxyCommandFor finds the ProxyCommand ssh would use for host, reading
// an ssh_config file as ssh does for this one keyword: Host blocks in
// order, patterns with * and ? and negation with !, the first value
// obtained wins, Include followed (relative paths from ~/.ssh, globs, at
// most 8 deep). A Match block is not evaluated: its lines are skipped and
// reported in notes. It returns the command ("" when none applies) and
// the Host line that gave it.
func ProxyCommandFor(file, sshDir, host string) (cmd, hostLine string, notes []string, err error) {
	w := walker{sshDir: sshDir, host: host}
	err = w.read(file, 0, true)
	return w.cmd, w.hostLine, w.notes, err
}

type walker struct {
	sshDir, host  string
	cmd, hostLine string
	notes         []string
}

func (w *walker) read(file string, depth int, top bool) error {
	if depth > 8 {
		return fmt.Errorf("%s: Include nested more than 8 deep", file)
	}
	f, err := os.Open(file)
	if err != nil {
		if !top && os.IsNotExist(err) {
			return nil
		}
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	active, line := true, ""
	for sc.Scan() {
		fields := splitConfigLine(sc.Text())
		if len(fields) == 0 {
			continue
		}
		key := strings.ToLower(fields[0])
		switch key {
		case "host":
			active, line = hostMatches(fields[1:], w.host), strings.TrimSpace(sc.Text())
		case "match":
			active = false
			w.notes = append(w.notes, fmt.Sprintf("%s: a Match block is not evaluated", file))
		case "include":
			if !active {
				continue
			}
			for _, pat := range fields[1:] {
				if strings.HasPrefix(pat, "~/") {
					pat = filepath.Join(filepath.Dir(w.sshDir), pat[2:])
				} else if !filepath.IsAbs(pat) {
					pat = filepath.Join(w.sshDir, pat)
				}
				matches, _ := filepath.Glob(pat)
				for _, m := range matches {
					if err := w.read(m, depth+1, false); err != nil {
						return err
					}
				}
			}
		case "proxycommand":
			if active && w.cmd == "" {
				w.cmd = strings.Join(fields[1:], " ")
				w.hostLine = line
				if line == "" {
					w.hostLine = "(before any Host line)"
				}
			}
		}
	}
	return sc.Err()
}

// splitConfigLine splits "Key value..." or "Key=value", dropping comments.
func splitConfigLine(l string) []string {
	l = strings.TrimSpace(l)
	if l == "" || strings.HasPrefix(l, "#") {
		return nil
	}
	if i := strings.IndexAny(l, " \t="); i > 0 && l[i] == '=' {
		l = l[:i] + " " + l[i+1:]
	}
	return strings.Fields(l)
}

// hostMatches: some positive pattern matches and no negated one does.
func hostMatches(patterns []string, host string) bool {
	ok := false
	for _, p := range patterns {
		for _, q := range strings.Split(p, ",") {
			neg := strings.HasPrefix(q, "!")
			q = strings.TrimPrefix(q, "!")
			if wildcard(strings.ToLower(q), strings.ToLower(host)) {
				if neg {
					return false
				}
				ok = true
			}
		}
	}
	return ok
}

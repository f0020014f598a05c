// Package redact is the one choke point for text that comes from outside
// the process (SDK errors that embed a child's output, service messages,
// channel_closed text, HTTP bodies, keyring and child-process errors) on its
// way to stderr, a log or an error message (docs/credentials.md 7.1).
//
// String does three things, in this order:
//
//  1. removes every secret registered with Register: the broker registers
//     each secret access key and session token it handles (source, MFA
//     session, minted), so they are removed whatever shape they have;
//  2. removes anything shaped like a secret it was never told about: a
//     40-character run of base64 with both cases (an AWS secret access key),
//     a run of 100 or more base64 characters (a session token), and the
//     values of fields named like a secret (SecretAccessKey, SessionToken,
//     aws_secret_access_key, X-Amz-Security-Token, TokenValue, ...) in JSON,
//     XML, INI and query-string form;
//  3. escapes control characters (C0 but tab, DEL, C1, the bidirectional
//     overrides and bytes that are not UTF-8), newlines included, so that a
//     message is one line and cannot drive the terminal it is printed on.
//
// Access key ids (AKIA..., ASIA...) are left alone: AWS documents them as
// not secret, they are what CloudTrail shows, and ssmproxy's own messages
// name them (masked) to tell keys apart.
//
// The package imports nothing of ssmproxy, so every package may use it
// (docs/architecture.md 2).
package redact

import (
	"net/url"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// Placeholder replaces every removed secret.
const Placeholder = "[redacted]"

// MinSecretLen is the shortest value Register accepts: shorter strings are
// not credentials, and removing them would garble ordinary words.
const MinSecretLen = 16

// maxRegistered bounds the registry. A process sees a handful of
// credentials per hour; past the bound the oldest are forgotten (the shape
// rules still catch them).
const maxRegistered = 4096

// registry holds the secrets this process knows. Reads vastly outnumber
// writes, and a write is cheap: Register is called on every credential the
// broker hands out.
type registry struct {
	mu    sync.RWMutex
	set   map[string]struct{}
	order []string
}

func newRegistry() *registry { return &registry{set: map[string]struct{}{}} }

var known = newRegistry()

// Register adds secrets to the process-wide registry that String removes.
// Values shorter than MinSecretLen are ignored. It is safe for concurrent
// use and cheap for values already registered.
func Register(secrets ...string) {
	for _, s := range secrets {
		if len(s) < MinSecretLen {
			continue
		}
		known.register(s)
	}
}

func (r *registry) register(s string) {
	r.add(s)
	// A secret that went through a URL, a form or a JSON encoder is spelled
	// escaped: query and path escaping, lowercase percent-escapes, and the
	// "\/" some JSON encoders write for "/".
	for _, e := range []string{url.QueryEscape(s), url.PathEscape(s), lowerEscapes(url.QueryEscape(s)),
		lowerEscapes(url.PathEscape(s)), strings.ReplaceAll(s, "/", `\/`)} {
		if e != s {
			r.add(e)
		}
	}
}

// lowerEscapes rewrites the hex digits of every %XX in s in lower case.
func lowerEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = toLowerASCII(b[i+1]), toLowerASCII(b[i+2])
		}
	}
	return string(b)
}

func toLowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func (r *registry) add(s string) {
	r.mu.RLock()
	_, ok := r.set[s]
	r.mu.RUnlock()
	if ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[s]; ok {
		return
	}
	if len(r.order) >= maxRegistered {
		delete(r.set, r.order[0])
		r.order = r.order[1:]
	}
	r.set[s] = struct{}{}
	r.order = append(r.order, s)
}

// remove replaces every registered secret in s, longest first so that a
// secret containing another is removed whole, and again until none is left:
// a placeholder next to the text around it could spell a secret anew. Each
// pass shortens s (secrets are longer than the placeholder), so it ends.
func (r *registry) remove(s string) string {
	for {
		hits := r.hits(s)
		if len(hits) == 0 {
			return s
		}
		s = replaceAll(s, hits)
	}
}

// hits lists the registered secrets that occur in s.
func (r *registry) hits(s string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var hits []string
	for _, v := range r.order {
		if strings.Contains(s, v) {
			hits = append(hits, v)
		}
	}
	return hits
}

func replaceAll(s string, hits []string) string {
	// Longest first: a secret that contains another goes whole.
	for i := 1; i < len(hits); i++ {
		for j := i; j > 0 && len(hits[j]) > len(hits[j-1]); j-- {
			hits[j], hits[j-1] = hits[j-1], hits[j]
		}
	}
	for _, v := range hits {
		s = strings.ReplaceAll(s, v, Placeholder)
	}
	return s
}

var (
	// fieldRE is a field whose name says it holds a secret, with its value:
	// "SecretAccessKey": "v", aws_secret_access_key = v, SessionToken=v,
	// X-Amz-Security-Token: v, "TokenValue":"v", "Token":"v" (the container
	// credentials endpoint). The value is a quoted string (also inside an
	// already quoted string, \"v\") or a bare run up to a separator.
	fieldRE = regexp.MustCompile(`(?i)((?:\b|_)(?:aws_?)?(?:secret_?access_?key|secret_?key|session_?token|security_?token|token_?value|x-amz-security-token|token)\\?"?\s*[:=]\s*)` +
		`(\\?"[^"]*"|[^\s"',;&}<>\\]+)`)
	// xmlRE is the same field in XML (STS answers in XML).
	xmlRE = regexp.MustCompile(`(?i)(<(?:SecretAccessKey|SessionToken)>)[^<]*(<)`)
	// b64RunRE finds runs of base64 characters; shaped decides from a run's
	// length and letters whether it is secret-shaped.
	b64RunRE = regexp.MustCompile(`[A-Za-z0-9+/=]{40,}`)
)

// The shapes of secrets nobody registered.
const (
	secretKeyLen   = 40  // an AWS secret access key
	sessionTokenAt = 100 // session tokens are several hundred characters
)

// shaped replaces secret-shaped values. Cheap checks first: most text has
// no field named like a secret and no long base64 run, and the regular
// expressions cost some microseconds per line.
func shaped(s string) string {
	lower := strings.ToLower(s)
	if strings.Contains(lower, "key") || strings.Contains(lower, "token") {
		s = fields(s)
	}
	if strings.Contains(s, "<") {
		s = xmlRE.ReplaceAllString(s, "${1}"+Placeholder+"${2}")
	}
	if longestRun(s) < secretKeyLen {
		return s
	}
	return runs(s)
}

// longestRun is the length of the longest run of base64 characters in s.
func longestRun(s string) int {
	longest, cur := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=' {
			cur++
			longest = max(longest, cur)
		} else {
			cur = 0
		}
	}
	return longest
}

func fields(s string) string {
	return fieldRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := fieldRE.FindStringSubmatch(m)
		v := sub[2]
		q := ""
		switch {
		case strings.HasPrefix(v, `\"`):
			q = `\"`
		case strings.HasPrefix(v, `"`):
			q = `"`
		}
		return sub[1] + q + Placeholder + q
	})
}

func runs(s string) string {
	return b64RunRE.ReplaceAllStringFunc(s, func(run string) string {
		if len(run) >= sessionTokenAt {
			return Placeholder
		}
		// A secret key has no '=': split "name=KEY" and a key's padding off.
		parts := strings.Split(run, "=")
		hit := false
		for i, p := range parts {
			if len(p) == secretKeyLen && mixedCase(p) {
				parts[i], hit = Placeholder, true
			}
		}
		if !hit {
			return run
		}
		return strings.Join(parts, "=")
	})
}

// mixedCase reports whether s has an upper- and a lower-case letter: random
// base64 of 40 characters lacks either with a chance below 1e-9, while hex
// digests, upper-case ids and words have only one case.
func mixedCase(s string) bool {
	var up, low bool
	for i := 0; i < len(s); i++ {
		c := s[i]
		up = up || 'A' <= c && c <= 'Z'
		low = low || 'a' <= c && c <= 'z'
	}
	return up && low
}

// String returns s with registered and secret-shaped values removed and
// control characters escaped: fit for one line on a terminal or in a log.
func String(s string) string { return known.redact(s) }

// redact is String with this registry. The registered secrets are removed
// again after escaping, which could spell one that held a backslash.
func (r *registry) redact(s string) string {
	return r.remove(Escape(shaped(r.remove(s))))
}

// Escape writes control characters as Go escapes (\n, \r, \x1b, \u009b,
// \u202e, and \xff for a byte that is not UTF-8); tab and everything
// printable stay as they are.
func Escape(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if needsEscape(r, n) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !needsEscape(r, n) {
			b.WriteString(s[i : i+n])
			i += n
			continue
		}
		switch {
		case r == utf8.RuneError && n <= 1:
			b.WriteString(`\x`)
			b.WriteByte(hex[s[i]>>4])
			b.WriteByte(hex[s[i]&0xf])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80:
			b.WriteString(`\x`)
			b.WriteByte(hex[r>>4])
			b.WriteByte(hex[r&0xf])
		default:
			b.WriteString(`\u`)
			for shift := 12; shift >= 0; shift -= 4 {
				b.WriteByte(hex[(r>>shift)&0xf])
			}
		}
		i += n
	}
	return b.String()
}

const hex = "0123456789abcdef"

func needsEscape(r rune, n int) bool {
	switch {
	case r == utf8.RuneError && n <= 1:
		return true // not UTF-8: a lone 0x9b is CSI to an 8-bit terminal
	case r == '\t':
		return false
	case r < 0x20, r == 0x7f, 0x80 <= r && r < 0xa0:
		return true
	case 0x200e <= r && r <= 0x200f, 0x202a <= r && r <= 0x202e, 0x2066 <= r && r <= 0x2069:
		return true // bidirectional marks and overrides reorder what is shown
	case r == 0x2028 || r == 0x2029:
		return true // line and paragraph separators
	}
	return false
}

// Lines is String for text of several lines: each line is redacted and
// escaped, and the newlines between them stay.
func Lines(s string) string { return known.lines(s) }

func (r *registry) lines(s string) string {
	parts := strings.Split(s, "\n")
	for i, p := range parts {
		parts[i] = r.redact(p)
	}
	return strings.Join(parts, "\n")
}

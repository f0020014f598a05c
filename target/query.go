// Package target turns what a user typed as TARGET into one instance id
// (docs/architecture.md section 6, step 1): an id as it is, or a name, a
// tag, a private IPv4 address or a private DNS name looked up through SSM
// DescribeInstanceInformation and EC2 DescribeInstances. Exactly one match
// with an Online agent is an answer; anything else is an error listing the
// candidates, never a guess (issue 8: other tools take the first or the
// last match).
package target

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"unicode"
)

// Kind is what a query names.
type Kind int

const (
	KindID   Kind = iota // i-… or mi-…: no lookup
	KindName             // the Name tag, or a managed instance's Name
	KindTag              // tag:KEY=VALUE
	KindIP               // a private IPv4 address
	KindDNS              // a private DNS name
)

var kindNames = [...]string{"id", "name", "tag", "ip", "dns"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("kind(%d)", int(k))
	}
	return kindNames[k]
}

// Query is a parsed TARGET.
type Query struct {
	Raw   string // as typed
	Kind  Kind
	Key   string // the tag key (KindTag)
	Value string // the id, name, tag value, address or DNS name
}

// cacheKey identifies the query in the lookup cache.
func (q Query) cacheKey() string { return q.Kind.String() + "\x00" + q.Key + "\x00" + q.Value }

// instanceID accepts EC2 instance ids and managed-instance ids.
var instanceID = regexp.MustCompile(`^(i-[0-9a-f]{8}([0-9a-f]{9})?|mi-[0-9a-f]{17})$`)

// hostName is a DNS name with at least one dot (a bare word is a Name).
var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))+\.?$`)

// maxValue bounds names and tag parts: EC2 tag keys are at most 128
// characters and values 256.
const maxValue = 256

// IsID reports whether s is an instance id, which needs no lookup.
func IsID(s string) bool { return instanceID.MatchString(s) }

// Parse reads TARGET:
//
//	i-… / mi-…        the instance itself
//	name:NAME         the Name tag (EC2) or Name (managed instance)
//	tag:KEY=VALUE     a tag
//	A.B.C.D           a private IPv4 address
//	host.domain       a private DNS name (any word with a dot)
//	NAME              a bare word: as name:NAME
func Parse(s string) (Query, error) {
	q := Query{Raw: s}
	if err := plain(s); err != nil {
		return q, err
	}
	switch {
	case IsID(s):
		q.Kind, q.Value = KindID, s
	case strings.HasPrefix(s, "name:"):
		q.Kind, q.Value = KindName, strings.TrimPrefix(s, "name:")
		if q.Value == "" {
			return q, fmt.Errorf("target %q: name:NAME needs a name", s)
		}
	case strings.HasPrefix(s, "tag:"):
		k, v, ok := strings.Cut(strings.TrimPrefix(s, "tag:"), "=")
		if !ok || k == "" || v == "" {
			return q, fmt.Errorf("target %q: want tag:KEY=VALUE", s)
		}
		if len(k) > 128 {
			return q, fmt.Errorf("target %q: a tag key has at most 128 characters", s)
		}
		q.Kind, q.Key, q.Value = KindTag, k, v
	case isIPv4(s):
		q.Kind, q.Value = KindIP, s
	case strings.Contains(s, "."):
		if !hostName.MatchString(s) {
			return q, fmt.Errorf("target %q is neither an instance id nor a DNS name (use name:NAME for a Name with dots)", s)
		}
		q.Kind, q.Value = KindDNS, strings.TrimSuffix(strings.ToLower(s), ".")
	case strings.HasPrefix(s, "i-") || strings.HasPrefix(s, "mi-"):
		// A mistyped id is far likelier than a Name like "i-0abc".
		return q, fmt.Errorf("target %q looks like an instance id but is not one (i-<8 or 17 hex>, mi-<17 hex>); use name:%s for a Name", s, s)
	default:
		q.Kind, q.Value = KindName, s
	}
	return q, nil
}

// plain refuses empty, overlong and unprintable targets: they come from a
// command line or an ssh_config %h and end up in filters and messages.
func plain(s string) error {
	if s == "" {
		return fmt.Errorf("empty target")
	}
	if len(s) > maxValue+len("tag:")+129 {
		return fmt.Errorf("target is longer than %d characters", maxValue)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("target %q contains spaces or control characters", s)
		}
	}
	return nil
}

func isIPv4(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && ip.To4() != nil && strings.Count(s, ".") == 3 && !strings.Contains(s, ":")
}

// escapeFilter makes an EC2 filter value match literally: EC2 treats * and
// ? as wildcards and \ as their escape.
func escapeFilter(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`).Replace(s)
}

package wire

import (
	"strconv"
	"strings"
)

// VersionGreater reports whether a > b, comparing dotted versions the way the
// official plugin does (docs/protocol.md 11.2): numeric components, the same
// number of components required, strict. A malformed version is never
// greater, so features gated on it stay off.
func VersionGreater(a, b string) bool {
	pa, ok1 := parseVersion(a)
	pb, ok2 := parseVersion(b)
	if !ok1 || !ok2 || len(pa) != len(pb) {
		return false
	}
	for i := range pa {
		if pa[i] != pb[i] {
			return pa[i] > pb[i]
		}
	}
	return false
}

func parseVersion(v string) ([]uint64, bool) {
	if v == "" {
		return nil, false
	}
	parts := strings.Split(v, ".")
	out := make([]uint64, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

// ValidClientVersion reports whether v is usable as ClientVersion: four
// numeric parts and greater than 1.2.331.0, below which agents keep smux
// keepalive on and may pick basic mode for forwarding (docs/protocol.md 11.5).
func ValidClientVersion(v string) bool {
	p, ok := parseVersion(v)
	return ok && len(p) == 4 && VersionGreater(v, "1.2.331.0")
}

package fakeaws

import (
	"fmt"
	"regexp"
	"strings"
)

// ParseTargetSpec reads bin/fakeaws's -target value:
//
//	ID[,name=VALUE][,tag:KEY=VALUE...][,ip=A.B.C.D][,dns=NAME][,ping=Online|ConnectionLost][,agent=VERSION]
//
// ping=ConnectionLost is an agent that is not connected, as -offline-target.
// Anything else is refused with a one-line reason (docs/fakeaws.md 3.1).
func ParseTargetSpec(spec string) (Target, error) {
	parts := strings.Split(spec, ",")
	t := Target{ID: parts[0], Connected: true}
	if !ec2IDPattern.MatchString(t.ID) && !managedIDPattern.MatchString(t.ID) {
		return Target{}, fmt.Errorf("target %q: the id must be i-<8 or 17 hex> or mi-<17 hex>", t.ID)
	}
	seen := map[string]bool{}
	for _, attr := range parts[1:] {
		k, v, ok := strings.Cut(attr, "=")
		if !ok || k == "" || v == "" {
			return Target{}, fmt.Errorf("target %s: attribute %q is not KEY=VALUE", t.ID, attr)
		}
		if seen[k] {
			return Target{}, fmt.Errorf("target %s: attribute %s given twice", t.ID, k)
		}
		seen[k] = true
		switch {
		case k == "name":
			t.Name = v
		case strings.HasPrefix(k, "tag:"):
			key := strings.TrimPrefix(k, "tag:")
			if key == "" || len(key) > 128 || len(v) > 256 {
				return Target{}, fmt.Errorf("target %s: tag %q: keys are 1 to 128 characters, values up to 256", t.ID, key)
			}
			if t.Tags == nil {
				t.Tags = map[string]string{}
			}
			t.Tags[key] = v
		case k == "ip":
			if !validPrivateIP(v) {
				return Target{}, fmt.Errorf("target %s: ip %q is not an IPv4 address A.B.C.D", t.ID, v)
			}
			t.PrivateIP = v
		case k == "dns":
			if !dnsName.MatchString(v) {
				return Target{}, fmt.Errorf("target %s: dns %q is not a host name", t.ID, v)
			}
			t.PrivateDNS = v
		case k == "ping":
			switch v {
			case "Online":
				t.Connected = true
			case "ConnectionLost":
				t.Connected = false
			default:
				return Target{}, fmt.Errorf("target %s: ping %q: want Online or ConnectionLost", t.ID, v)
			}
		case k == "agent":
			if !agentVersion.MatchString(v) {
				return Target{}, fmt.Errorf("target %s: agent %q is not a version like 3.3.1142.0", t.ID, v)
			}
			t.AgentVersion = v
		default:
			return Target{}, fmt.Errorf("target %s: unknown attribute %q (want name, tag:KEY, ip, dns, ping or agent)", t.ID, k)
		}
	}
	if t.Tags["Name"] != "" && t.Name != "" && t.Tags["Name"] != t.Name && !strings.HasPrefix(t.ID, "mi-") {
		return Target{}, fmt.Errorf("target %s: name and tag:Name disagree", t.ID)
	}
	return t, nil
}

var (
	dnsName      = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$`)
	agentVersion = regexp.MustCompile(`^\d+(\.\d+){1,3}$`)
)

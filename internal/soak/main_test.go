//go:build unix

package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"64M": 64 << 20, "1G": 1 << 30, "1g": 1 << 30, "512K": 512 << 10,
		"2GiB": 2 << 30, "16MB": 16 << 20, "1000": 1000} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "M", "-1M", "0", "1T", "1.5G", "64X"} {
		if got, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("SOAK_SIZE", "")
	t.Setenv("SOAK_CRED_TTL", "")
	t.Setenv("SOAK_LIFETIMES", "")
	t.Setenv("SOAK_AGENT_LOSS", "")
	c, err := configFromEnv()
	if err != nil || c.size != 1<<30 || c.credTTL != 20*time.Second || c.lifetimes != 0 || c.agentLoss != agentLoss {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	t.Setenv("SOAK_SIZE", "64M")
	t.Setenv("SOAK_CRED_TTL", "5s")
	t.Setenv("SOAK_LIFETIMES", "30")
	t.Setenv("SOAK_AGENT_LOSS", "0.01")
	if c, err = configFromEnv(); err != nil || c.size != 64<<20 || c.credTTL != 5*time.Second || c.lifetimes != 30 || c.agentLoss != 0.01 {
		t.Fatalf("set: %+v, %v", c, err)
	}
	for k, v := range map[string]string{"SOAK_SIZE": "lots", "SOAK_CRED_TTL": "1s", "SOAK_LIFETIMES": "-3", "SOAK_AGENT_LOSS": "1"} {
		t.Run(k, func(t *testing.T) {
			t.Setenv(k, v)
			if _, err := configFromEnv(); err == nil {
				t.Errorf("%s=%s accepted", k, v)
			}
		})
	}
}

// A loss of zero installs no loss rule: a rule without a probability would
// drop every frame.
func TestRelayRulesZeroLoss(t *testing.T) {
	rules := relayRules(0)
	for i := range rules {
		r := &rules[i]
		if r.Action == "drop" && r.Probability == 0 {
			t.Fatalf("rule %s drops every %s %s", r.Name, r.Direction, r.MessageType)
		}
	}
	drops := 0
	rules = relayRules(0.001)
	for i := range rules {
		if rules[i].Action == "drop" {
			drops++
		}
	}
	if drops != 4 {
		t.Errorf("%d loss rules, want 4 (stream frames and acks, both directions)", drops)
	}
}

func TestReadSelfCounts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ssmproxy.log")
	log := `time=2026-12-03T06:48:44.947Z level=INFO msg="channel closed by the service" session=alice-1 output=""
time=2026-12-03T06:48:44.948Z level=INFO msg="session over" session=alice-1 bytesIn=26645 bytesOut=67203365 reconnects=3 retransmits=741
time=2026-12-03T06:50:44.948Z level=INFO msg="session over" session=alice-2 bytesIn=1 bytesOut=2 reconnects=12 retransmits=9
`
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	var r report
	r.readSelfCounts(p)
	if r.selfSessions != 2 || r.selfReconnects != 15 || r.selfRetransmits != 750 {
		t.Errorf("got sessions %d reconnects %d retransmits %d", r.selfSessions, r.selfReconnects, r.selfRetransmits)
	}
}

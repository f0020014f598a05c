package ssm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Target = "i-0123456789abcdef0"
	c.AWS = aws.Config{Region: "eu-west-1", Credentials: credentials.NewStaticCredentialsProvider("AKIAEXAMPLE", "secret", "")}
	return c
}

// TestConfigVerify: defaults verify; each setting that cannot work is
// reported (all of them at once), never silently replaced.
func TestConfigVerify(t *testing.T) {
	if err := validConfig().Verify(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no target", func(c *Config) { c.Target = "" }, "no target"},
		{"no region", func(c *Config) { c.AWS.Region = "" }, "no region"},
		{"region with a domain", func(c *Config) { c.AWS.Region = "us-east-1.evil.example" }, "not a region name"},
		{"no credentials", func(c *Config) { c.AWS.Credentials = nil }, "no credentials"},
		{"old client version", func(c *Config) { c.ClientVersion = "1.2.0.0" }, "client version"},
		{"negative budget", func(c *Config) { c.ResumeBudget = -time.Second }, "resume budget"},
		{"read timeout under ping", func(c *Config) { c.ReadTimeout = c.PingInterval }, "longer than the ping interval"},
		{"out-of-order bytes under a payload", func(c *Config) { c.MaxOutOfOrderBytes = MaxStreamPayload - 1 }, "out-of-order buffer of"},
		{"negative no-progress timeout", func(c *Config) { c.NoProgressTimeout = -time.Minute }, "no-progress timeout"},
		{"no-progress under the read timeout", func(c *Config) { c.NoProgressTimeout = c.ReadTimeout }, "longer than the read timeout"},
		{"tiny delivery ring", func(c *Config) { c.DeliveryBuffer = 4096 }, "delivery buffer"},
		{"window upside down", func(c *Config) { c.Stream.MinWindow, c.Stream.MaxWindow = 64, 32 }, "stream window"},
		{"span under window", func(c *Config) { c.Stream.MaxSpan = c.Stream.MaxWindow - 1 }, "span"},
		{"RTO upside down", func(c *Config) { c.Stream.MinRTO, c.Stream.MaxRTO = time.Second, time.Millisecond }, "RTO"},
		{"window under a message", func(c *Config) { c.Stream.MaxWindowBytes = wire.MaxPayload - 1 }, "smaller than one message"},
	} {
		cfg := validConfig()
		c.mod(&cfg)
		err := cfg.Verify()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalidConfig mentioning %q", c.name, err, c.want)
		}
	}
	cfg := validConfig()
	cfg.Target, cfg.ResumeBudget = "", -1
	if err := cfg.Verify(); err == nil || !strings.Contains(err.Error(), "no target") || !strings.Contains(err.Error(), "resume budget") {
		t.Errorf("two problems: %v, want both reported", err)
	}
}

// TestStreamDefaultsFollowSetFields: a zero field's default moves as far as
// the fields that were set require, and a set field is never changed.
func TestStreamDefaultsFollowSetFields(t *testing.T) {
	c := StreamConfig{MaxWindow: 8}.withDefaults()
	if c.MaxWindow != 8 || c.MinWindow != 8 || c.InitialWindow != 8 || c.Verify() != nil {
		t.Fatalf("MaxWindow 8 alone: %+v (%v)", c, c.Verify())
	}
	c = StreamConfig{MinWindow: 100}.withDefaults()
	if c.MinWindow != 100 || c.InitialWindow != 100 || c.MaxWindow != DefaultMaxWindow || c.Verify() != nil {
		t.Fatalf("MinWindow 100 alone: %+v (%v)", c, c.Verify())
	}
	c = StreamConfig{MaxRTO: 50 * time.Millisecond}.withDefaults()
	if c.MaxRTO != 50*time.Millisecond || c.MinRTO != 50*time.Millisecond {
		t.Fatalf("MaxRTO 50ms alone: %+v", c)
	}
	c = StreamConfig{MinWindow: 64, MaxWindow: 32}.withDefaults()
	if c.MinWindow != 64 || c.MaxWindow != 32 || c.Verify() == nil {
		t.Fatalf("contradictory windows were changed or accepted: %+v", c)
	}
}

// TestKindString: every Kind has a name, and an unknown one prints its
// number instead of panicking.
func TestKindString(t *testing.T) {
	if KindSessionGone.String() != "session gone" || KindOther.String() != "other" {
		t.Fatalf("names: %q %q", KindSessionGone, KindOther)
	}
	if got := Kind(42).String(); got != "kind(42)" {
		t.Fatalf("Kind(42) = %q", got)
	}
}

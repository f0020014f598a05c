//go:build unix

// Command soak is the long haul (issue 7, `make soak`): real OpenSSH ssh and
// rsync through bin/ssmproxy and bin/fakeaws under one mixed fault plan,
// SOAK_SIZE of random data each way with rsync, and an interactive ssh
// session answering a command every second for the whole run. It prints what
// it measured and ends with exactly one line starting "soak: ok" or
// "soak: FAIL <reason>" (exit 1).
//
// The fault plan (see plan.go) is the mix docs/fakeaws.md section 6 lists:
// loss, duplicates, reordering, jitter, scheduled websocket closes, short
// credentials minted by the broker from a key in a file keyring, one
// half-open episode, one throttled ResumeSession, and the realistic agent.
//
// Settings come from the environment so that make passes them through:
// SOAK_SIZE (default 1G; 64M, 512K, 2G...), SOAK_CRED_TTL (default 20s) and
// SOAK_LIFETIMES (default 0: the interactive session keeps going after the
// transfers until it has spanned that many credential lifetimes) and
// SOAK_AGENT_LOSS (default 0.001, the loss of the agent's data frames; see
// agentLoss in plan.go for why it is below the plan's 1 %).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin", "directory with ssmproxy and fakeaws")
	keep := flag.Bool("keep", false, "keep the work directory (logs) after the run")
	flag.Parse()
	cfg, err := configFromEnv()
	if err != nil {
		fmt.Println("soak: FAIL", err)
		os.Exit(2)
	}
	cfg.bin, cfg.keep = *bin, *keep
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := run(ctx, cfg)
	if r != nil {
		r.print()
	}
	if err != nil {
		fmt.Println("soak: FAIL", oneLine(err.Error()))
		os.Exit(1)
	}
	fmt.Printf("soak: ok %s each way verified, %d reconnects, longest stall %s, %.1f credential lifetimes in one session\n",
		sizeString(cfg.size), r.reconnects, r.longestStall().Round(100*time.Millisecond), r.lifetimes)
}

// config is one soak's settings.
type config struct {
	bin       string
	keep      bool
	size      int64
	credTTL   time.Duration
	lifetimes int     // minimum credential lifetimes the interactive session spans
	agentLoss float64 // loss of the agent's data frames (see agentLoss)
}

func configFromEnv() (config, error) {
	c := config{size: 1 << 30, credTTL: 20 * time.Second, agentLoss: agentLoss}
	var err error
	if v := os.Getenv("SOAK_SIZE"); v != "" {
		if c.size, err = parseSize(v); err != nil {
			return c, fmt.Errorf("SOAK_SIZE: %w", err)
		}
	}
	if v := os.Getenv("SOAK_CRED_TTL"); v != "" {
		if c.credTTL, err = time.ParseDuration(v); err != nil || c.credTTL < 2*time.Second {
			return c, fmt.Errorf("SOAK_CRED_TTL %q: want a duration of at least 2s", v)
		}
	}
	if v := os.Getenv("SOAK_LIFETIMES"); v != "" {
		if c.lifetimes, err = strconv.Atoi(v); err != nil || c.lifetimes < 0 {
			return c, fmt.Errorf("SOAK_LIFETIMES %q: want a count", v)
		}
	}
	if v := os.Getenv("SOAK_AGENT_LOSS"); v != "" {
		if c.agentLoss, err = strconv.ParseFloat(v, 64); err != nil || c.agentLoss < 0 || c.agentLoss >= 1 {
			return c, fmt.Errorf("SOAK_AGENT_LOSS %q: want a fraction such as 0.001", v)
		}
	}
	return c, nil
}

// parseSize reads 64M, 1G, 512K, 1024 (bytes); binary units.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, errors.New("want a size such as 64M or 1G")
	}
	return n * mult, nil
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

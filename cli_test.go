package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/ssm"
)

// TestSingleDashCompat: command lines written for the std flag package
// (single-dash long flags) parse as before; values that look like flags
// stay values; shorthands and their clusters stay shorthands.
func TestSingleDashCompat(t *testing.T) {
	const id = "i-0123456789abcdef0"
	o, err := parseConnect([]string{"-profile", "work", "-resume-budget=1m", "-vv", id, "-reason", "-profile", "2222"})
	if err != nil {
		t.Fatal(err)
	}
	if o.profile != "work" || o.resumeBudget != time.Minute || o.verbosity != 2 || o.reason != "-profile" || o.target != id || o.port != "2222" {
		t.Fatalf("parsed %+v", o)
	}
	o, err = parseConnect([]string{"--push-key", "--user", "ec2-user", "-v", "-v", id})
	if err != nil || !o.pushKey.set || o.pushKey.path != "" || o.user != "ec2-user" || o.verbosity != 2 {
		t.Fatalf("--push-key without a value: %+v, %v", o, err)
	}
	o, err = parseConnect([]string{"-push-key=/tmp/k.pub", "-user", "ec2-user", id})
	if err != nil || o.pushKey.path != "/tmp/k.pub" {
		t.Fatalf("-push-key=PATH: %+v, %v", o, err)
	}
	f, err := parseForward([]string{"-L5432:db:5432", id, "-quiet", "-D", "1080", "-region", "eu-west-1"})
	if err != nil || len(f.locals) != 1 || len(f.dynamic) != 1 || !f.quiet || f.region != "eu-west-1" {
		t.Fatalf("forward: %+v, %v", f, err)
	}
	// After "--" nothing is a flag.
	o, err = parseConnect([]string{"--", id, "22"})
	if err != nil || o.target != id {
		t.Fatalf("--: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"-nope", id},  // unknown, single dash
		{"--nope", id}, // unknown, double dash
		{"-x", id},     // unknown shorthand
		{"--resume-budget", "x", id},
		{id, "22", "extra"},
	} {
		_, err := parseConnect(args)
		if exitCode(err) != exitUsage {
			t.Errorf("%q: %v (exit %d), want a usage error", args, err, exitCode(err))
		}
		if strings.HasPrefix(args[0], "-n") && !strings.Contains(err.Error(), "flag provided but not defined: --nope") {
			t.Errorf("%q: %v does not name the flag", args, err)
		}
	}
}

// TestHelpFromDefinitions: help shows each flag with the code's default,
// in the command's own order, the credential flags in their block, and the
// exit codes; every command has help.
func TestHelpFromDefinitions(t *testing.T) {
	help := func(args ...string) string {
		t.Helper()
		root := newRootCmd(context.Background())
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		return out.String()
	}
	h := help("help", "connect")
	for _, want := range []string{
		`--client-version string`, `(default "` + ssm.DefaultClientVersion + `")`,
		`(default ` + ssm.DefaultResumeBudget.String() + `)`, `(default ` + ssm.DefaultHandshakeTimeout.String() + `)`,
		`(default "` + ssm.DocumentSSH + `")`, "\nExit codes:\n", "-v, --verbose",
	} {
		if !strings.Contains(h, want) {
			t.Errorf("help connect lacks %q", want)
		}
	}
	flags, creds, ok := strings.Cut(h, "Credential flags")
	if !ok || !strings.Contains(creds, "--role-arn ARN") || strings.Contains(flags, "--role-arn") {
		t.Error("help connect: the credential flags are not in their own block")
	}
	if i, j := strings.Index(flags, "--document"), strings.Index(flags, "--client-version"); i < 0 || j < i {
		t.Error("help connect: flags are not in definition order")
	}
	if h2 := help("connect", "--help"); h2 != h {
		t.Error("connect --help differs from help connect")
	}
	for _, c := range newRootCmd(context.Background()).Commands() {
		if h := help("help", c.Name()); !strings.Contains(h, "Usage: ssmproxy "+c.Name()) && c.Name() != "help" {
			t.Errorf("help %s: no usage line:\n%s", c.Name(), h)
		}
	}
}

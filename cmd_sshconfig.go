package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/ssmproxy/ssmproxy/internal/redact"
	"github.com/ssmproxy/ssmproxy/sshconfig"
	"github.com/ssmproxy/ssmproxy/target"
)

// `ssmproxy ssh-config` (docs/ssh-config.md): the fleet as ssh_config Host
// blocks, listed with the read-only lookup scope (docs/credentials.md 6.1).

// suggestedOutput is the file the docs and the help suggest for --output.
const suggestedOutput = "~/.ssh/ssmproxy_config"

type sshConfigOptions struct {
	pf         profileFlags
	bf         brokerFlags
	output     string
	tags       []string
	namePrefix string
	onlineOnly bool
	sshConfig  string
	program    string
}

const sshConfigLong = `Lists the fleet (SSM DescribeInstanceInformation and EC2 DescribeInstances,
with read-only credentials of the lookup scope) and writes one ssh_config Host
block per instance, with its Name and its id as aliases, HostName the id and
ProxyCommand "ssmproxy connect %h %p" (with --profile and --region when
given by flag or $AWS_PROFILE, $AWS_REGION), then a "Host i-* mi-*" block for every other instance.

By default the config goes to stdout. With --output FILE (for example
` + suggestedOutput + `) the file is replaced atomically, only when it changed,
and only if ssmproxy wrote it (its first line is the marker); ssmproxy then
checks that ~/.ssh/config Includes it and prints the one Include line to add,
above any Host block, when it does not. ~/.ssh/config itself is never edited.

Instances whose agent is offline are kept (use --online-only to leave them
out); running EC2 instances without an SSM agent are left out. A Name shared
by several instances, that looks like an instance id, or that ssh_config
cannot hold as a Host pattern is reported on stderr and not used as an
alias: those instances keep their id alias. Nothing is guessed.
See docs/ssh-config.md.
`

const sshConfigFooter = `Exit codes:
  0  written (or unchanged); left-out names are reported on stderr
  2  usage error; --output names a file ssmproxy did not write
  3  credentials missing, expired or refused
  4  the listing was denied (it needs ssm:DescribeInstanceInformation
     and ec2:DescribeInstances)
  6  the service refused the listing
  7  service or network failure
`

func newSSHConfigCmd() *cobra.Command {
	o := &sshConfigOptions{}
	cmd := &cobra.Command{
		Use:         "ssh-config [flags]",
		Short:       "write ssh_config Host blocks for the fleet (Name and id aliases)",
		Long:        sshConfigLong,
		Annotations: map[string]string{annFooter: sshConfigFooter},
		Args:        noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSSHConfig(cmd.Context(), *o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	o.pf.register(fs)
	o.bf.register(fs)
	fs.StringVarP(&o.output, "output", "o", "-", "write the config to `FILE` (meant for Include, e.g. "+suggestedOutput+"); - prints it")
	fs.StringArrayVar(&o.tags, "tag", nil, "keep only instances with tag `KEY=VALUE` (repeatable: all must match)")
	fs.StringVar(&o.namePrefix, "name-prefix", "", "keep only instances whose Name starts with `PREFIX`")
	fs.BoolVar(&o.onlineOnly, "online-only", false, "leave out instances whose agent is not Online")
	fs.StringVar(&o.sshConfig, "ssh-config", "", "the ssh config `FILE` to check for the Include (default ~/.ssh/config)")
	fs.StringVar(&o.program, "program", "ssmproxy", "how ProxyCommand runs ssmproxy: a command on ssh's $PATH or an absolute `PATH`")
	completeFlags(cmd)
	return cmd
}

// regionWord is what a region may be on the ProxyCommand line.
var regionWord = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

func runSSHConfig(ctx context.Context, o sshConfigOptions, stdout, stderr io.Writer) error {
	tags, err := parseTags(o.tags)
	if err != nil {
		return err
	}
	home, _ := os.UserHomeDir()
	output := o.output
	if output == "" {
		return usagef("ssh-config: --output: give a FILE, or - for stdout")
	}
	if output != "-" {
		if home == "" && strings.HasPrefix(output, "~") {
			return usagef("ssh-config: --output %s: no home directory to expand ~ in; give a full path", output)
		}
		if output = expandHome(output, home); filepath.Clean(output) == filepath.Clean(expandHome("~/.ssh/config", home)) {
			return usagef("ssh-config: --output must not be ~/.ssh/config: write a file of its own and Include it")
		}
	}
	// ProxyCommand is one line of ssh_config: a control character in what
	// goes on it would break the file out of it.
	if o.program == "" || strings.IndexFunc(o.program, unicode.IsControl) >= 0 {
		return usagef("ssh-config: --program: give a command name or path")
	}
	profile := resolveProfile(ctx, o.pf.profile)
	if strings.IndexFunc(profile, unicode.IsControl) >= 0 {
		return usagef("ssh-config: profile %q contains control characters", profile)
	}
	region := o.pf.region
	if region == "" {
		region = firstEnv("AWS_REGION", "AWS_DEFAULT_REGION")
	}
	if region != "" && !regionWord.MatchString(region) {
		return usagef("ssh-config: region %q is not a region name", region)
	}
	nodes, err := listFleet(ctx, profile, region, o.bf, tags)
	if err != nil {
		return err
	}
	ro := sshconfig.Options{Command: o.commandLine(profile, region), Program: o.program,
		Region: region, OnlineOnly: o.onlineOnly, NamePrefix: o.namePrefix}
	if profile != "" && profile != "default" {
		ro.Profile = profile
	}
	data, skipped := sshconfig.Render(nodes, ro)
	for _, s := range skipped {
		fmt.Fprintf(stderr, "ssmproxy: ssh-config: %s\n", s)
	}
	if output == "-" {
		_, err := stdout.Write(data)
		return err
	}
	changed, err := sshconfig.Write(output, data)
	if err != nil {
		return usagef("ssh-config: %v", err)
	}
	if changed {
		fmt.Fprintf(stderr, "ssmproxy: ssh-config: wrote %s\n", output)
	} else {
		fmt.Fprintf(stderr, "ssmproxy: ssh-config: %s unchanged\n", output)
	}
	return checkInclude(o.sshConfig, output, home, stderr)
}

// listFleet lists with a broker of the lookup scope, as name lookups do
// (opener.go lookupFinder).
func listFleet(ctx context.Context, profile, region string, bf brokerFlags, tags []target.Tag) ([]target.Node, error) {
	b, finder, err := lookupFinder(ctx, sessionRequest{profile: profile, region: region, broker: bf,
		log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	f, err := finder(ctx)
	if err != nil {
		return nil, err
	}
	return f.Fleet(ctx, tags)
}

// checkInclude tells the user the one line to add when ~/.ssh/config does
// not Include output (above any Host block, where it applies to all hosts).
func checkInclude(sshConfig, output, home string, w io.Writer) error {
	if sshConfig == "" {
		sshConfig = filepath.Join(home, ".ssh", "config")
	}
	cov, err := sshconfig.CheckInclude(sshConfig, output, home)
	if err != nil {
		fmt.Fprintf(w, "ssmproxy: ssh-config: could not read %s (%s); make sure it Includes %s\n", sshConfig, redact.String(err.Error()), output)
		return nil
	}
	line := sshconfig.IncludeLine(output, home)
	switch cov {
	case sshconfig.Included:
	case sshconfig.InBlock:
		fmt.Fprintf(w, "ssmproxy: ssh-config: %s Includes %s only inside a Host or Match block; move the line\n  %s\nto the top of %s, before any Host block\n", sshConfig, output, line, sshConfig)
	default:
		fmt.Fprintf(w, "ssmproxy: ssh-config: add this line at the top of %s, before any Host block:\n  %s\n", sshConfig, line)
	}
	return nil
}

// parseTags reads --tag KEY=VALUE values.
func parseTags(in []string) ([]target.Tag, error) {
	out := make([]target.Tag, 0, len(in))
	for _, s := range in {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" || v == "" {
			return nil, usagef("ssh-config: --tag %q: want KEY=VALUE", s)
		}
		if len(k) > 128 || len(v) > 256 {
			return nil, usagef("ssh-config: --tag %q: a tag key has at most 128 characters, a value 256", s)
		}
		out = append(out, target.Tag{Key: k, Value: v})
	}
	return out, nil
}

// commandLine is the header's command: the flags that shape the output,
// in a fixed order, never argv (which may hold broker flags).
func (o sshConfigOptions) commandLine(profile, region string) string {
	parts := []string{"ssmproxy", "ssh-config"}
	if profile != "" {
		parts = append(parts, "--profile", profile)
	}
	if region != "" {
		parts = append(parts, "--region", region)
	}
	for _, t := range o.tags {
		parts = append(parts, "--tag", t)
	}
	if o.namePrefix != "" {
		parts = append(parts, "--name-prefix", o.namePrefix)
	}
	if o.onlineOnly {
		parts = append(parts, "--online-only")
	}
	if o.program != "ssmproxy" {
		parts = append(parts, "--program", o.program)
	}
	if o.output != "-" {
		parts = append(parts, "--output", o.output)
	}
	for i, p := range parts {
		if strings.ContainsAny(p, " \t'\"\\$`") {
			parts[i] = "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
		}
	}
	return strings.Join(parts, " ")
}

func expandHome(p, home string) string {
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[2:])
	}
	return p
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

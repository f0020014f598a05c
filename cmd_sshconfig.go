package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ssmproxy/ssmproxy/sshconfig"
)

const sshConfigLong = `Reads the fleet (SSM DescribeInstanceInformation and EC2 DescribeInstances,
with read-only credentials of their own) and writes ssh_config Host blocks:
one per managed node, with its Name tag and its id as aliases and HostName
set to the id, and a last "Host i-* mi-*" block, each with
"ProxyCommand ssmproxy connect %h %p" (plus --profile and --region when you
give them here).

  ssmproxy ssh-config --output ~/.ssh/ssmproxy_config
  ssh web-1

With --output FILE the file is written for ~/.ssh/config to Include:
atomically, only when it changed, and only if it is ssmproxy's own (it
starts with ssmproxy's marker line); another file of that name is never
overwritten. When ~/.ssh/config does not include it yet, the one Include
line to add is printed; ~/.ssh/config itself is never edited.

Names two nodes share, names an ssh_config Host line cannot hold literally
(spaces, wildcards) and names that look like instance ids are listed on
stderr and left out; those nodes keep their id alias. Nothing is guessed.
Hybrid nodes (mi-) are included unless a --tag filter is given (their tags
are not EC2's). The output holds no secret and no timestamp: the same fleet
gives the same bytes.
`

type sshConfigOptions struct {
	profileFlags
	broker    brokerFlags
	output    string
	sshConfig string
	tags      []string
}

func newSSHConfigCmd() *cobra.Command {
	o := &sshConfigOptions{}
	cmd := &cobra.Command{
		Use:         "ssh-config [flags]",
		Short:       "write ssh_config Host blocks for the fleet (for Include)",
		Long:        sshConfigLong,
		Annotations: map[string]string{annFooter: "Exit codes: 0 written (or unchanged); 2 bad arguments or an output file that is not ssmproxy's;\n3, 4, 7 as \"ssmproxy help connect\" for credentials, access denied and the network.\n"},
		Args:        noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSSHConfig(cmd.Context(), *o, cmd)
		},
	}
	fs := cmd.Flags()
	o.profileFlags.register(fs)
	fs.StringVarP(&o.output, "output", "o", "-", "write to `FILE` (for Include from ~/.ssh/config), or - for stdout")
	fs.StringArrayVar(&o.tags, "tag", nil, "only EC2 instances with this tag `KEY=VALUE` (repeatable: all must hold)")
	fs.StringVar(&o.sshConfig, "ssh-config", "", "the ssh client configuration that should include FILE (default ~/.ssh/config)")
	o.broker.register(fs)
	completeFlags(cmd)
	return cmd
}

func runSSHConfig(ctx context.Context, o sshConfigOptions, cmd *cobra.Command) error {
	tags := map[string]string{}
	for _, t := range o.tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return usagef("ssh-config: --tag %q is not KEY=VALUE", t)
		}
		tags[k] = v
	}
	b, finder, err := lookupFinder(ctx, sessionRequest{profile: o.profile, region: o.region, broker: o.broker})
	if err != nil {
		return err
	}
	defer b.Close()
	f, err := finder(ctx)
	if err != nil {
		return err
	}
	nodes, err := f.Fleet(ctx, tags)
	if err != nil {
		return err
	}
	hosts := make([]sshconfig.Host, 0, len(nodes))
	for _, n := range nodes {
		hosts = append(hosts, sshconfig.Host{ID: n.ID, Name: n.Name, Platform: n.Platform})
	}
	var proxyArgs []string
	if o.profile != "" {
		proxyArgs = append(proxyArgs, "--profile", o.profile)
	}
	if o.region != "" {
		proxyArgs = append(proxyArgs, "--region", o.region)
	}
	line := "ssmproxy ssh-config"
	for _, a := range append(proxyArgs, tagArgs(o.tags)...) {
		line += " " + a
	}
	if o.output != "-" {
		line += " --output " + o.output
	}
	text, skipped := sshconfig.Render(hosts, proxyArgs, line)
	stderr := cmd.ErrOrStderr()
	for _, s := range skipped {
		fmt.Fprintf(stderr, "ssmproxy: name %q left out (%s): %s\n", s.Name, s.Why, strings.Join(s.IDs, ", "))
	}
	if o.output == "-" {
		_, err := fmt.Fprint(cmd.OutOrStdout(), text)
		return err
	}
	changed, err := sshconfig.Write(o.output, text)
	if err != nil {
		return usagef("ssh-config: %v", err)
	}
	what := "unchanged"
	if changed {
		what = "written"
	}
	fmt.Fprintf(stderr, "ssmproxy: %s %s (%d hosts)\n", o.output, what, len(hosts))
	home, _ := os.UserHomeDir()
	config := o.sshConfig
	if config == "" {
		config = filepath.Join(home, ".ssh", "config")
	}
	if ok, err := sshconfig.Included(config, home, o.output); err == nil && !ok {
		fmt.Fprintf(stderr, "ssmproxy: add this line at the top of %s, before any Host line:\n%s\n", config, sshconfig.IncludeLine(home, o.output))
	}
	return nil
}

func tagArgs(tags []string) []string {
	var out []string
	for _, t := range tags {
		out = append(out, "--tag", t)
	}
	return out
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/doctor"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
	"github.com/ssmproxy/ssmproxy/target"
)

const doctorLong = `Checks, one line each, what a session needs, and says how to fix what fails:

  profile and region   which profile and region, and where they come from
  keyring              the keyring backend opens
  credentials          the source, the scoped credentials' expiry, the hard deadline
  STS                  reachable (TLS verified), and the clock skew from its Date header
  SSM API              reachable (TLS verified)
  message gateway      reachable (TLS verified)
  session policy       the scoped policy allows every call a session makes
With TARGET (any form connect takes):
  target               registered with SSM, ping status, agent version and what it
                       means (mux, smux keepalive), platform
  session              StartSession, the data channel and the agent's handshake,
                       then TerminateSession (nothing is sent to the instance)
  ssh config           ~/.ssh/config gives TARGET (or i-*) a ProxyCommand running
                       ssmproxy connect

✓ passed, ✗ failed (with the fix on the next line), – skipped (with why). A
failing check never stops the others. No check waits more than 20 s.
`

const doctorFooter = `Exit codes: 0 every check passed or was skipped; 1 at least one failed;
2 bad arguments.
`

type doctorOptions struct {
	profileFlags
	broker    brokerFlags
	sshConfig string
	asJSON    bool
	target    string
}

func newDoctorCmd() *cobra.Command {
	o := &doctorOptions{}
	cmd := &cobra.Command{
		Use:               "doctor [flags] [TARGET]",
		Short:             "check profile, credentials, keyring, endpoints, policy, target and ssh config",
		Long:              doctorLong,
		Annotations:       map[string]string{annFooter: doctorFooter},
		ValidArgsFunction: completeTarget,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("doctor: want at most one TARGET, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.target = args[0]
			}
			rs := runDoctor(cmd.Context(), *o)
			if o.asJSON {
				if err := doctor.PrintJSON(cmd.OutOrStdout(), rs); err != nil {
					return err
				}
			} else {
				doctor.Print(cmd.OutOrStdout(), rs)
			}
			if !doctor.OK(rs) {
				return doctorFailed(len(rs))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	o.profileFlags.register(fs)
	fs.StringVar(&o.sshConfig, "ssh-config", "", "ssh client configuration `FILE` to check (default ~/.ssh/config)")
	fs.BoolVar(&o.asJSON, "json", false, "print the results as a JSON array of {check, status (pass, fail, skip), detail, fix}")
	o.broker.register(fs)
	completeFlags(cmd)
	return cmd
}

// doctorFailed: some check failed (exit 1); the lines above say which.
type doctorFailed int

func (doctorFailed) Error() string { return "doctor: some checks failed (see above)" }

// doctorRun carries what earlier checks learnt to later ones.
type doctorRun struct {
	o        doctorOptions
	log      *slog.Logger
	b        *broker.Broker
	status   broker.Status
	mintErr  error
	instance string
	cand     target.Candidate
}

func runDoctor(ctx context.Context, o doctorOptions) []doctor.Result {
	d := &doctorRun{o: o, log: slog.New(slog.DiscardHandler)}
	defer func() {
		if d.b != nil {
			d.b.Close()
		}
	}()
	checks := []doctor.Check{
		{Name: "profile and region", Run: d.profileRegion},
		{Name: "keyring", Run: d.keyring},
		{Name: "credentials", Run: d.credentials},
		{Name: "STS", Run: d.sts},
		{Name: "SSM API", Run: func(ctx context.Context) doctor.Result { return d.endpoint(ctx, "SSM", "ssm") }},
		{Name: "message gateway", Run: d.gateway},
	}
	if o.target != "" {
		checks = append(checks, doctor.Check{Name: "target", Run: d.targetCheck})
	}
	checks = append(checks, doctor.Check{Name: "session policy", Run: d.policy})
	if o.target != "" {
		checks = append(checks, doctor.Check{Name: "session", Timeout: time.Minute, Run: d.session})
	}
	checks = append(checks, doctor.Check{Name: "ssh config", Run: d.sshConfig})
	return doctor.Run(ctx, checks)
}

func (d *doctorRun) request() sessionRequest {
	return sessionRequest{target: d.o.target, document: ssm.DocumentSSH, profile: d.o.profile, region: d.o.region,
		broker: d.o.broker, log: d.log, parameters: map[string][]string{"portNumber": {"22"}},
		tuning: sessionTuning{handshakeTimeout: ssm.DefaultHandshakeTimeout, resumeBudget: 3 * time.Second, clientVersion: ssm.DefaultClientVersion}}
}

func (d *doctorRun) profileRegion(ctx context.Context) doctor.Result {
	profile := resolveProfile(ctx, d.o.profile)
	b, err := broker.New(ctx, brokerOptions(profile, d.o.region, d.o.broker, "", nil, d.log, os.Stderr))
	if err != nil {
		return doctor.Failf(fixFor(err, "fix the setting the line names: the region (--region, $AWS_REGION, region= in the profile), the keyring (--keyring-backend), or the profile in ~/.aws/config"), "%v", err)
	}
	d.b = b
	d.status = b.Status(ctx)
	if d.status.Region == "" {
		return doctor.Failf("set --region, $AWS_REGION or region= in the profile", "profile %s has no region", d.status.Profile)
	}
	where := "not in ~/.aws/config (environment or keyring only)"
	if d.status.InConfig {
		where = "in the shared config"
	}
	return doctor.Passf("profile %s (%s), region %s", d.status.Profile, where, d.status.Region)
}

func (d *doctorRun) keyring(ctx context.Context) doctor.Result {
	st, err := openStore(ctx, d.o.broker.keyringBackend, true)
	if err != nil {
		return doctor.Failf("choose a backend that works here with --keyring-backend or $SSMPROXY_KEYRING_BACKEND (file works everywhere)", "%v", err)
	}
	return doctor.Passf("backend %s opens", st.Backend())
}

func (d *doctorRun) credentials(ctx context.Context) doctor.Result {
	if d.b == nil {
		return doctor.Skipf("needs the profile and region")
	}
	d.mintErr = d.b.Prepare(ctx)
	if d.mintErr != nil {
		err := setupFailure(d.mintErr)
		return doctor.Failf(fixFor(err, `run "ssmproxy login" or configure the profile; "ssmproxy creds" shows the sources`), "source %s: %v", orNone(d.status.Source), err)
	}
	d.status = d.b.Status(ctx)
	detail := "source " + orNone(d.status.Source)
	if d.status.RoleARN != "" {
		detail += ", role " + d.status.RoleARN
	}
	for _, e := range d.status.Entries {
		if e.Fresh && e.RoleARN == d.status.RoleARN && e.Target == "" && !e.Lookup {
			detail += fmt.Sprintf(", scoped credentials until %s", e.Expires.Local().Format(time.RFC3339))
			break
		}
	}
	if dl := d.status.Deadline; dl != nil {
		if dl.Known() {
			if left := time.Until(dl.At); left < time.Hour {
				return doctor.Failf(dl.Fix, "%s; hard deadline %s (%s left): %s", detail, dl.At.Local().Format(time.RFC3339), left.Round(time.Minute), dl.What)
			}
			detail += fmt.Sprintf("; hard deadline %s (%s)", dl.At.Local().Format(time.RFC3339), dl.What)
		} else {
			detail += "; hard deadline unknown (" + dl.What + ")"
		}
	} else {
		detail += "; renews itself (no hard deadline)"
	}
	return doctor.Passf("%s", detail)
}

// maxSkew is what SigV4 tolerates; warnSkew is worth saying.
const (
	maxSkew  = 5 * time.Minute
	warnSkew = time.Minute
)

func (d *doctorRun) sts(ctx context.Context) doctor.Result {
	return d.endpoint(ctx, "STS", "sts")
}

// endpointURL is where ssmproxy sends service's calls: the
// AWS_ENDPOINT_URL_<SERVICE> or AWS_ENDPOINT_URL override, else AWS's
// regional endpoint.
func endpointURL(service, region string) (string, bool) {
	for _, k := range []string{"AWS_ENDPOINT_URL_" + strings.ToUpper(service), "AWS_ENDPOINT_URL"} {
		if v := os.Getenv(k); v != "" {
			return v, true
		}
	}
	return fmt.Sprintf("https://%s.%s.amazonaws.com", service, region), false
}

func (d *doctorRun) endpoint(ctx context.Context, name, service string) doctor.Result {
	if d.status.Region == "" {
		return doctor.Skipf("needs the region")
	}
	u, _ := endpointURL(service, d.status.Region)
	p, err := doctor.ProbeEndpoint(ctx, u, time.Now)
	if err != nil {
		return doctor.Failf("check the network path to "+u+" (proxy, VPN, firewall, a VPC endpoint's DNS) and the CA bundle ($AWS_CA_BUNDLE)", "%s: %v", u, err)
	}
	how := p.TLS
	if p.Loopback {
		how = "plain http on loopback"
	}
	detail := fmt.Sprintf("%s reachable (%s)", u, how)
	if service == "sts" {
		if !p.HasDate {
			return doctor.Passf("%s; no Date header, clock not checked", detail)
		}
		skew := p.Skew.Round(time.Second)
		switch {
		case skew > maxSkew || skew < -maxSkew:
			return doctor.Failf("set the clock (NTP): AWS refuses signatures more than 5 minutes off", "%s; this clock is %s AWS's", detail, skewWords(skew))
		case skew > warnSkew || skew < -warnSkew:
			detail += fmt.Sprintf("; this clock is %s AWS's (AWS allows 5 min; fix NTP before it grows)", skewWords(skew))
		default:
			detail += fmt.Sprintf("; clock within %s of AWS's", max(skew, -skew)+time.Second)
		}
	}
	return doctor.Passf("%s", detail)
}

// skewWords: AWS's clock minus ours, in words about ours.
func skewWords(skew time.Duration) string {
	if skew > 0 {
		return skew.String() + " behind"
	}
	return (-skew).String() + " ahead of"
}

func (d *doctorRun) gateway(ctx context.Context) doctor.Result {
	if d.status.Region == "" {
		return doctor.Skipf("needs the region")
	}
	if u, over := endpointURL("ssm", d.status.Region); over {
		if d.o.target != "" {
			return doctor.Skipf("the SSM endpoint is %s: the gateway is wherever StartSession's StreamUrl points; the session check dials it", u)
		}
		return doctor.Skipf("the SSM endpoint is %s: the gateway is wherever StartSession's StreamUrl points; give a TARGET to dial it", u)
	}
	return d.endpoint(ctx, "message gateway", "ssmmessages")
}

func (d *doctorRun) targetCheck(ctx context.Context) doctor.Result {
	if d.b == nil {
		return doctor.Skipf("needs the profile and region")
	}
	q, err := target.Parse(d.o.target)
	if err != nil {
		return doctor.Failf("give an instance id, a Name, tag:KEY=VALUE, a private IPv4 address or DNS name", "%v", err)
	}
	b, finder, err := lookupFinder(ctx, d.request())
	if err != nil {
		return doctor.Failf(fixFor(err, ""), "%v", err)
	}
	defer b.Close()
	f, err := finder(ctx)
	if err != nil {
		return doctor.Failf(fixFor(err, "allow ssm:DescribeInstanceInformation and ec2:DescribeInstances"), "lookup: %v", err)
	}
	if q.Kind != target.KindID {
		cands, err := f.Find(ctx, q)
		if err != nil {
			return doctor.Failf(fixFor(err, "allow ssm:DescribeInstanceInformation and ec2:DescribeInstances"), "lookup: %v", err)
		}
		if _, err := target.Choose(q, cands); err != nil && len(cands) != 1 {
			return doctor.Failf("use the instance id, or a name that matches one instance", "%v", err)
		}
		q = target.Query{Kind: target.KindID, Value: cands[0].ID, Raw: cands[0].ID}
	}
	c, err := f.Describe(ctx, q.Value)
	if err != nil {
		return doctor.Failf(fixFor(err, "allow ssm:DescribeInstanceInformation"), "describe %s: %v", q.Value, err)
	}
	d.instance, d.cand = c.ID, c
	switch c.PingStatus {
	case "Online":
	case target.NotRegistered:
		return doctor.Failf("install and start the SSM agent and give the instance a role with AmazonSSMManagedInstanceCore (or register the node)", "%s is not registered with Systems Manager in %s", c.ID, d.status.Region)
	default:
		return doctor.Failf("start the SSM agent on the instance and check its network path to ssm, ssmmessages and ec2messages", "%s: ping status %s, agent %s", c.ID, c.PingStatus, orNone(c.AgentVersion))
	}
	return doctor.Passf("%s Online, agent %s (%s), platform %s", c.ID, c.AgentVersion, agentMeaning(c.AgentVersion), orNone(c.Platform))
}

// agentMeaning says what an agent version implies for ssmproxy
// (docs/protocol.md 11, 12).
func agentMeaning(v string) string {
	var parts []string
	if wire.VersionGreater(v, "3.0.196.0") {
		parts = append(parts, "forward carries many connections per session (smux)")
	} else {
		parts = append(parts, "forward carries one connection at a time (basic mode, agents up to 3.0.196.0)")
	}
	if !wire.VersionGreater(v, "3.1.1511.0") {
		parts = append(parts, "agent sends smux keepalives")
	}
	return strings.Join(parts, "; ")
}

func (d *doctorRun) policy(ctx context.Context) doctor.Result {
	if d.mintErr != nil || d.b == nil {
		return doctor.Skipf("needs credentials")
	}
	if d.status.RoleARN == "" {
		return doctor.Skipf("no role: the source credentials are used as they are, and their own IAM policies (which ssmproxy cannot read) decide")
	}
	part, account, ok := roleARNParts(d.status.RoleARN)
	if !ok {
		return doctor.Failf("fix role_arn", "role %q is not a role ARN", d.status.RoleARN)
	}
	name := ""
	for _, e := range d.status.Entries {
		if e.RoleSessionName != "" && !e.Lookup {
			name = e.RoleSessionName
			break
		}
	}
	if name == "" {
		return doctor.Skipf("no scoped credentials were minted yet (no role session name to check)")
	}
	inst := d.instance
	scope := broker.Scope{Partition: part, Region: d.status.Region, Account: account, Target: inst, Documents: []string{ssm.DocumentSSH}}
	pol, err := broker.SessionPolicy(scope, name)
	if err != nil {
		return doctor.Failf("shorten the role session name or the document list", "%v", err)
	}
	if inst == "" {
		inst = "i-0123456789abcdef0"
	}
	targetARN := fmt.Sprintf("arn:%s:ec2:%s:%s:instance/%s", part, d.status.Region, account, inst)
	if strings.HasPrefix(inst, "mi-") {
		targetARN = fmt.Sprintf("arn:%s:ssm:%s:%s:managed-instance/%s", part, d.status.Region, account, inst)
	}
	session := fmt.Sprintf("arn:%s:ssm:%s:%s:session/%s-0123456789abcdef0", part, d.status.Region, account, name)
	calls := []doctor.Call{
		{Action: "ssm:StartSession", Resource: targetARN},
		{Action: "ssm:StartSession", Resource: fmt.Sprintf("arn:%s:ssm:%s::document/%s", part, d.status.Region, ssm.DocumentSSH)},
		{Action: "ssm:ResumeSession", Resource: session},
		{Action: "ssm:TerminateSession", Resource: session},
		{Action: "ssmmessages:OpenDataChannel", Resource: session},
	}
	for _, c := range calls {
		ok, err := doctor.Allows(pol, c)
		if err != nil || !ok {
			return doctor.Failf("report this: ssmproxy's own session policy is wrong", "the session policy does not allow %s on %s (%v)", c.Action, c.Resource, err)
		}
	}
	// Nothing broader: another instance, another user's session.
	other := doctor.Call{Action: "ssm:TerminateSession", Resource: fmt.Sprintf("arn:%s:ssm:%s:%s:session/someone-else-0123", part, d.status.Region, account)}
	if ok, _ := doctor.Allows(pol, other); ok {
		return doctor.Failf("report this: ssmproxy's own session policy is too broad", "the session policy allows terminating other users' sessions")
	}
	return doctor.Passf("%d-character policy allows StartSession on %s with %s, Resume/Terminate/OpenDataChannel on %s-* sessions, nothing else", len(pol), inst, ssm.DocumentSSH, name)
}

// roleARNParts: arn:PARTITION:iam::ACCOUNT:role/NAME.
func roleARNParts(arn string) (partition, account string, ok bool) {
	f := strings.SplitN(arn, ":", 6)
	if len(f) != 6 || f[0] != "arn" || f[2] != "iam" || !strings.HasPrefix(f[5], "role/") {
		return "", "", false
	}
	return f[1], f[4], true
}

func (d *doctorRun) session(ctx context.Context) doctor.Result {
	if d.instance == "" || d.cand.PingStatus != "Online" || d.mintErr != nil {
		return doctor.Skipf("needs credentials and an Online target")
	}
	req := d.request()
	req.target = d.instance
	start := time.Now()
	s, err := openSession(ctx, req)
	if err != nil {
		return doctor.Failf(fixFor(err, "see the line above; ssmproxy connect -v shows more"), "%v", err)
	}
	took := time.Since(start).Round(time.Millisecond)
	agent := s.AgentVersion()
	_ = s.Close()
	s.release()
	return doctor.Passf("StartSession, data channel and handshake with agent %s in %s; terminated", agent, took)
}

func (d *doctorRun) sshConfig(ctx context.Context) doctor.Result {
	home, _ := os.UserHomeDir()
	sshDir := filepath.Join(home, ".ssh")
	file := d.o.sshConfig
	if file == "" {
		file = filepath.Join(sshDir, "config")
	}
	host := d.o.target
	if host == "" {
		host = "i-0123456789abcdef0"
	}
	cmd, line, notes, err := doctor.ProxyCommandFor(file, sshDir, host)
	fix := fmt.Sprintf("add to %s:  Host i-* mi-*  ProxyCommand ssmproxy connect %%h %%p  (or run ssmproxy ssh-config)", file)
	if err != nil {
		return doctor.Failf(fix, "%v", err)
	}
	if cmd == "" {
		return doctor.Failf(fix, "no ProxyCommand applies to %s in %s", host, file)
	}
	if !strings.Contains(cmd, "ssmproxy") || !strings.Contains(cmd, " connect") {
		return doctor.Failf(fix+"; ssh uses the first ProxyCommand that applies", "%s gives %s the ProxyCommand %q (%s), not ssmproxy connect", file, host, cmd, line)
	}
	detail := fmt.Sprintf("%s: %q gives %s %q", file, line, host, cmd)
	if len(notes) > 0 {
		detail += " (" + strings.Join(notes, "; ") + ")"
	}
	return doctor.Passf("%s", detail)
}

// fixFor is the fix for an error of a known class, else def.
func fixFor(err error, def string) string {
	switch exitCode(err) {
	case exitCredentials:
		return `run "ssmproxy login", or refresh the profile's source (aws sso login, ...); "ssmproxy creds" shows where credentials come from`
	case exitAccessDenied:
		return "grant the missing permission (examples/iam-user-policy.json) or fix the role's trust policy"
	case exitChannelLost:
		return "check the network path to AWS (proxy, VPN, firewall) and the endpoint overrides"
	case exitUsage:
		if def != "" {
			return def
		}
		return "fix the setting named above"
	}
	return def
}

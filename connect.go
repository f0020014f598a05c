package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/ssmproxy/ssmproxy/internal/coalesce"
	"github.com/ssmproxy/ssmproxy/proxy"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
	"github.com/ssmproxy/ssmproxy/trace"
)

const connectLong = `Opens a Session Manager session to TARGET with the AWS-StartSSHSession
document and carries stdin/stdout over it to PORT (default 22) on the
instance. Meant as ssh's ProxyCommand:

  Host i-* mi-* web-* 10.0.*
      ProxyCommand ssmproxy connect %h %p

TARGET is one of:
  i-0123456789abcdef0, mi-...   an instance id (no lookup)
  web-1, name:web-1             the Name tag (a hybrid node's Name too)
  tag:KEY=VALUE                 a tag
  10.0.1.23                     a private IPv4 address
  ip-10-0-1-23.ec2.internal     a private DNS name (any word with a dot)
Lookups use ssm:DescribeInstanceInformation and ec2:DescribeInstances with
read-only credentials of their own, and are cached for 30 s. Exactly one
match with an Online agent connects; none or several exit 2 and list the
candidates (id, name, ping status, agent version), never a guess.

Nothing but the instance's bytes is ever written to stdout. Diagnostics go
to stderr only on failure (one line), more with -v, or to --log-file.

When stdin ends, ssmproxy waits (up to 5 s) until everything sent has been
acknowledged, passes on the instance's output until it has been quiet for
1 s (at most 10 s), then terminates the session and exits 0. When the
instance closes the connection, it writes out everything received and exits 0.
When stdout is closed by its reader (ssh exited), it terminates the session
and exits 0 as well.

Credentials come from ssmproxy's credential broker: it mints short-lived
credentials scoped to this instance, this document and your own sessions
(AssumeRole with a session policy, when a role is configured), shares them
with every other ssmproxy process through a cache, and re-mints them ahead of
expiry, so a session lives as long as its source of credentials, not one
hour. See "ssmproxy help creds" and "ssmproxy help login".
`

// connectFooter follows the flags in "ssmproxy help connect".
const connectFooter = `Endpoints:
  AWS_ENDPOINT_URL_SSM     redirects the SSM API (AWS_ENDPOINT_URL_STS: STS;
                           AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT: the key push; AWS_ENDPOINT_URL: all);
                           plain http:// endpoints are accepted only on loopback

Exit codes:
  0  success: stdin ended or stdout was closed and the session was terminated,
     or the instance closed it
  2  usage error, or a credential setting that cannot work (role ARN, durations);
     or TARGET matched no instance or several (the candidates are listed);
     or a port-forwarding document (type LocalPortForwarding) without --via;
     or --push-key without --user, without a usable public key, to a managed node (mi-),
     or with --via
  3  credentials missing, refused or expired
  4  access denied (IAM), including STS refusing to assume the role (trust policy, MFA),
     and EC2 Instance Connect refusing the key push
  5  the instance is not connected to Session Manager (also: the one match of a
     name is not Online); with --push-key, also an instance EC2 Instance Connect
     does not find or that is not running
  6  the service refused the request (unknown document, bad parameters, ...)
  7  the data channel was lost and could not be resumed, or never completed its handshake;
     or AWS (STS) could not be reached; or the service returned a StreamUrl outside its own
     domain (or the endpoint override's host), and the session is then terminated;
     or the agent sent nothing for 3 min while data waited for its ack (no progress);
     or, with --via, the instance could not connect to HOST:PORT (ConnectToPortError)
  8  the service ended the session while disconnected (idle timeout, terminated)
  1  unexpected internal error, or gave up waiting for another ssmproxy process's
     credentials lock; 128+N when stopped by signal N
`

type connectOptions struct {
	profile, region, document, reason, logFile, clientVersion string
	verbosity                                                 int
	handshakeTimeout, resumeBudget                            time.Duration
	// readCoalesce: --read-coalesce, 0 for off (internal/coalesce).
	readCoalesce time.Duration
	signDial     bool
	target, port string
	// via: an instance that has an agent; target is then a host the
	// instance reaches (…ToRemoteHost, one smux stream).
	via string
	// traceFile: --trace; tracer records into it once opened (cmd_trace.go).
	traceFile string
	tracer    *trace.Recorder
	broker    brokerFlags
	pushKey   pushKeyFlag
	user      string
}

// newConnectCmd: ssmproxy connect [flags] TARGET [PORT].
func newConnectCmd(run func(context.Context, connectOptions) error) *cobra.Command {
	o := &connectOptions{}
	cmd := &cobra.Command{
		Use:   "connect [flags] TARGET [PORT]",
		Short: "carry stdin/stdout to TARGET:PORT (ssh ProxyCommand)",
		Long:  connectLong,
		Annotations: map[string]string{
			annUsage:  "ssmproxy connect --via INSTANCE [flags] HOST [PORT]",
			annFooter: connectFooter,
		},
		ValidArgsFunction: completeTarget,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(args); err != nil {
				return err
			}
			return run(cmd.Context(), *o)
		},
	}
	o.define(cmd.Flags())
	completeFlags(cmd)
	return cmd
}

// define registers connect's flags.
func (o *connectOptions) define(fs *pflag.FlagSet) {
	fs.StringVar(&o.document, "document", ssm.DocumentSSH, "session document `NAME`; port-forwarding documents (type LocalPortForwarding) are refused: use --via or \"ssmproxy forward\"")
	fs.StringVar(&o.via, "via", "", "reach HOST:PORT, a host without an agent, through `INSTANCE` (any TARGET form; AWS-StartPortForwardingSessionToRemoteHost, one smux stream), e.g. ProxyCommand ssmproxy connect --via i-0123456789abcdef0 %h %p")
	fs.Var(&o.pushKey, "push-key", "(or --push-key=PUBKEY, note the =) before the session, push a public key for 60 s with EC2 Instance Connect (SendSSHPublicKey), so the instance needs no key of yours. PUBKEY is a .pub file; default: the first of ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub, else the first key in ssh-agent. Private keys are never read. EC2 instances only (not mi-). The scoped credentials then allow exactly that push, to this instance, for USER: ProxyCommand ssmproxy connect --push-key --user %r %h %p")
	fs.Lookup("push-key").NoOptDefVal = pushKeyDefault
	fs.StringVar(&o.user, "user", "", "instance login name the key is pushed for (required with --push-key)")
	o.registerSession(fs)
}

// parseConnect parses a connect command line as "ssmproxy connect" does,
// without running it.
func parseConnect(args []string) (o connectOptions, err error) {
	err = parseWith(newConnectCmd(func(_ context.Context, got connectOptions) error { o = got; return nil }), args)
	return o, err
}

// countFlag is -v: each use adds one (-v -v, -vv).
type countFlag struct{ n *int }

func (c countFlag) String() string { return "" }
func (c countFlag) Type() string   { return "bool" } // no value shown in help
func (c countFlag) Set(v string) error {
	if v == "true" {
		*c.n++
	} else if v != "false" {
		return fmt.Errorf("-v takes no value")
	}
	return nil
}

// check validates the options and takes the positional arguments.
func (o *connectOptions) check(pos []string) error {
	if err := pushKeyPathHint(o.pushKey, pos); err != nil {
		return err
	}
	switch len(pos) {
	case 1:
		o.target, o.port = pos[0], "22"
	case 2:
		o.target, o.port = pos[0], pos[1]
	default:
		return usagef("connect: want TARGET [PORT], got %d arguments (see ssmproxy help connect)", len(pos))
	}
	if p, err := strconv.Atoi(o.port); err != nil || p < 1 || p > 65535 || strings.HasPrefix(o.port, "0") {
		return usagef("connect: port %q is not a number from 1 to 65535", o.port)
	}
	if o.via != "" {
		if o.document != ssm.DocumentSSH {
			return usagef("connect: --via uses %s; --document cannot be combined with it", ssm.DocumentPortForwardingToRemote)
		}
		if !validDestHost(o.target) {
			return usagef("connect: --via: host %q is not a host name or IP address", o.target)
		}
		if o.pushKey.set {
			// The key would go to the --via instance, not to HOST, which
			// has no agent and no Instance Connect through it.
			return usagef("connect: --push-key cannot be combined with --via (the key would go to %s, not to %s)", o.via, o.target)
		}
		o.document = ssm.DocumentPortForwardingToRemote
	} else if ssm.IsPortForwardingDocument(o.document) {
		// Refused before any AWS call; a custom document of the same type
		// is refused in the handshake (docs/protocol.md 11.1).
		return &ssm.PortForwardingError{Document: o.document}
	}
	if err := o.checkSession("connect"); err != nil {
		return err
	}
	return checkPushKeyFlags(o.pushKey, o.user)
}

// coalesceSetting turns --read-coalesce (0: off) into the setting of
// ssm.Config and proxy.StdioOptions (0: the default, negative: off).
func coalesceSetting(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// checkSession validates the flags every session-opening command takes.
func (o *connectOptions) checkSession(cmd string) error {
	if !wire.ValidClientVersion(o.clientVersion) {
		return usagef("%s: --client-version %q must be a four-part version above 1.2.331.0", cmd, o.clientVersion)
	}
	if o.handshakeTimeout <= 0 || o.resumeBudget <= 0 {
		return usagef("%s: durations must be positive", cmd)
	}
	if o.readCoalesce < 0 || o.readCoalesce > coalesce.MaxInterval {
		return usagef("%s: --read-coalesce %s must be between 0 (off) and %s", cmd, o.readCoalesce, coalesce.MaxInterval)
	}
	return nil
}

func runConnect(ctx context.Context, o connectOptions) error {
	rec, stopTrace, err := openTrace(o.traceFile)
	if err != nil {
		return err
	}
	defer stopTrace()
	o.tracer = rec
	// stdin and stdout are the SSH stream. Keep them for the data path and
	// point os.Stdin/os.Stdout elsewhere, so no library, prompt or child
	// process can read or write the stream.
	stdin, stdout := os.Stdin, os.Stdout
	if devnull, err := os.Open(os.DevNull); err == nil {
		os.Stdin = devnull
	}
	os.Stdout = os.Stderr

	tuneRuntime()
	log, closeLog, err := newLogger(o.verbosity, o.logFile)
	if err != nil {
		return usagef("%v", err)
	}
	defer closeLog()

	if o.via != "" {
		return connectVia(ctx, o, stdin, stdout, log)
	}
	req := o.sessionRequest(log, nil)
	req.parameters = map[string][]string{"portNumber": {o.port}}
	if o.pushKey.set {
		// Before any AWS call: a missing key is a usage error (exit 2).
		home, _ := os.UserHomeDir()
		key, err := findPublicKey(o.pushKey.path, home, os.Getenv("SSH_AUTH_SOCK"))
		if err != nil {
			return err
		}
		req.pushKeyUser = o.user
		req.hooks = append(req.hooks, pushKeyHook(o.user, key, log))
	}
	sess, err := openSession(ctx, req)
	if err != nil {
		return err
	}
	defer sess.release()
	log.Info("connected", "session", sess.ID(), "target", sess.Instance, "port", o.port, "agentVersion", sess.AgentVersion())
	err = proxy.Stdio(ctx, sess.Session, stdin, stdout, proxy.StdioOptions{Log: log, ReadCoalesce: coalesceSetting(o.readCoalesce)})
	st := sess.Stats()
	log.Info("session over", "session", sess.ID(), "bytesIn", st.BytesIn, "bytesOut", st.BytesOut,
		"reconnects", st.Reconnects, "retransmits", st.Sender.Retransmits)
	if closed, reason := sess.ClosedByPeer(); closed && reason != "" && err == nil {
		log.Info("the service closed the session", "reason", reason)
	}
	return sessionFailure(err)
}

// connectVia carries stdin/stdout to HOST:PORT as the --via instance
// reaches it: a …ToRemoteHost session in mux mode, one smux stream
// (docs/protocol.md 11.4, 12).
func connectVia(ctx context.Context, o connectOptions, stdin io.Reader, stdout io.Writer, log *slog.Logger) error {
	host := o.target
	o.target = o.via
	t, err := prepareTarget(ctx, o.sessionRequest(log, nil))
	if err != nil {
		return err
	}
	defer t.release()
	var refused atomic.Bool
	sess, err := t.start(ctx, sessionSpec{
		document:       o.document,
		parameters:     map[string][]string{"host": {host}, "portNumber": {o.port}},
		portForwarding: true,
		onFlag: func(f wire.Flag) {
			if f == wire.FlagConnectToPortError {
				refused.Store(true)
			}
		},
	})
	if err != nil {
		return err
	}
	log.Info("connected", "session", sess.ID(), "via", t.InstanceID, "host", host, "port", o.port,
		"agentVersion", sess.AgentVersion(), "mux", sess.Mux())
	via, err := proxy.OpenViaStream(sess)
	if err != nil {
		_ = sess.Close()
		return err
	}
	err = proxy.Stdio(ctx, via, stdin, stdout, proxy.StdioOptions{Log: log, ReadCoalesce: coalesceSetting(o.readCoalesce)})
	if err == nil && refused.Load() {
		return &unreachableError{instance: t.InstanceID, dest: net.JoinHostPort(host, o.port)}
	}
	return sessionFailure(err)
}

// unreachableError: the instance could not connect to the destination of
// a --via connection (ConnectToPortError, docs/protocol.md 11.4).
type unreachableError struct{ instance, dest string }

func (e *unreachableError) Error() string {
	return fmt.Sprintf("the instance %s could not connect to %s (ConnectToPortError): check the host, the port and the security groups between them", e.instance, e.dest)
}

// registerSession registers the flags every session-opening command takes
// (connect, forward): where to log, the data channel's tuning, and the
// credential flags.
func (o *connectOptions) registerSession(fs *pflag.FlagSet) {
	fs.StringVar(&o.profile, "profile", "", "AWS profile (default: $AWS_PROFILE, else the default chain)")
	fs.StringVar(&o.region, "region", "", "AWS region (default: $AWS_REGION, else the profile's)")
	fs.StringVar(&o.reason, "reason", "", "session reason shown in Session Manager history")
	fs.StringVar(&o.logFile, "log-file", "", "write diagnostics to `PATH` (created 0600)")
	fs.StringVar(&o.traceFile, "trace", "", "flight recorder: write protocol events (frame headers, acks, reconnects, resumes, credential refreshes; never data or secrets) to `FILE` as JSON lines (0600); read it with \"ssmproxy trace FILE\"")
	fs.VarPF(countFlag{&o.verbosity}, "verbose", "v", "verbose diagnostics on stderr (-v -v: debug)").NoOptDefVal = "true"
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", ssm.DefaultHandshakeTimeout, "give up if the agent has not completed the handshake in this time")
	fs.DurationVar(&o.resumeBudget, "resume-budget", ssm.DefaultResumeBudget, "how long to keep trying to resume a lost data channel")
	fs.BoolVar(&o.signDial, "sign-dial", false, "sign every data-channel websocket upgrade with SigV4")
	fs.StringVar(&o.clientVersion, "client-version", ssm.DefaultClientVersion, "ClientVersion reported to the agent (must be above 1.2.331.0)")
	fs.DurationVar(&o.readCoalesce, "read-coalesce", coalesce.DefaultInterval, "while data streams one way only, read it at most this often (fewer wakeups per message; 0: read every message at once)")
	o.broker.register(fs)
}

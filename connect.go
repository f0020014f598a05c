package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ssmproxy/ssmproxy/proxy"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

const connectHelp = `Usage: ssmproxy connect [flags] TARGET [PORT]
       ssmproxy connect --via INSTANCE [flags] HOST [PORT]

Opens a Session Manager session to TARGET with the AWS-StartSSHSession
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

Flags:
  --profile NAME           AWS profile (default: AWS_PROFILE / default chain)
  --region REGION          AWS region (default: AWS_REGION / profile)
  --document NAME          session document (default AWS-StartSSHSession); port-forwarding
                           documents (type LocalPortForwarding) are refused: use --via or
                           "ssmproxy forward"
  --via INSTANCE           reach HOST:PORT, a host without an agent, through INSTANCE (any
                           TARGET form)
                           (AWS-StartPortForwardingSessionToRemoteHost, one smux stream):
                             Host 10.0.* db-*
                                 ProxyCommand ssmproxy connect --via i-0123456789abcdef0 %h %p
  --reason TEXT            session reason shown in Session Manager history
  --log-file PATH          write diagnostics to PATH (created 0600)
  -v                       verbose diagnostics on stderr (-v -v: debug)
  --handshake-timeout D    give up if the agent has not completed the handshake (default 30s)
  --resume-budget D        how long to keep trying to resume a lost data channel (default 5m)
  --sign-dial              sign every data-channel websocket upgrade with SigV4 (off by default)
  --client-version V       ClientVersion reported to the agent (default 1.2.804.0; must be > 1.2.331.0)
  --push-key[=PUBKEY]      before the session, push a public key for 60 s with EC2 Instance Connect
                           (SendSSHPublicKey), so the instance needs no key of yours. PUBKEY is a .pub
                           file (note the =); default: the first of ~/.ssh/id_ed25519.pub, id_ecdsa.pub,
                           id_rsa.pub, else the first key in ssh-agent. Private keys are never read.
                           EC2 instances only (not mi-). The scoped credentials then allow exactly
                           that push, to this instance, for USER. In ssh_config:
                             ProxyCommand ssmproxy connect --push-key --user %r %h %p
  --user USER              the instance login name the key is pushed for (required with --push-key)

` + brokerHelp + `  AWS_ENDPOINT_URL_SSM     redirects the SSM API (AWS_ENDPOINT_URL_STS: STS;
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
	signDial                                                  bool
	target, port                                              string
	// via: an instance that has an agent; target is then a host the
	// instance reaches (…ToRemoteHost, one smux stream).
	via     string
	broker  brokerFlags
	pushKey pushKeyFlag
	user    string
}

type countFlag struct{ n *int }

func (c countFlag) String() string   { return "" }
func (c countFlag) IsBoolFlag() bool { return true }
func (c countFlag) Set(v string) error {
	if v == "true" {
		*c.n++
	} else if v != "false" {
		return fmt.Errorf("-v takes no value")
	}
	return nil
}

func parseConnect(args []string) (connectOptions, error) {
	o := connectOptions{document: ssm.DocumentSSH}
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.document, "document", ssm.DocumentSSH, "")
	o.registerSession(fs)
	fs.StringVar(&o.via, "via", "", "")
	fs.Var(&o.pushKey, "push-key", "")
	fs.StringVar(&o.user, "user", "", "")
	pos, err := parseInterleaved(fs, args, connectHelp)
	if err != nil {
		return o, err
	}
	if err := pushKeyPathHint(o.pushKey, pos); err != nil {
		return o, err
	}
	switch len(pos) {
	case 1:
		o.target, o.port = pos[0], "22"
	case 2:
		o.target, o.port = pos[0], pos[1]
	default:
		return o, usagef("connect: want TARGET [PORT], got %d arguments (see ssmproxy help connect)", len(pos))
	}
	if p, err := strconv.Atoi(o.port); err != nil || p < 1 || p > 65535 || strings.HasPrefix(o.port, "0") {
		return o, usagef("connect: port %q is not a number from 1 to 65535", o.port)
	}
	if o.via != "" {
		if o.document != ssm.DocumentSSH {
			return o, usagef("connect: --via uses %s; --document cannot be combined with it", ssm.DocumentPortForwardingToRemote)
		}
		if !validDestHost(o.target) {
			return o, usagef("connect: --via: host %q is not a host name or IP address", o.target)
		}
		if o.pushKey.set {
			// The key would go to the --via instance, not to HOST, which
			// has no agent and no Instance Connect through it.
			return o, usagef("connect: --push-key cannot be combined with --via (the key would go to %s, not to %s)", o.via, o.target)
		}
		o.document = ssm.DocumentPortForwardingToRemote
	} else if ssm.IsPortForwardingDocument(o.document) {
		// Refused before any AWS call; a custom document of the same type
		// is refused in the handshake (docs/protocol.md 11.1).
		return o, &ssm.PortForwardingError{Document: o.document}
	}
	if !wire.ValidClientVersion(o.clientVersion) {
		return o, usagef("connect: --client-version %q must be a four-part version above 1.2.331.0", o.clientVersion)
	}
	if o.handshakeTimeout <= 0 || o.resumeBudget <= 0 {
		return o, usagef("connect: durations must be positive")
	}
	if err := checkPushKeyFlags(o.pushKey, o.user); err != nil {
		return o, err
	}
	return o, nil
}

func cmdConnect(ctx context.Context, args []string) error {
	o, err := parseConnect(args)
	if err != nil {
		return err
	}
	// stdin and stdout are the SSH stream. Keep them for the data path and
	// point os.Stdin/os.Stdout elsewhere, so no library, prompt or child
	// process can read or write the stream.
	stdin, stdout := os.Stdin, os.Stdout
	if devnull, err := os.Open(os.DevNull); err == nil {
		os.Stdin = devnull
	}
	os.Stdout = os.Stderr

	tuneGC()
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
	err = proxy.Stdio(ctx, sess.Session, stdin, stdout, proxy.StdioOptions{Log: log})
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
	err = proxy.Stdio(ctx, via, stdin, stdout, proxy.StdioOptions{Log: log})
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
// (connect, forward): where to log, and the data channel's tuning.
func (o *connectOptions) registerSession(fs *flag.FlagSet) {
	fs.StringVar(&o.profile, "profile", "", "")
	fs.StringVar(&o.region, "region", "", "")
	fs.StringVar(&o.reason, "reason", "", "")
	fs.StringVar(&o.logFile, "log-file", "", "")
	fs.StringVar(&o.clientVersion, "client-version", ssm.DefaultClientVersion, "")
	fs.Var(countFlag{&o.verbosity}, "v", "")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", ssm.DefaultHandshakeTimeout, "")
	fs.DurationVar(&o.resumeBudget, "resume-budget", ssm.DefaultResumeBudget, "")
	fs.BoolVar(&o.signDial, "sign-dial", false, "")
	o.broker.register(fs)
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, which it returns; -h prints help.
func parseInterleaved(fs *flag.FlagSet, args []string, help string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				_, _ = io.WriteString(os.Stderr, help)
				return nil, errHelpShown
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

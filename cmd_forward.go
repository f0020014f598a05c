package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/proxy"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

const forwardHelp = `Usage: ssmproxy forward [flags] TARGET -L [BIND:]LPORT:HOST:RPORT [-L ...] [-D [BIND:]PORT]

Forwards local TCP ports (or unix sockets) through Session Manager port
sessions, without sshd on the instance. TARGET takes every form connect
takes: an instance id, a name, tag:KEY=VALUE, a private address or DNS name.

  ssmproxy forward i-0123456789abcdef0 -L 5432:db.internal:5432
  ssmproxy forward i-0123456789abcdef0 -L 8080:localhost:80 -L 0:10.0.1.5:443
  ssmproxy forward i-0123456789abcdef0 -D 1080

-L [BIND:]LPORT:HOST:RPORT (ssh's syntax; repeatable)
    listen on BIND:LPORT (BIND default 127.0.0.1; LPORT 0 picks a free
    port) and carry each connection to HOST:RPORT as the instance sees it.
    HOST localhost is the instance itself (AWS-StartPortForwardingSession);
    any other host is dialled by the instance
    (AWS-StartPortForwardingSessionToRemoteHost). unix:PATH instead of
    [BIND:]LPORT listens on a unix socket (mode 0600).
-D [BIND:]PORT
    a SOCKS5 proxy (CONNECT, no authentication): each destination host:port
    gets its own ...ToRemoteHost session, started on first use.

Each -L has its own session, started before its listener reports ready;
every session shares one credential broker. Sessions carry many
connections at once (smux, agents newer than 3.0.196.0) or one at a time
(older agents). They resume through network losses, the service's hourly
data-channel recycling and credential rotations without dropping open
connections; a session the service ended is replaced on the next
connection. Ctrl-C or SIGTERM closes the listeners, terminates every
session and exits 0.

When ready, one line per listener goes to stderr, e.g.
  listening on 127.0.0.1:5432 → db.internal:5432 via i-0123456789abcdef0
Binding to a non-loopback address prints a warning: anyone who can reach it
can reach the destination.

Flags:
  -L SPEC                  a local forward (repeatable)
  -D SPEC                  a SOCKS5 listener (repeatable)
  --quiet                  no "listening on" lines
  --profile NAME           AWS profile (default: AWS_PROFILE / default chain)
  --region REGION          AWS region (default: AWS_REGION / profile)
  --reason TEXT            session reason shown in Session Manager history
  --log-file PATH          write diagnostics to PATH (created 0600)
  -v                       verbose diagnostics on stderr (-v -v: debug)
  --handshake-timeout D    give up if the agent has not completed the handshake (default 30s)
  --resume-budget D        how long to keep trying to resume a lost data channel (default 5m)
  --sign-dial              sign every data-channel websocket upgrade with SigV4
  --client-version V       ClientVersion reported to the agent (default 1.2.804.0; must be > 1.2.331.0)

` + brokerHelp + `
Exit codes: 0 after Ctrl-C/SIGTERM; 2 bad arguments or a listener that
cannot bind; otherwise as "ssmproxy help connect" for the first sessions.
`

type forwardOptions struct {
	connectOptions
	locals  []localForward
	dynamic []listenSpec
	quiet   bool
}

type specList struct {
	add func(string) error
}

func (s specList) String() string     { return "" }
func (s specList) Set(v string) error { return s.add(v) }

func parseForward(args []string) (forwardOptions, error) {
	o := forwardOptions{}
	fs := flag.NewFlagSet("forward", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.registerSession(fs)
	fs.BoolVar(&o.quiet, "quiet", false, "")
	// A bad -L or -D is reported in its own words, not in the flag
	// package's "invalid value" wrapper.
	var specErr error
	fs.Var(specList{func(v string) error {
		lf, err := parseLocalForward(v)
		o.locals = append(o.locals, lf)
		specErr = cmp.Or(specErr, err)
		return nil
	}}, "L", "")
	fs.Var(specList{func(v string) error {
		l, err := parseDynamic(v)
		o.dynamic = append(o.dynamic, l)
		specErr = cmp.Or(specErr, err)
		return nil
	}}, "D", "")
	pos, err := parseInterleaved(fs, args, forwardHelp)
	if err != nil {
		return o, err
	}
	if specErr != nil {
		return o, specErr
	}
	if len(pos) != 1 {
		return o, usagef("forward: want one TARGET, got %d arguments (see ssmproxy help forward)", len(pos))
	}
	o.target = pos[0]
	if len(o.locals) == 0 && len(o.dynamic) == 0 {
		return o, usagef("forward: nothing to forward: give at least one -L or -D")
	}
	if !wire.ValidClientVersion(o.clientVersion) {
		return o, usagef("forward: --client-version %q must be a four-part version above 1.2.331.0", o.clientVersion)
	}
	if o.handshakeTimeout <= 0 || o.resumeBudget <= 0 {
		return o, usagef("forward: durations must be positive")
	}
	seen := map[listenSpec]bool{}
	for _, l := range o.listens() {
		if seen[l] && !strings.HasSuffix(l.address, ":0") {
			return o, usagef("forward: %s is given twice", l)
		}
		seen[l] = true
	}
	return o, nil
}

func (o forwardOptions) listens() []listenSpec {
	var ls []listenSpec
	for _, lf := range o.locals {
		ls = append(ls, lf.listen)
	}
	return append(ls, o.dynamic...)
}

// documents are the session documents this forward may start.
func (o forwardOptions) documents() []string {
	set := map[string]bool{}
	for _, lf := range o.locals {
		set[forwardDocument(lf.dest)] = true
	}
	if len(o.dynamic) > 0 {
		set[ssm.DocumentPortForwardingToRemote] = true
	}
	var docs []string
	for d := range set {
		docs = append(docs, d)
	}
	return docs
}

// forwardDocument: the instance itself, or a host the instance dials.
func forwardDocument(d proxy.Destination) string {
	if d.Host == "" {
		return ssm.DocumentPortForwarding
	}
	return ssm.DocumentPortForwardingToRemote
}

// forwardParameters are the document parameters for d.
func forwardParameters(d proxy.Destination) map[string][]string {
	p := map[string][]string{"portNumber": {strconv.Itoa(d.Port)}}
	if d.Host != "" {
		p["host"] = []string{d.Host}
	}
	return p
}

func cmdForward(ctx context.Context, args []string) error {
	o, err := parseForward(args)
	if err != nil {
		return err
	}
	tuneGC()
	log, closeLog, err := newLoggerAt(slog.LevelWarn, o.verbosity, o.logFile)
	if err != nil {
		return usagef("%v", err)
	}
	defer closeLog()

	// Bind first: a port in use is the user's to fix, before any AWS call.
	listeners, err := bindAll(o.listens())
	if err != nil {
		return err
	}
	defer closeListeners(listeners)

	t, err := prepareTarget(ctx, o.sessionRequest(log, o.documents()))
	if err != nil {
		return err
	}
	defer t.release()
	fwd, err := proxy.NewForwarder(forwardOpener(t), proxy.ForwardOptions{Log: log})
	if err != nil {
		return err
	}
	defer fwd.Close()

	// Each -L's session starts before its listener reports ready, so that
	// a refused document or an offline instance fails the command.
	for _, lf := range o.locals {
		if err := fwd.Open(ctx, lf.dest); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	serveErr := make(chan error, len(listeners))
	for i, ln := range listeners {
		var serve func() error
		var to string
		if i < len(o.locals) {
			dest := o.locals[i].dest
			to = dest.String()
			if !fwd.Mux(dest) {
				to += " (one connection at a time: the agent is too old for smux)"
			}
			serve = func() error { return fwd.Serve(ctx, ln, dest) }
		} else {
			to = "SOCKS5"
			serve = func() error { return fwd.ServeSOCKS(ctx, ln) }
		}
		if !o.quiet {
			fmt.Fprintf(os.Stderr, "listening on %s → %s via %s\n", listenerName(ln), to, t.InstanceID)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serve(); err != nil {
				serveErr <- err
			}
		}()
	}
	select {
	case <-ctx.Done():
		err = nil
	case err = <-serveErr:
	}
	closeListeners(listeners)
	fwd.Close()
	wg.Wait()
	return err
}

// forwardOpener starts one port session per destination on the scoped
// target.
func forwardOpener(t *scopedTarget) proxy.OpenFunc {
	return func(ctx context.Context, dest proxy.Destination, onFlag func(wire.Flag)) (proxy.PortSession, error) {
		return t.start(ctx, sessionSpec{
			document:       forwardDocument(dest),
			parameters:     forwardParameters(dest),
			portForwarding: true,
			onFlag:         onFlag,
		})
	}
}

func (o connectOptions) sessionRequest(log *slog.Logger, docs []string) sessionRequest {
	return sessionRequest{
		target:         o.target,
		document:       o.document,
		scopeDocuments: docs,
		reason:         o.reason,
		profile:        o.profile,
		region:         o.region,
		broker:         o.broker,
		tuning: sessionTuning{handshakeTimeout: o.handshakeTimeout, resumeBudget: o.resumeBudget,
			signDial: o.signDial, clientVersion: o.clientVersion},
		log: log,
	}
}

// bindAll opens every listener, or none: the first failure closes the
// others and is a usage error naming the address.
func bindAll(specs []listenSpec) ([]net.Listener, error) {
	var ls []net.Listener
	for _, s := range specs {
		ln, err := bind(s)
		if err != nil {
			closeListeners(ls)
			return nil, usagef("forward: cannot listen on %s: %v", s, unwrapSyscall(err))
		}
		if !s.loopback() {
			fmt.Fprintf(os.Stderr, "ssmproxy: warning: %s is not a loopback address: anyone who can reach it can reach the destination\n", s)
		}
		ls = append(ls, ln)
	}
	return ls, nil
}

// bind listens on s; a unix socket is created with mode 0600 and a stale
// socket file left by a dead process is replaced, anything else at the path
// is refused.
func bind(s listenSpec) (net.Listener, error) {
	if s.network != "unix" {
		return net.Listen("tcp", s.address)
	}
	if fi, err := os.Lstat(s.address); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", s.address)
		}
		if c, err := net.DialTimeout("unix", s.address, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another process is listening on %s", s.address)
		}
		if err := os.Remove(s.address); err != nil {
			return nil, err
		}
	}
	ln, err := listenUnixPrivate(s.address)
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	return ln, nil
}

func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

func closeListeners(ls []net.Listener) {
	for _, ln := range ls {
		_ = ln.Close()
	}
}

func listenerName(ln net.Listener) string {
	if ln.Addr().Network() == "unix" {
		return "unix:" + ln.Addr().String()
	}
	return ln.Addr().String()
}

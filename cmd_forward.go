package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/ssmproxy/ssmproxy/proxy"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

const forwardLong = `Forwards local TCP ports (or unix sockets) through Session Manager port
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
`

const forwardFooter = `Exit codes: 0 after Ctrl-C/SIGTERM; 2 bad arguments or a listener that
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
func (s specList) Type() string       { return "SPEC" }

// newForwardCmd: ssmproxy forward TARGET -L ... -D ....
func newForwardCmd(run func(context.Context, forwardOptions) error) *cobra.Command {
	o := &forwardOptions{}
	var specErr error
	cmd := &cobra.Command{
		Use:               "forward [flags] TARGET -L [BIND:]LPORT:HOST:RPORT [-L ...] [-D [BIND:]PORT]",
		Short:             "forward local ports through the instance, no sshd needed",
		Long:              forwardLong,
		Annotations:       map[string]string{annFooter: forwardFooter},
		ValidArgsFunction: completeTarget,
		RunE: func(cmd *cobra.Command, args []string) error {
			if specErr != nil {
				return specErr
			}
			if err := o.check(args); err != nil {
				return err
			}
			return run(cmd.Context(), *o)
		},
	}
	fs := cmd.Flags()
	// A bad -L or -D is reported in its own words, not in the flag
	// package's "invalid argument" wrapper.
	fs.VarP(specList{func(v string) error {
		lf, err := parseLocalForward(v)
		o.locals = append(o.locals, lf)
		specErr = cmp.Or(specErr, err)
		return nil
	}}, "local", "L", "a local forward `[BIND:]LPORT:HOST:RPORT` or unix:PATH:HOST:RPORT (repeatable)")
	fs.VarP(specList{func(v string) error {
		l, err := parseDynamic(v)
		o.dynamic = append(o.dynamic, l)
		specErr = cmp.Or(specErr, err)
		return nil
	}}, "dynamic", "D", "a SOCKS5 listener on `[BIND:]PORT` (repeatable)")
	fs.BoolVar(&o.quiet, "quiet", false, "no \"listening on\" lines")
	o.registerSession(fs)
	completeFlags(cmd)
	return cmd
}

// parseForward parses a forward command line as "ssmproxy forward" does,
// without running it.
func parseForward(args []string) (o forwardOptions, err error) {
	err = parseWith(newForwardCmd(func(_ context.Context, got forwardOptions) error { o = got; return nil }), args)
	return o, err
}

// check validates the options and takes the positional argument.
func (o *forwardOptions) check(pos []string) error {
	if len(pos) != 1 {
		return usagef("forward: want one TARGET, got %d arguments (see ssmproxy help forward)", len(pos))
	}
	o.target = pos[0]
	if len(o.locals) == 0 && len(o.dynamic) == 0 {
		return usagef("forward: nothing to forward: give at least one -L or -D")
	}
	if err := o.checkSession("forward"); err != nil {
		return err
	}
	seen := map[listenSpec]bool{}
	for _, l := range o.listens() {
		if seen[l] && !strings.HasSuffix(l.address, ":0") {
			return usagef("forward: %s is given twice", l)
		}
		seen[l] = true
	}
	return nil
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

func runForward(ctx context.Context, o forwardOptions) error {
	rec, stopTrace, err := openTrace(o.traceFile)
	if err != nil {
		return err
	}
	defer stopTrace()
	o.tracer = rec
	tuneRuntime()
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
			signDial: o.signDial, clientVersion: o.clientVersion, readCoalesce: coalesceSetting(o.readCoalesce)},
		log:    log,
		tracer: o.tracer,
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

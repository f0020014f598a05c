package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/internal/awsconf"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
	"github.com/ssmproxy/ssmproxy/target"
	"github.com/ssmproxy/ssmproxy/trace"
)

// The session opener: every command that opens a Session Manager session
// goes through openSession, in the same four steps (docs/architecture.md,
// "The session opener"):
//
//	resolve the target → scope credentials to it → pre-session hooks → start
//
// and the command runs the data path over what it returns. Name lookup
// is the first step (package target), an EC2 Instance Connect key push is a hook,
// `forward` another command over the same opener.

// sessionRequest is what a command asks the opener for.
type sessionRequest struct {
	target     string // as the user gave it
	document   string
	parameters map[string][]string
	// scopeDocuments are the documents the scoped credentials allow
	// (default: document alone); `forward` needs both port-forwarding
	// documents when its listeners do.
	scopeDocuments []string
	reason         string

	profile, region string
	broker          brokerFlags
	tuning          sessionTuning

	// pushKeyUser, when set, adds EC2 Instance Connect's SendSSHPublicKey
	// for this OS user to the scoped credentials (pushkey.go).
	pushKeyUser string

	// hooks run in order once credentials are scoped to the resolved
	// target and before StartSession; the first error aborts the open.
	hooks []preSessionHook
	log   *slog.Logger
	// tracer, when --trace is given, records every session (cmd_trace.go).
	tracer *trace.Recorder
}

// documents is the scope's document list.
func (r sessionRequest) documents() []string {
	if len(r.scopeDocuments) > 0 {
		return r.scopeDocuments
	}
	return documentList(r.document)
}

// sessionTuning are the data-channel settings a user may change.
type sessionTuning struct {
	handshakeTimeout, resumeBudget time.Duration
	// readCoalesce as ssm.Config takes it (0: default, negative: off).
	readCoalesce  time.Duration
	signDial      bool
	clientVersion string
}

// preSessionHook prepares the instance before the session starts, with the
// scoped credentials (e.g. EC2 Instance Connect's SendSSHPublicKey).
type preSessionHook func(ctx context.Context, t resolvedTarget) error

// resolvedTarget is the instance a session goes to and the AWS configuration
// (region, scoped credentials) to reach it with.
type resolvedTarget struct {
	InstanceID string
	AWS        aws.Config
}

// openedSession is a started session, the instance it reaches, and the
// broker that keeps its credentials fresh. The data path closes the session
// (TerminateSession); release stops the broker after that.
type openedSession struct {
	*ssm.Session
	Instance string
	broker   *broker.Broker
}

func (o *openedSession) release() { o.broker.Close() }

// openSession runs the four steps for one session. Its errors are
// classified by exitCode.
func openSession(ctx context.Context, req sessionRequest) (*openedSession, error) {
	t, err := prepareTarget(ctx, req)
	if err != nil {
		return nil, err
	}
	sess, err := t.start(ctx, sessionSpec{document: req.document, parameters: req.parameters})
	if err != nil {
		t.release()
		return nil, err
	}
	return &openedSession{Session: sess, Instance: t.InstanceID, broker: t.broker}, nil
}

// scopedTarget is a target after the first three steps: resolved, with a
// broker scoped to it and its hooks run. `forward` starts several sessions
// from one (one per listener or SOCKS destination), sharing the broker.
type scopedTarget struct {
	resolvedTarget
	broker *broker.Broker
	req    sessionRequest
}

// sessionSpec is one session to start on a scoped target.
type sessionSpec struct {
	document   string
	parameters map[string][]string
	// portForwarding: the caller carries the LocalPortForwarding modes
	// (ssm.Config.PortForwarding); onFlag receives the agent's flags.
	portForwarding bool
	onFlag         func(wire.Flag)
}

// prepareTarget runs steps 1 to 3: resolve, scope credentials, hooks.
func prepareTarget(ctx context.Context, req sessionRequest) (*scopedTarget, error) {
	id, err := resolveTarget(ctx, req)
	if err != nil {
		return nil, err
	}
	if req.pushKeyUser != "" {
		if err := checkPushKeyTarget(id); err != nil {
			return nil, err
		}
	}
	b, cfg, err := scopeCredentials(ctx, req, id)
	if err != nil {
		return nil, err
	}
	target := resolvedTarget{InstanceID: id, AWS: cfg}
	for _, hook := range req.hooks {
		if err := hook(ctx, target); err != nil {
			b.Close()
			return nil, err
		}
	}
	return &scopedTarget{resolvedTarget: target, broker: b, req: req}, nil
}

// start is step 4: StartSession and the handshake.
func (t *scopedTarget) start(ctx context.Context, spec sessionSpec) (*ssm.Session, error) {
	cfg := t.AWS
	var tracer ssm.Tracer
	if rec := t.req.tracer; rec != nil {
		tracer = rec.Session()
		cfg.Credentials = &tracedCredentials{inner: cfg.Credentials, rec: rec}
	}
	sess, err := ssm.Start(ctx, ssm.Config{
		Target:           t.InstanceID,
		DocumentName:     spec.document,
		Parameters:       spec.parameters,
		PortForwarding:   spec.portForwarding,
		OnFlag:           spec.onFlag,
		Reason:           t.req.reason,
		AWS:              cfg,
		Trace:            tracer,
		SignDial:         t.req.tuning.signDial,
		ClientVersion:    t.req.tuning.clientVersion,
		HandshakeTimeout: t.req.tuning.handshakeTimeout,
		ResumeBudget:     t.req.tuning.resumeBudget,
		ReadCoalesce:     t.req.tuning.readCoalesce,
		Log:              t.req.log,
	})
	if err != nil {
		return nil, sessionFailure(err)
	}
	return sess, nil
}

// release stops the broker, after every session was closed.
func (t *scopedTarget) release() { t.broker.Close() }

// resolveTarget turns what the user typed into an instance id: an id as it
// is; a name, tag, address or DNS name through a lookup (package target),
// answered from the lookup cache when it can be, else with credentials of
// the read-only lookup scope (docs/credentials.md 6.1) from a broker of its
// own, closed before the session's broker starts.
func resolveTarget(ctx context.Context, req sessionRequest) (string, error) {
	q, err := target.Parse(req.target)
	if err != nil {
		return "", usageError{err.Error()}
	}
	if q.Kind == target.KindID {
		return q.Value, nil
	}
	b, finder, err := lookupFinder(ctx, req)
	if err != nil {
		return "", err
	}
	defer b.Close()
	dir, err := target.DefaultCacheDir()
	var cache *target.Cache
	if err == nil {
		cache = &target.Cache{Dir: dir, Profile: b.Profile(), Region: b.Region(), Log: req.log}
	}
	r := target.Resolver{Cache: cache, Finder: finder}
	c, err := r.Resolve(ctx, q)
	if err != nil {
		return "", err
	}
	if req.log != nil {
		req.log.Info("resolved target", "target", req.target, "instance", c.ID, "name", c.Name)
	}
	return c.ID, nil
}

// lookupFinder starts the broker of the read-only lookup scope and returns
// it (the caller closes it) with a function that makes a Finder on its
// credentials when a lookup needs one.
func lookupFinder(ctx context.Context, req sessionRequest) (*broker.Broker, func(context.Context) (*target.Finder, error), error) {
	o := brokerOptions(resolveProfile(ctx, req.profile), req.region, req.broker, "", nil, req.log, io.Discard)
	o.Lookup = true
	b, err := broker.New(ctx, o)
	if err != nil {
		return nil, nil, setupFailure(err)
	}
	return b, func(ctx context.Context) (*target.Finder, error) {
		if err := b.Prepare(ctx); err != nil {
			return nil, setupFailure(err)
		}
		shared := ""
		if b.InSharedConfig() {
			shared = b.Profile()
		}
		cfg, err := awsconf.Load(ctx, awsconf.Options{Profile: shared, Region: b.Region(), Credentials: b})
		if err != nil {
			return nil, err
		}
		return target.NewFinder(cfg), nil
	}, nil
}

// scopeCredentials starts the broker for this instance and document: it is
// the one credentials provider of the process. Prompts (MFA code, file
// keyring passphrase) may use the terminal only here, before the first
// byte of the session; later re-mints never prompt.
func scopeCredentials(ctx context.Context, req sessionRequest, instance string) (*broker.Broker, aws.Config, error) {
	profile := resolveProfile(ctx, req.profile)
	opts := brokerOptions(profile, req.region, req.broker, instance, req.documents(), req.log, os.Stderr)
	opts.PushKeyUser = req.pushKeyUser
	b, err := broker.New(ctx, opts)
	if err != nil {
		return nil, aws.Config{}, setupFailure(err)
	}
	cfg, err := func() (aws.Config, error) {
		if err := b.Prepare(ctx); err != nil {
			return aws.Config{}, setupFailure(err)
		}
		shared := ""
		if b.InSharedConfig() {
			shared = b.Profile()
		}
		cfg, err := awsconf.Load(ctx, awsconf.Options{Profile: shared, Region: b.Region(), Credentials: b})
		if err != nil {
			return aws.Config{}, err
		}
		return cfg, b.Start()
	}()
	if err != nil {
		b.Close()
		return nil, aws.Config{}, err
	}
	return b, cfg, nil
}

// sessionFailure surfaces the broker's own message when a session failed
// because the source of credentials expired or was refused: that one line
// (what expired, when, the fix) is what the user needs, not the SSM call it
// happened in. The exit code is the same either way.
func sessionFailure(err error) error {
	var se *broker.SourceError
	if errors.As(err, &se) {
		return se
	}
	return err
}

// setupFailure marks a failure to obtain the first credentials. The
// classifier gives its more specific causes their own codes (IAM refusing
// the mint, an unreachable STS, a lock held too long, a setting that cannot
// work); whatever is left is a credentials problem (exit 3).
func setupFailure(err error) error {
	if err == nil {
		return nil
	}
	var se *broker.SourceError
	if errors.As(err, &se) {
		return se
	}
	if errors.Is(err, context.Canceled) {
		// Stopped, not refused: not a credentials failure.
		return err
	}
	return &credsError{err}
}

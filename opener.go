package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/internal/awsconf"
	"github.com/ssmproxy/ssmproxy/ssm"
)

// The session opener: every command that opens a Session Manager session
// goes through openSession, in the same four steps (docs/architecture.md,
// "The session opener"):
//
//	resolve the target → scope credentials to it → pre-session hooks → start
//
// and the command runs the data path over what it returns. Name lookup
// belongs to the first step, an EC2 Instance Connect key push is a hook,
// `forward` another command over the same opener.

// sessionRequest is what a command asks the opener for.
type sessionRequest struct {
	target     string // as the user gave it
	document   string
	parameters map[string][]string
	reason     string

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
}

// sessionTuning are the data-channel settings a user may change.
type sessionTuning struct {
	handshakeTimeout, resumeBudget time.Duration
	signDial                       bool
	clientVersion                  string
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

// openSession runs the four steps. Its errors are classified by exitCode.
func openSession(ctx context.Context, req sessionRequest) (*openedSession, error) {
	id, err := resolveTarget(req.target)
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
	sess, err := ssm.Start(ctx, ssm.Config{
		Target:           id,
		DocumentName:     req.document,
		Parameters:       req.parameters,
		Reason:           req.reason,
		AWS:              cfg,
		SignDial:         req.tuning.signDial,
		ClientVersion:    req.tuning.clientVersion,
		HandshakeTimeout: req.tuning.handshakeTimeout,
		ResumeBudget:     req.tuning.resumeBudget,
		Log:              req.log,
	})
	if err != nil {
		b.Close()
		return nil, sessionFailure(err)
	}
	return &openedSession{Session: sess, Instance: id, broker: b}, nil
}

// instanceID accepts EC2 instance ids and managed-instance ids.
var instanceID = regexp.MustCompile(`^(i-[0-9a-f]{8}([0-9a-f]{9})?|mi-[0-9a-f]{17})$`)

// resolveTarget turns what the user typed into an instance id. Today only
// ids are accepted; names and tags are resolved here once lookup exists.
func resolveTarget(target string) (string, error) {
	if !instanceID.MatchString(target) {
		return "", usagef("target %q is not an instance id (i-... or mi-...); name and tag lookup is not supported yet", target)
	}
	return target, nil
}

// scopeCredentials starts the broker for this instance and document: it is
// the one credentials provider of the process. Prompts (MFA code, file
// keyring passphrase) may use the terminal only here, before the first
// byte of the session; later re-mints never prompt.
func scopeCredentials(ctx context.Context, req sessionRequest, instance string) (*broker.Broker, aws.Config, error) {
	profile := resolveProfile(ctx, req.profile)
	opts := brokerOptions(profile, req.region, req.broker, instance, req.document, req.log, os.Stderr)
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

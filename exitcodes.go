package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/internal/awsconf"
	"github.com/ssmproxy/ssmproxy/internal/lockfile"
	"github.com/ssmproxy/ssmproxy/ssm"
	"github.com/ssmproxy/ssmproxy/target"
)

// Exit codes. ssh shows our one stderr line above "Connection closed"; the
// code lets scripts tell the classes apart (the official plugin exits 0 on
// every path).
const (
	exitOK           = 0
	exitInternal     = 1 // unexpected failure
	exitUsage        = 2 // bad command line (including a port-forwarding document)
	exitCredentials  = 3 // credentials missing, refused or expired
	exitAccessDenied = 4 // IAM denied the call
	exitNotConnected = 5 // the instance's agent is not connected
	exitAPIRefused   = 6 // the service refused the request (document, parameters, ...)
	exitChannelLost  = 7 // the data channel was lost and could not be resumed, never came up, or the agent went silent; or the service's StreamUrl was refused
	exitSessionEnded = 8 // the service ended the session while we were away (idle timeout, terminated)
	exitSignalBase   = 128
)

// usageError is a command-line mistake.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitCode is the one classifier from errors to the documented exit codes.
// It looks at types only (errors.As/errors.Is through every wrapper), never
// at error text. The order matters where types nest: the broker's failures
// come first because ssm wraps them when a resume needed credentials, and
// the commands' catch-all credential wrappers come after every specific
// cause so that those keep their own codes; a wrapped cancellation stays a
// credentials failure, as before (setupFailure does not wrap a bare one).
func exitCode(err error) int {
	var (
		ue  usageError
		cfg *broker.ConfigError
		src *broker.SourceError
		ad  *broker.AccessDeniedError
		ne  *broker.NetworkError
		se  *ssm.SessionEndedError
		re  *ssm.ResumeError
		ce  *ssm.CredentialsError
		ae  *ssm.APIError
		hr  *ssm.HandshakeRefusedError
		he  *ssm.HandshakeError
		su  *ssm.StreamURLError
		np  *ssm.NoProgressError
		pf  *ssm.PortForwardingError
		cre *credsError
		ur  *unreachableError
		le  *loginError
		te  *target.Error
		pk  *pushKeyError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue), errors.As(err, &cfg), errors.Is(err, awsconf.ErrNoRegion), errors.As(err, new(*awsconf.FileError)), errors.Is(err, ssm.ErrInvalidConfig),
		errors.Is(err, lockfile.ErrUnsafe):
		return exitUsage
	case errors.As(err, &pf):
		// A document connect cannot serve (port forwarding), refused by
		// name or in the handshake: the command line has to change.
		return exitUsage
	case errors.As(err, &src):
		return exitCredentials
	case errors.As(err, &ad):
		return exitAccessDenied
	case errors.As(err, &ne), errors.As(err, &ur):
		return exitChannelLost
	case errors.As(err, &te):
		return targetExitCode(te.Reason)
	case errors.Is(err, lockfile.ErrTimeout):
		// Another ssmproxy held the credentials lock too long.
		return exitInternal
	case errors.As(err, &se):
		return exitSessionEnded
	case errors.As(err, &su):
		// The service pointed the data channel somewhere it must not go
		// (docs/protocol.md 3.1): a protocol failure.
		return exitChannelLost
	case errors.As(err, &re):
		// A resume that ended on refused credentials is a credentials problem.
		if errors.As(re.Last, &ae) && ae.Kind == ssm.KindCredentials || errors.As(re.Last, &ce) {
			return exitCredentials
		}
		return exitChannelLost
	case errors.As(err, &ce):
		return exitCredentials
	case errors.As(err, &ae):
		return apiExitCode(ae.Kind)
	case errors.As(err, &pk):
		return pk.exit
	case errors.As(err, &hr):
		// The document asked for something ssmproxy cannot serve.
		return exitAPIRefused
	case errors.As(err, &he), errors.As(err, &np):
		return exitChannelLost
	case errors.As(err, &cre), errors.As(err, &le):
		return exitCredentials
	case errors.Is(err, context.Canceled):
		return exitOK
	}
	return exitInternal
}

// targetExitCode is the code of a target lookup without an answer: the
// command line must name one instance (2), whose agent must be online (5).
func targetExitCode(r target.Reason) int {
	switch r {
	case target.NoMatch, target.Ambiguous, target.TooMany:
		return exitUsage
	case target.Offline:
		return exitNotConnected
	case target.Denied:
		return exitAccessDenied
	case target.Credentials:
		return exitCredentials
	case target.Refused:
		return exitAPIRefused
	}
	return exitChannelLost
}

// apiExitCode is the code for an SSM API refusal of each kind.
func apiExitCode(k ssm.Kind) int {
	switch k {
	case ssm.KindCredentials:
		return exitCredentials
	case ssm.KindAccessDenied:
		return exitAccessDenied
	case ssm.KindTargetNotConnected:
		return exitNotConnected
	case ssm.KindSessionGone:
		return exitSessionEnded
	case ssm.KindThrottled, ssm.KindServer:
		return exitChannelLost
	}
	return exitAPIRefused
}

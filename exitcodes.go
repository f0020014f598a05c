package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/internal/awsconf"
	"github.com/ssmproxy/ssmproxy/internal/lockfile"
	"github.com/ssmproxy/ssmproxy/ssm"
)

// Exit codes. ssh shows our one stderr line above "Connection closed"; the
// code lets scripts tell the classes apart (the official plugin exits 0 on
// every path).
const (
	exitOK           = 0
	exitInternal     = 1 // unexpected failure
	exitUsage        = 2 // bad command line
	exitCredentials  = 3 // credentials missing, refused or expired
	exitAccessDenied = 4 // IAM denied the call
	exitNotConnected = 5 // the instance's agent is not connected
	exitAPIRefused   = 6 // the service refused the request (document, parameters, ...)
	exitChannelLost  = 7 // the data channel was lost and could not be resumed, or never came up
	exitSessionEnded = 8 // the service ended the session while we were away (idle timeout, terminated)
	exitSignalBase   = 128
)

// usageError is a command-line mistake.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitCode maps an error to its documented exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	var ae *ssm.APIError
	var ce *ssm.CredentialsError
	var se *ssm.SessionEndedError
	var re *ssm.ResumeError
	var he *ssm.HandshakeError
	var hr *ssm.HandshakeRefusedError
	if code, ok := brokerExitCode(err); ok {
		return code
	}
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &se):
		return exitSessionEnded
	case errors.As(err, &re):
		// A resume that ended on refused credentials is a credentials problem.
		if errors.As(re.Last, &ae) && ae.Kind == ssm.KindCredentials || errors.As(re.Last, &ce) {
			return exitCredentials
		}
		return exitChannelLost
	case errors.As(err, &ce):
		return exitCredentials
	case errors.As(err, &ae):
		switch ae.Kind {
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
		default:
			return exitAPIRefused
		}
	case errors.As(err, &hr):
		// The document asked for something ssmproxy cannot serve.
		return exitAPIRefused
	case errors.As(err, &he):
		return exitChannelLost
	case errors.Is(err, awsconf.ErrNoRegion):
		return exitUsage
	case isCredentialsFailure(err):
		return exitCredentials
	case errors.Is(err, context.Canceled):
		return exitOK
	}
	return exitInternal
}

// brokerExitCode classifies the credential broker's failures wherever they
// surface (at startup, or wrapped by ssm when a resume needed credentials):
// IAM refusing the mint is access denied, an unreachable STS a network
// failure, a lock held too long by another ssmproxy process an internal
// failure, a setting that cannot work a usage error; an expired or refused
// source is a credentials problem.
func brokerExitCode(err error) (int, bool) {
	var se *broker.SourceError
	var ad *broker.AccessDeniedError
	var ne *broker.NetworkError
	var ce *broker.ConfigError
	switch {
	case errors.As(err, &se):
		return exitCredentials, true
	case errors.As(err, &ce):
		return exitUsage, true
	case errors.As(err, &ad):
		return exitAccessDenied, true
	case errors.As(err, &ne):
		return exitChannelLost, true
	case errors.Is(err, lockfile.ErrTimeout):
		return exitInternal, true
	}
	return 0, false
}

// isCredentialsProblem reports whether a failure to obtain credentials is
// about the credentials themselves (missing, unreadable, refused), as
// opposed to a failure brokerExitCode classifies otherwise, a usage mistake,
// or a cancellation.
func isCredentialsProblem(err error) bool {
	if _, ok := brokerExitCode(err); ok {
		var se *broker.SourceError
		return errors.As(err, &se)
	}
	return !errors.Is(err, awsconf.ErrNoRegion) && !errors.Is(err, context.Canceled)
}

// isCredentialsFailure recognises the credential broker's failures: an
// expired or refused source, and failures to obtain or store credentials in
// the credentials commands.
func isCredentialsFailure(err error) bool {
	var se *broker.SourceError
	var ce *credsError
	var le *loginError
	return errors.As(err, &se) || errors.As(err, &ce) || errors.As(err, &le)
}

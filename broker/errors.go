package broker

import (
	"context"
	"errors"
	"fmt"

	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The broker's failures fall into classes that call for different actions,
// and ssmproxy gives each its own exit code: a *SourceError (the source of
// credentials expired or was refused: renew it), an *AccessDeniedError (IAM
// refused the mint: fix a policy), a *NetworkError (STS could not be
// reached: try again), a *ConfigError (a setting cannot work: fix it), and a
// lock timeout (lockfile.ErrTimeout: another ssmproxy process holds the
// credentials lock). Anything else is about obtaining the credentials.

// AccessDeniedError reports that STS refused to mint because a policy does
// not allow it: the role's trust policy does not admit the caller, requires
// MFA the caller has not got, or an SCP denies sts:AssumeRole. The
// credentials themselves are fine, and retrying cannot help.
type AccessDeniedError struct {
	Profile string
	Op      string // e.g. "AssumeRole arn:aws:iam::123456789012:role/x"
	Code    string
	Message string
}

// Permanent marks the error as final for ssm.IsPermanent.
func (e *AccessDeniedError) Permanent() bool { return true }

func (e *AccessDeniedError) Error() string {
	s := fmt.Sprintf("%s for profile %q was denied (%s)", e.Op, e.Profile, e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s + "; check the role's trust policy (the caller, MFA) and the policies that apply to sts:AssumeRole"
}

// NetworkError reports that STS could not be reached (or did not answer in
// time). It is neither a credentials nor a permissions problem.
type NetworkError struct {
	Profile string
	Op      string
	Err     error
}

func (e *NetworkError) Error() string {
	return fmt.Sprintf("%s for profile %q: STS could not be reached: %v", e.Op, e.Profile, e.Err)
}

func (e *NetworkError) Unwrap() error { return e.Err }

// ConfigError reports a broker setting that cannot work (a malformed role
// ARN, a duration outside STS's limits, an unreadable AWS configuration): a
// configuration mistake, not a credentials problem.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, args ...any) error {
	return &ConfigError{fmt.Errorf(format, args...)}
}

// isNetworkError recognises an SDK call that never got an answer: the
// request could not be sent (DNS, connection refused or reset, TLS), or the
// call's deadline passed.
func isNetworkError(err error) bool {
	var se *smithyhttp.RequestSendError
	return errors.As(err, &se) || errors.Is(err, context.DeadlineExceeded)
}

// isPermanent reports whether retrying cannot fix err.
func isPermanent(err error) bool {
	var se *SourceError
	var ad *AccessDeniedError
	return errors.As(err, &se) || errors.As(err, &ad)
}

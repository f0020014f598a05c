package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"
)

// ProcessError reports that a profile's credential_process failed: it
// could not run, exited non-zero, or printed something that is not the
// credential_process JSON. It says which part failed and never what the
// process printed: the AWS SDK's own error for a parse failure embeds the
// whole output, secret key and session token included, so it is dropped
// here, not wrapped (docs/credentials.md 7.1). It is not permanent: the next
// refresh runs the process again.
type ProcessError struct {
	Profile string
	Part    string // what failed, e.g. "credential_process output is not valid JSON"
	Output  bool   // the output was the problem (and is not shown)
}

func (e *ProcessError) Error() string {
	s := e.Part
	if e.Profile != "" {
		s = fmt.Sprintf("credentials of profile %q: %s", e.Profile, s)
	}
	if e.Output {
		s += " (the output is not shown: it may hold secrets)"
	}
	return s
}

// processFailure recognises a credential_process failure anywhere in err's
// chain and describes it without the process's output; ok is false for
// every other error.
func processFailure(profile string, err error) (*ProcessError, bool) {
	var pe *processcreds.ProviderError
	if !errors.As(err, &pe) {
		return nil, false
	}
	part, output := processPart(pe.Err)
	return &ProcessError{Profile: profile, Part: part, Output: output}, true
}

// processPart classifies by type first: only the SDK's parse failure embeds
// the output, and its inner error is one of the JSON or time errors below.
// The SDK's other failures are fixed sentences, matched last.
func processPart(err error) (part string, output bool) {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		tpe *time.ParseError
		ee  *exec.ExitError
		xe  *exec.Error
	)
	const out = "credential_process output"
	switch {
	case err == nil:
		return "credential_process failed", false
	case errors.As(err, &tpe), strings.Contains(err.Error(), "Time.UnmarshalJSON"):
		return out + ": Expiration is not an RFC 3339 time", true
	case errors.As(err, &syn):
		return fmt.Sprintf("%s is not valid JSON (at byte %d: a stray line before or after the JSON?)", out, syn.Offset), true
	case errors.As(err, &typ):
		return fmt.Sprintf("%s: %s is not of type %s", out, typ.Field, typ.Type), true
	case strings.HasPrefix(err.Error(), "parse failed of process output"):
		// An unmarshal failure of a kind not listed above: still the output.
		return out + " is not valid credential_process JSON", true
	case strings.HasPrefix(err.Error(), "credential process timed out"):
		return "credential_process did not finish in time and was stopped", false
	case errors.As(err, &ee):
		if ee.ExitCode() < 0 {
			return "credential_process was killed (" + ee.ProcessState.String() + ")", false
		}
		return fmt.Sprintf("credential_process exited with status %d", ee.ExitCode()), false
	case errors.As(err, &xe):
		return "credential_process could not be started (" + xe.Err.Error() + ")", false
	case strings.Contains(err.Error(), "wrong version"):
		return out + ": Version is not 1", true
	case strings.Contains(err.Error(), "missing AccessKeyId"):
		return out + ": missing AccessKeyId", true
	case strings.Contains(err.Error(), "missing SecretAccessKey"):
		return out + ": missing SecretAccessKey", true
	}
	return "credential_process failed", false
}

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2instanceconnect"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/ssmproxy/ssmproxy/internal/awserr"
	"github.com/ssmproxy/ssmproxy/internal/redact"
)

// EC2 Instance Connect key push (`connect --push-key`): a pre-session hook
// (docs/architecture.md section 6, step 3) that sends the user's public key
// with SendSSHPublicKey, using the per-target credentials, whose session
// policy then carries exactly that action on that instance for that OS user
// (docs/credentials.md section 6). Only public keys are ever read: a .pub
// file or ssh-agent's list. The private key stays where it is and ssh uses
// it as usual.

// pushKeyFlag is --push-key[=PUBKEY]: a boolean flag that may carry the path
// of a .pub file.
type pushKeyFlag struct {
	set  bool
	path string
}

// pushKeyDefault is the value --push-key takes without =PUBKEY.
const pushKeyDefault = "true"

func (p *pushKeyFlag) String() string   { return "" }
func (p *pushKeyFlag) IsBoolFlag() bool { return true }
func (p *pushKeyFlag) Type() string     { return "bool" } // --push-key[=PUBKEY]: no value in help
func (p *pushKeyFlag) Set(v string) error {
	switch v {
	case "true":
		p.set, p.path = true, ""
	case "false":
		p.set, p.path = false, ""
	default:
		p.set, p.path = true, v
	}
	return nil
}

// osUserPattern is the service's constraint on InstanceOSUser.
var osUserPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9@._-]{0,30}[A-Za-z0-9$_-]?$`)

// checkPushKeyFlags validates --push-key and --user together.
func checkPushKeyFlags(p pushKeyFlag, user string) error {
	switch {
	case p.set && user == "":
		return usagef("connect: --push-key needs --user USER, the login name on the instance (in ssh_config: --user %%r)")
	case !p.set && user != "":
		return usagef("connect: --user is the OS user of --push-key; add --push-key or drop --user")
	case p.set && (len(user) > 32 || !osUserPattern.MatchString(user)):
		return usagef("connect: --user %q is not a valid login name for EC2 Instance Connect (1-32 of [A-Za-z0-9@._-], not starting with a digit)", user)
	}
	return nil
}

// pushKeyPathHint catches "--push-key PATH.pub" (a space instead of "="),
// which the flag parser reads as a bare --push-key and a positional PATH.
func pushKeyPathHint(p pushKeyFlag, pos []string) error {
	if p.set && p.path == "" && len(pos) > 0 && strings.HasSuffix(pos[0], ".pub") {
		return usagef("connect: write --push-key=%s (with =): without it %s is read as the target", pos[0], pos[0])
	}
	return nil
}

// checkPushKeyTarget refuses a push to a managed (hybrid) node: Instance
// Connect works with EC2 instances only.
func checkPushKeyTarget(instance string) error {
	if !strings.HasPrefix(instance, "i-") {
		return usagef("connect: --push-key works only with EC2 instances (i-...); %s is a managed node, where EC2 Instance Connect does not apply", instance)
	}
	return nil
}

// defaultPublicKeys are tried in order when --push-key names no file.
var defaultPublicKeys = []string{"id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"}

// maxPublicKeyFile bounds what is read from a .pub file.
const maxPublicKeyFile = 16 << 10

// publicKey is the key to push: "TYPE BASE64" (no comment) and where it
// came from, for the log.
type publicKey struct {
	line, source string
}

// findPublicKey returns the key --push-key names, or the first of
// ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub, or else the first
// usable key ssh-agent holds. Its errors are usage errors (exit 2) in one
// line naming what was tried; none quotes the file's content.
func findPublicKey(path, home, agentSock string) (publicKey, error) {
	if path != "" {
		return readPublicKeyFile(path)
	}
	var tried []string
	for _, name := range defaultPublicKeys {
		p := filepath.Join(home, ".ssh", name)
		if _, err := os.Stat(p); err == nil {
			return readPublicKeyFile(p)
		}
		tried = append(tried, p)
	}
	k, why := agentPublicKey(agentSock)
	if why == "" {
		return k, nil
	}
	return publicKey{}, usagef("connect: --push-key: no public key found: tried %s and ssh-agent (%s); name one with --push-key=PATH.pub",
		strings.Join(tried, ", "), why)
}

// readPublicKeyFile reads a .pub file. A path without .pub is refused
// unread, so a private key is never opened by mistake.
func readPublicKeyFile(path string) (publicKey, error) {
	if !strings.HasSuffix(path, ".pub") {
		return publicKey{}, usagef("connect: --push-key=%s: name the public key file (.pub); ssmproxy never reads a private key", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return publicKey{}, usagef("connect: --push-key: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPublicKeyFile))
	if err != nil {
		return publicKey{}, usagef("connect: --push-key: read %s: %v", path, err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return publicKey{}, usagef("connect: --push-key: %s does not hold an OpenSSH public key", path)
	}
	if why := unsupportedKey(pk); why != "" {
		return publicKey{}, usagef("connect: --push-key: %s: %s", path, why)
	}
	return publicKey{line: keyLine(pk), source: path}, nil
}

// agentPublicKey returns the first key in ssh-agent that Instance Connect
// takes, or why there is none.
func agentPublicKey(sock string) (publicKey, string) {
	if sock == "" {
		return publicKey{}, "SSH_AUTH_SOCK unset"
	}
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return publicKey{}, "cannot reach it at SSH_AUTH_SOCK"
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	keys, err := agent.NewClient(conn).List()
	if err != nil {
		return publicKey{}, "listing its keys failed"
	}
	for _, k := range keys {
		pk, err := ssh.ParsePublicKey(k.Blob)
		if err == nil && unsupportedKey(pk) == "" {
			return publicKey{line: keyLine(pk), source: "ssh-agent"}, ""
		}
	}
	if len(keys) == 0 {
		return publicKey{}, "it holds no key"
	}
	return publicKey{}, fmt.Sprintf("none of its %d keys is RSA (2048 bits or more), ED25519 or ECDSA", len(keys))
}

// unsupportedKey says why Instance Connect would refuse pk, or "".
func unsupportedKey(pk ssh.PublicKey) string {
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return "key type " + pk.Type() + " is not supported by EC2 Instance Connect (RSA, ED25519, ECDSA)"
	}
	switch k := cpk.CryptoPublicKey().(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Sprintf("an RSA key of %d bits; EC2 Instance Connect needs 2048 or more", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
	default:
		if pk.Type() != ssh.KeyAlgoED25519 {
			return "key type " + pk.Type() + " is not supported by EC2 Instance Connect (RSA, ED25519, ECDSA)"
		}
	}
	return ""
}

// keyLine is the key as pushed: type and base64, without the file's
// comment (often user@host, which the service does not need).
func keyLine(pk ssh.PublicKey) string {
	return pk.Type() + " " + base64.StdEncoding.EncodeToString(pk.Marshal())
}

// pushKeyHook pushes key for user to the session's instance before
// StartSession. Throttling and server errors are retried a few times
// within about 5 s (the SDK's standard retryer); the session must start
// within the key's 60 s anyway.
func pushKeyHook(user string, key publicKey, log *slog.Logger) preSessionHook {
	return func(ctx context.Context, t resolvedTarget) error {
		c := ec2instanceconnect.NewFromConfig(t.AWS, func(o *ec2instanceconnect.Options) {
			o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = 4
				so.MaxBackoff = 2 * time.Second
			})
		})
		out, err := c.SendSSHPublicKey(ctx, &ec2instanceconnect.SendSSHPublicKeyInput{
			InstanceId: aws.String(t.InstanceID), InstanceOSUser: aws.String(user), SSHPublicKey: aws.String(key.line)})
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			return newPushKeyError(t.InstanceID, user, err)
		}
		if !out.Success {
			return &pushKeyError{Instance: t.InstanceID, User: user, Code: "NotSuccessful", exit: exitAPIRefused}
		}
		log.Info("pushed public key with EC2 Instance Connect", "target", t.InstanceID, "user", user, "key", key.source,
			"requestId", aws.ToString(out.RequestId))
		return nil
	}
}

// pushKeyError is a refused or failed SendSSHPublicKey.
type pushKeyError struct {
	Instance, User string
	Code, Message  string // the service's error code and (redacted) message
	Err            error
	exit           int
}

func (e *pushKeyError) Error() string {
	what := map[int]string{
		exitCredentials:  "the credentials were refused",
		exitAccessDenied: "access denied: the credentials lack ec2-instance-connect:SendSSHPublicKey for this instance and user",
		exitNotConnected: "the instance was not found or is not running",
		exitChannelLost:  "throttled or unavailable, retries exhausted",
	}[e.exit]
	if what == "" {
		what = "refused"
	}
	s := fmt.Sprintf("push key for %s to %s: %s", e.User, e.Instance, what)
	switch {
	case e.Code != "" && e.Message != "":
		s += " (" + e.Code + ": " + e.Message + ")"
	case e.Code != "":
		s += " (" + e.Code + ")"
	case e.Err != nil:
		s += ": " + redact.String(e.Err.Error())
	}
	return s
}

func (e *pushKeyError) Unwrap() error { return e.Err }

// newPushKeyError classifies a SendSSHPublicKey failure by its error code
// (docs/architecture.md section 7): IAM refusals exit 4; an instance that
// does not exist or is not running exits 5, as StartSession on it would;
// refused credentials 3; throttling and service trouble that outlasted the
// retries 7, like the SSM API's; anything else the service refused 6.
func newPushKeyError(instance, user string, err error) *pushKeyError {
	e := &pushKeyError{Instance: instance, User: user, Code: awserr.Code(err), Message: awserr.Message(err), Err: err}
	switch {
	case awserr.CredentialsRefused(e.Code):
		e.exit = exitCredentials
	case e.Code == "AccessDeniedException" || e.Code == "AccessDenied" || e.Code == "AuthException":
		e.exit = exitAccessDenied
	case e.Code == "EC2InstanceNotFoundException" || e.Code == "EC2InstanceStateInvalidException":
		e.exit = exitNotConnected
	case e.Code == "" || e.Code == "ThrottlingException" || e.Code == "EC2InstanceUnavailableException" || e.Code == "ServiceException":
		e.exit = exitChannelLost
	default:
		e.exit = exitAPIRefused
	}
	return e
}

package fakeaws

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// EC2 Instance Connect's SendSSHPublicKey (docs/fakeaws.md section 3.3): the
// same listener as SSM, told apart by its X-Amz-Target prefix, SigV4 with
// service name ec2-instance-connect, the caller's session policy evaluated
// with the ec2:osuser context key, the key checked as the service checks it,
// and each accepted key kept for EICKeyTTL. With Options.EICAuthorizedKeys the
// live keys are also written to a file in authorized_keys format, so a
// test's sshd pointed at it plays the instance.

const (
	eicTargetPrefix = "AWSEC2InstanceConnectService."
	eicService      = "ec2-instance-connect"
	eicAction       = "ec2-instance-connect:SendSSHPublicKey"
	// eicMaxLiveKeys bounds what a flood of pushes can make the fake hold;
	// beyond it the fake answers ThrottlingException.
	eicMaxLiveKeys = 1024
	// DefaultEICKeyTTL is how long the service keeps a pushed key.
	DefaultEICKeyTTL = 60 * time.Second
)

// The request model's constraints (API reference, SendSSHPublicKey).
var (
	eicInstancePattern = regexp.MustCompile(`^i-[a-f0-9]+$`)
	eicOSUserPattern   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9@._-]{0,30}[A-Za-z0-9$_-]?$`)
	eicAZPattern       = regexp.MustCompile(`^(\w+-){2,3}\d+\w+$`)
)

type eicRequest struct {
	InstanceID       *string `json:"InstanceId"`
	InstanceOSUser   *string `json:"InstanceOSUser"`
	SSHPublicKey     *string `json:"SSHPublicKey"`
	AvailabilityZone *string `json:"AvailabilityZone"`
}

type eicResponse struct {
	RequestID string `json:"RequestId"`
	Success   bool   `json:"Success"`
}

// PushedKey is a key the fake holds for an instance and OS user.
type PushedKey struct {
	Instance, User string
	// Line is the key in authorized_keys form, as written to the file.
	Line    string
	Expires time.Time
	id      uint64
}

// eicKeys holds the live pushed keys.
type eicKeys struct {
	mu     sync.Mutex
	keys   []PushedKey
	nextID uint64
}

// handleEIC serves POST / with X-Amz-Target AWSEC2InstanceConnectService.<Op>.
func (s *Server) handleEIC(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), eicTargetPrefix)
	rec := &statusRecorder{ResponseWriter: w, status: 200}
	defer func() { s.stats.apiCall(op, rec.status) }()
	w = rec
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		s.writeError(w, &iam.APIError{Status: 404, Type: "UnknownOperationException", Message: "unknown path or method"})
		return
	}
	body, ok := s.readJSONBody(w, r, 64<<10)
	if !ok {
		return
	}
	cred, aerr := s.IAM.Verify(r, body, eicService, op)
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}
	if f := s.takeAPIFault(op); f != nil {
		s.writeError(w, f)
		return
	}
	if op != "SendSSHPublicKey" {
		s.writeError(w, &iam.APIError{Status: 400, Type: "UnknownOperationException", Message: "operation " + op + " is not implemented by fakeaws"})
		return
	}
	if aerr := s.sendSSHPublicKey(cred, body); aerr != nil {
		s.writeError(w, aerr)
		return
	}
	id := uuid.NewString()
	b, _ := json.Marshal(eicResponse{RequestID: id, Success: true})
	w.Header().Set("Content-Type", jsonContentType)
	w.Header().Set("x-amzn-RequestId", id)
	w.WriteHeader(200)
	_, _ = w.Write(b)
}

func (s *Server) sendSSHPublicKey(cred iam.Credential, body []byte) *iam.APIError {
	var req eicRequest
	if e := decodeStrict(body, &req); e != nil {
		return e
	}
	if e := req.validate(); e != nil {
		return e
	}
	instance, user := *req.InstanceID, *req.InstanceOSUser
	arn := s.instanceARN(instance)
	ok, err := iam.AllowedWith(cred.SessionPolicy, eicAction, arn, map[string]string{"ec2:osuser": user})
	if err != nil || !ok {
		return accessDenied(cred, s.opts.Account, eicAction, arn)
	}
	pk, msg := checkEICKey(*req.SSHPublicKey, s.opts.EICAcceptECDSA)
	if msg != "" {
		return &iam.APIError{Status: 400, Type: "InvalidArgsException", Message: msg}
	}
	s.mu.Lock()
	_, known := s.targets[instance]
	s.mu.Unlock()
	if !known || (req.AvailabilityZone != nil && *req.AvailabilityZone != s.availabilityZone()) {
		return &iam.APIError{Status: 404, Type: "EC2InstanceNotFoundException",
			Message: fmt.Sprintf("Instance %s not found in the given zone.", instance)}
	}
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pk)), "\n") + " eic:" + instance + ":" + user
	return s.pushKey(PushedKey{Instance: instance, User: user, Line: line})
}

func (q *eicRequest) validate() *iam.APIError {
	field := func(name string, v *string, minLen, maxLen int, re *regexp.Regexp) *iam.APIError {
		if v == nil {
			return validation("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", name)
		}
		if len(*v) < minLen || len(*v) > maxLen {
			return validation("1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length between %d and %d", name, minLen, maxLen)
		}
		if re != nil && !re.MatchString(*v) {
			return validation("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: %s", *v, name, re)
		}
		return nil
	}
	if e := field("instanceId", q.InstanceID, 10, 32, eicInstancePattern); e != nil {
		return e
	}
	if e := field("instanceOSUser", q.InstanceOSUser, 1, 32, eicOSUserPattern); e != nil {
		return e
	}
	if e := field("sSHPublicKey", q.SSHPublicKey, 80, 4096, nil); e != nil {
		return e
	}
	if q.AvailabilityZone != nil {
		return field("availabilityZone", q.AvailabilityZone, 6, 32, eicAZPattern)
	}
	return nil
}

// checkEICKey parses a pushed key the way the service accepts it: one line
// "TYPE BASE64 [COMMENT]" of a public key, RSA of at least 2048 bits or
// Ed25519; ECDSA only with acceptECDSA (AWS documents RSA and Ed25519 only,
// so the default refuses it). Options, several lines, private keys,
// certificates and security-key types are refused. It returns the key or
// the InvalidArgsException message.
func checkEICKey(text string, acceptECDSA bool) (ssh.PublicKey, string) {
	const bad = "The SSH public key is not valid: use an OpenSSH-format RSA (2048 bits or more) or ED25519 public key."
	if strings.ContainsAny(text, "\r\n\x00") {
		return nil, bad
	}
	f := strings.Fields(text)
	if len(f) < 2 {
		return nil, bad
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return nil, bad
	}
	pk, err := ssh.ParsePublicKey(blob)
	if err != nil || pk.Type() != f[0] {
		return nil, bad
	}
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return nil, bad
	}
	switch k := cpk.CryptoPublicKey().(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, "The SSH public key is not valid: RSA keys must be at least 2048 bits."
		}
	case *ecdsa.PublicKey:
		if !acceptECDSA {
			return nil, bad
		}
	default:
		if pk.Type() != ssh.KeyAlgoED25519 {
			return nil, bad
		}
	}
	return pk, ""
}

func (s *Server) availabilityZone() string { return s.opts.Region + "a" }

// pushKey records a key, schedules its removal after EICKeyTTL on the
// server's clock, and rewrites the authorized_keys file.
func (s *Server) pushKey(k PushedKey) *iam.APIError {
	e := &s.eic
	e.mu.Lock()
	if len(e.keys) >= eicMaxLiveKeys {
		e.mu.Unlock()
		return &iam.APIError{Status: 429, Type: "ThrottlingException", Message: "Rate exceeded"}
	}
	e.nextID++
	k.id = e.nextID
	k.Expires = s.clk.Now().Add(s.opts.EICKeyTTL)
	e.keys = append(e.keys, k)
	// The timer exists before the caller hears Success, so a test that
	// advances a fake clock after the call always fires it.
	timer := s.clk.NewTimer(s.opts.EICKeyTTL)
	err := s.writeAuthorizedKeysLocked()
	e.mu.Unlock()
	if err != nil {
		s.log.Error("eic: writing authorized keys", "err", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-timer.C():
		case <-s.ctx.Done():
			timer.Stop()
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		for i := range e.keys {
			if e.keys[i].id == k.id {
				e.keys = append(e.keys[:i], e.keys[i+1:]...)
				break
			}
		}
		if err := s.writeAuthorizedKeysLocked(); err != nil {
			s.log.Error("eic: writing authorized keys", "err", err)
		}
	}()
	return nil
}

// startEIC empties the authorized-keys file: no key is live yet, and a
// file left from an earlier run must not let anyone in.
func (s *Server) startEIC() error {
	s.eic.mu.Lock()
	defer s.eic.mu.Unlock()
	if err := s.writeAuthorizedKeysLocked(); err != nil {
		return fmt.Errorf("eic authorized keys: %w", err)
	}
	return nil
}

// PushedKeys returns the live pushed keys, oldest first.
func (s *Server) PushedKeys() []PushedKey {
	s.eic.mu.Lock()
	defer s.eic.mu.Unlock()
	return append([]PushedKey(nil), s.eic.keys...)
}

// writeAuthorizedKeysLocked replaces Options.EICAuthorizedKeys, atomically
// and with mode 0600, by the live keys for Options.EICUser (every user when
// empty), one per line. The file says exactly which keys the service would
// hand the instance's sshd right now for that user. s.eic.mu must be held.
func (s *Server) writeAuthorizedKeysLocked() error {
	path := s.opts.EICAuthorizedKeys
	if path == "" {
		return nil
	}
	var b strings.Builder
	for _, k := range s.eic.keys {
		if s.opts.EICUser == "" || k.User == s.opts.EICUser {
			b.WriteString(k.Line + "\n")
		}
	}
	return WriteFileAtomic(path, []byte(b.String()))
}

// WriteFileAtomic replaces path with data, mode 0600, through a temporary
// file in the same directory and a rename, so a reader never sees a partial
// file (the env file, the authorized_keys file).
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fakeaws-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

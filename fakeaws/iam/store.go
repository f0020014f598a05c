// Package iam is the identity half of fakeaws: the credential store shared by
// the fake STS, SSM and MGS, real SigV4 verification against the secrets the
// fake itself issued, the STS awsquery API, and a small evaluator for inline
// session policies.
//
// The point of the package is that broker bugs surface against the fake rather
// than against AWS: signatures are recomputed in full, expiry follows an
// injectable clock, and the STS rules that bite in practice (role chaining,
// MFA, session-policy size, SourceIdentity) are enforced with AWS's own error
// codes and messages. See docs/fakeaws.md sections 2, 3 and 9 and
// docs/credentials.md sections 2 and 6.
package iam

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Region the fake serves; credential scopes must name it. Default "us-east-1".
	Region string
	// Account all principals live in. Default "123456789012".
	Account string
	// Clock drives expiry and SigV4 freshness. nil means the real clock.
	Clock clock.Clock
	// CredTTL, when > 0, is the exact lifetime of every credential STS issues,
	// overriding DurationSeconds (which is still validated). It compresses
	// time for subprocess tests, e.g. "-cred-ttl 20s".
	CredTTL time.Duration
	// ExpiredStatus is the HTTP status of ExpiredTokenException per operation
	// name. Operations not listed get 403 for ResumeSession (SMP #136) and 400
	// otherwise (docs/fakeaws.md section 3).
	ExpiredStatus map[string]int
	// QualifiedErrorTypes makes WriteJSONError namespace-qualify __type and
	// use "Message" instead of "message".
	QualifiedErrorTypes bool
	// MFAValid decides whether a one-time code is valid for a device. Default:
	// code == "123456".
	MFAValid func(serial, code string) bool
	// SigV4Skew is how far X-Amz-Date may be from the clock. Default 5 min.
	SigV4Skew time.Duration
	// Rand is the source of all randomness (keys, secrets, tokens, ids, request
	// ids), so a harness can make a run reproducible from one seed. It is read
	// under a lock, so it need not be safe for concurrent use. nil means
	// crypto/rand.
	Rand io.Reader
}

// Store is the fake's credential store. It is safe for concurrent use.
type Store struct {
	region, account string
	clock           clock.Clock
	credTTL         time.Duration
	mfaValid        func(serial, code string) bool
	skew            time.Duration

	randMu sync.Mutex
	rand   io.Reader

	mu            sync.Mutex
	qualified     bool
	expiredStatus map[string]int
	stsDelay      time.Duration
	creds         map[string]*Credential // by access key id
	order         []string               // access key ids in issue order
	users         map[string]*user
	roles         map[string]*roleEntry
	calls         []Call
	stats         Stats
}

type user struct {
	name string
	id   string          // AIDA...
	mfa  map[string]bool // registered MFA device serials
}

type roleEntry struct {
	Role
	id string // AROA...
}

// Role is an IAM role the fake lets principals assume.
type Role struct {
	Name string
	// MaxSession is the role's MaxSessionDuration. AWS allows 1 h to 12 h; the
	// value is clamped to that range and 0 means 1 h. Use Options.CredTTL, not
	// this, to make credentials short-lived in tests.
	MaxSession time.Duration
	// RequireMFA stands in for an aws:MultiFactorAuthPresent trust condition.
	RequireMFA bool
	// TrustedUsers lists the IAM users (the base user of the calling chain)
	// the trust policy admits; empty admits any user of the account.
	TrustedUsers []string
}

// NewStore returns an empty store.
func NewStore(o Options) *Store {
	s := &Store{
		region:        o.Region,
		account:       o.Account,
		clock:         clock.Or(o.Clock),
		credTTL:       o.CredTTL,
		mfaValid:      o.MFAValid,
		skew:          o.SigV4Skew,
		rand:          o.Rand,
		qualified:     o.QualifiedErrorTypes,
		expiredStatus: map[string]int{"ResumeSession": 403},
		creds:         map[string]*Credential{},
		users:         map[string]*user{},
		roles:         map[string]*roleEntry{},
		stats:         newStats(),
	}
	if s.region == "" {
		s.region = "us-east-1"
	}
	if s.account == "" {
		s.account = "123456789012"
	}
	if s.mfaValid == nil {
		s.mfaValid = func(_, code string) bool { return code == "123456" }
	}
	if s.skew <= 0 {
		s.skew = 5 * time.Minute
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	for op, st := range o.ExpiredStatus {
		s.expiredStatus[op] = st
	}
	return s
}

// Region returns the region the store verifies scopes against.
func (s *Store) Region() string { return s.region }

// Account returns the account id of every principal.
func (s *Store) Account() string { return s.account }

// Now is the store's clock. Handlers built on the store should stamp their
// Date response header with it, as AWS does, because the SDK corrects its
// signing clock from that header.
func (s *Store) Now() time.Time { return s.clock.Now() }

func (s *Store) now() time.Time { return s.clock.Now() }

// SetExpiredStatus sets the HTTP status ExpiredTokenException carries for an
// operation (the fault engine toggles it at run time).
func (s *Store) SetExpiredStatus(operation string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiredStatus[operation] = status
}

func (s *Store) expiredStatusFor(operation string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.expiredStatus[operation]; ok && st != 0 {
		return st
	}
	return 400
}

// SetQualifiedErrorTypes switches WriteJSONError between bare and qualified
// error types at run time.
func (s *Store) SetQualifiedErrorTypes(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.qualified = on
}

func (s *Store) qualifiedErrors() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.qualified
}

// SetSTSDelay makes every STS call take at least d of real time before it is
// processed, so tests can pile many concurrent minters onto one slow STS. It is
// network latency, not service time, so it does not follow the fake clock.
func (s *Store) SetSTSDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stsDelay = d
}

// AddUser creates the IAM user if needed and gives it a new long-term access
// key (AKIA..., 40-character secret).
func (s *Store) AddUser(name string) Credential {
	akid := s.newKeyID("AKIA")
	secret := s.newSecret()
	return s.AddKey(name, akid, secret)
}

// AddKey seeds a specific long-term key for a user, creating the user if
// needed. The standalone fake uses it so that env files stay stable across
// runs. An existing entry with the same access key id is replaced.
func (s *Store) AddKey(name, akid, secret string) Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userLocked(name)
	c := &Credential{
		AccessKeyID:     akid,
		SecretAccessKey: secret,
		Principal:       Principal{Type: PrincipalUser, Name: name},
		Account:         s.account,
		UserID:          s.users[name].id,
		BaseUser:        name,
		IssuedAt:        s.now(),
	}
	s.putLocked(c)
	return c.clone()
}

// userLocked returns the user, creating it; s.mu must be held.
func (s *Store) userLocked(name string) *user {
	u, ok := s.users[name]
	if !ok {
		u = &user{name: name, id: s.newKeyID("AIDA") + s.randString(upperAlnum, 1), mfa: map[string]bool{}}
		s.users[name] = u
	}
	return u
}

// putLocked stores c; s.mu must be held.
func (s *Store) putLocked(c *Credential) {
	if _, ok := s.creds[c.AccessKeyID]; !ok {
		s.order = append(s.order, c.AccessKeyID)
	}
	s.creds[c.AccessKeyID] = c
}

// AddRole registers (or replaces) a role.
func (s *Store) AddRole(r Role) {
	if r.MaxSession < time.Hour {
		r.MaxSession = time.Hour
	}
	if r.MaxSession > 12*time.Hour {
		r.MaxSession = 12 * time.Hour
	}
	r.TrustedUsers = slices.Clone(r.TrustedUsers)
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newKeyID("AROA") + s.randString(upperAlnum, 1)
	if old, ok := s.roles[r.Name]; ok {
		id = old.id
	}
	s.roles[r.Name] = &roleEntry{Role: r, id: id}
}

// RoleARN is the ARN of a role in the store's account.
func (s *Store) RoleARN(name string) string {
	return "arn:aws:iam::" + s.account + ":role/" + name
}

// AddMFADevice registers an MFA device serial for a user (creating the user).
func (s *Store) AddMFADevice(userName, serial string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userLocked(userName).mfa[serial] = true
}

// Lookup returns a copy of the credential with this access key id.
func (s *Store) Lookup(akid string) (Credential, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.creds[akid]
	if !ok {
		return Credential{}, false
	}
	return c.clone(), true
}

// ExpireNow is a fault: the credential counts as expired from this moment on.
// It works on long-term keys too, which then fail like expired tokens.
func (s *Store) ExpireNow(akid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.creds[akid]; ok {
		c.Expires = s.now()
	}
}

// Issued returns every credential in the store, long-term keys included, in
// the order they were added or issued.
func (s *Store) Issued() []Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Credential, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.creds[id].clone())
	}
	return out
}

// Stats are counters for the single-minter tests and the admin API.
type Stats struct {
	STSCalls         map[string]int64 // by action, including failed calls
	STSCallsByCaller map[string]int64 // by caller ARN, authenticated calls only
	STSErrors        map[string]int64 // by STS error code
	// SigV4Failures counts failed verifications (any service) by the JSON
	// error type, e.g. "InvalidSignatureException".
	SigV4Failures map[string]int64
	// SigV4FailureReasons counts the same failures by a finer reason, e.g.
	// "scope-region", "skew", "signature-mismatch", "expired".
	SigV4FailureReasons map[string]int64
}

func newStats() Stats {
	return Stats{
		STSCalls:            map[string]int64{},
		STSCallsByCaller:    map[string]int64{},
		STSErrors:           map[string]int64{},
		SigV4Failures:       map[string]int64{},
		SigV4FailureReasons: map[string]int64{},
	}
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		STSCalls:            clonemap(s.stats.STSCalls),
		STSCallsByCaller:    clonemap(s.stats.STSCallsByCaller),
		STSErrors:           clonemap(s.stats.STSErrors),
		SigV4Failures:       clonemap(s.stats.SigV4Failures),
		SigV4FailureReasons: clonemap(s.stats.SigV4FailureReasons),
	}
}

func clonemap(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *Store) countSigV4Failure(e *APIError, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.SigV4Failures[e.Type]++
	s.stats.SigV4FailureReasons[reason]++
}

// Call is one recorded STS call.
type Call struct {
	Time   time.Time
	Action string
	// Caller is the ARN of the authenticated caller; "" when SigV4
	// verification failed. CallerKeyID is the access key id it signed with.
	Caller      string
	CallerKeyID string
	// Fields are the form fields as sent, except that TokenCode (a one-time
	// password) is replaced by "REDACTED".
	Fields url.Values
	// Result is "OK" or the STS error code; Status the HTTP status.
	Result string
	Status int
	// IssuedKeyID is the access key id of the credential the call minted.
	IssuedKeyID string
}

// Calls returns the recorded STS calls in order.
func (s *Store) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.calls))
	for i, c := range s.calls {
		c.Fields = cloneValues(c.Fields)
		out[i] = c
	}
	return out
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

func (s *Store) record(c Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
	s.stats.STSCalls[c.Action]++
	if c.Caller != "" {
		s.stats.STSCallsByCaller[c.Caller]++
	}
	if c.Result != "OK" {
		s.stats.STSErrors[c.Result]++
	}
}

// Randomness. Everything comes from s.rand so a seeded reader reproduces a run.

const (
	upperAlnum   = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	secretChars  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	tokenPrefix  = "IQoJb3JpZ2luX2Vj" // what real STS session tokens start with
	tokenRawSize = 300                // bytes before base64; real tokens are 400-1000+ chars
)

func (s *Store) randBytes(n int) []byte {
	b := make([]byte, n)
	s.randMu.Lock()
	defer s.randMu.Unlock()
	if _, err := io.ReadFull(s.rand, b); err != nil {
		// A failing custom reader must not produce colliding keys; fall back
		// to the system source rather than panic.
		_, _ = io.ReadFull(rand.Reader, b)
	}
	return b
}

// randString draws n characters uniformly from alphabet (len ≤ 256) by
// rejection sampling.
func (s *Store) randString(alphabet string, n int) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	for len(out) < n {
		for _, b := range s.randBytes(n - len(out) + 8) {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out)
}

// newKeyID returns prefix + 16 uppercase alphanumerics (AKIA..., ASIA...,
// and the stem of AIDA.../AROA... unique ids).
func (s *Store) newKeyID(prefix string) string { return prefix + s.randString(upperAlnum, 16) }

func (s *Store) newSecret() string { return s.randString(secretChars, 40) }

func (s *Store) newSessionToken() string {
	return tokenPrefix + base64.StdEncoding.EncodeToString(s.randBytes(tokenRawSize))
}

func (s *Store) newRequestID() string {
	s.randMu.Lock()
	defer s.randMu.Unlock()
	id, err := uuid.NewRandomFromReader(s.rand)
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

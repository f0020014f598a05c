package iam

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The STS awsquery API: GetSessionToken, AssumeRole, GetFederationToken and
// GetCallerIdentity, with the rules of docs/fakeaws.md section 2 and the facts of
// docs/credentials.md section 2.

const (
	maxSTSBody = 64 << 10
	// maxPolicyChars is the plain-text limit on an inline session policy.
	maxPolicyChars = 2048
	maxPolicyARNs  = 10
	// packedARNUnits is what one managed policy ARN adds to the packed size
	// (see packedPolicySize).
	packedARNUnits = 64
	// chainedMax is the hard cap on a role session assumed with temporary
	// credentials (docs/credentials.md 2.2).
	chainedMax = 3600
)

// namePattern is STS's pattern for RoleSessionName, SourceIdentity and
// GetFederationToken's Name.
var namePattern = regexp.MustCompile(`^[\w+=,.@-]*$`)

// STSHandler serves the STS awsquery protocol: a form-encoded POST (or GET)
// with Action and Version, SigV4-verified with service "sts", answered with
// AWS's XML shapes and <ErrorResponse> errors.
func (s *Store) STSHandler() http.Handler { return http.HandlerFunc(s.serveSTS) }

func (s *Store) serveSTS(w http.ResponseWriter, r *http.Request) {
	reqID := s.newRequestID()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSTSBody+1))
	if err != nil {
		s.writeSTSError(w, reqID, &stsError{Status: http.StatusBadRequest, Code: "MalformedInput", Message: "could not read request body"})
		return
	}
	if len(body) > maxSTSBody {
		s.writeSTSError(w, reqID, &stsError{Status: http.StatusRequestEntityTooLarge, Code: "RequestEntityTooLarge", Message: "Request body too large"})
		return
	}
	form := r.URL.Query()
	switch r.Method {
	case http.MethodPost:
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
			bodyForm, _ := url.ParseQuery(string(body))
			for k, vs := range bodyForm {
				form[k] = append(form[k], vs...)
			}
		}
	case http.MethodGet:
	default:
		s.writeSTSError(w, reqID, &stsError{Status: http.StatusMethodNotAllowed, Code: "InvalidAction", Message: "Only POST and GET are supported"})
		return
	}
	action := form.Get("Action")

	if d := s.delay(); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	call := Call{Time: s.now(), Action: action, Fields: redactFields(form)}
	finish := func(status int, result string) {
		call.Status, call.Result = status, result
		s.record(call)
	}

	caller, apiErr := s.Verify(r, body, "sts", action)
	if apiErr != nil {
		code, status := stsCode(apiErr)
		finish(status, code)
		s.writeSTSError(w, reqID, &stsError{Status: status, Code: code, Message: apiErr.Message})
		return
	}
	call.Caller, call.CallerKeyID = caller.ARN(), caller.AccessKeyID

	var resp any
	var issued *Credential
	var e *stsError
	if v := form.Get("Version"); v != stsVersion {
		e = &stsError{Status: http.StatusBadRequest, Code: "InvalidAction", Message: "Could not find operation " + action + " for version " + v}
	} else {
		switch action {
		case "GetSessionToken":
			resp, issued, e = s.getSessionToken(caller, form, reqID)
		case "AssumeRole":
			resp, issued, e = s.assumeRole(caller, form, reqID)
		case "GetFederationToken":
			resp, issued, e = s.getFederationToken(caller, form, reqID)
		case "GetCallerIdentity":
			resp = s.getCallerIdentity(caller, reqID)
		default:
			e = &stsError{Status: http.StatusBadRequest, Code: "InvalidAction", Message: "Could not find operation " + action + " for version " + v}
		}
	}
	if e != nil {
		finish(e.Status, e.Code)
		s.writeSTSError(w, reqID, e)
		return
	}
	if issued != nil {
		call.IssuedKeyID = issued.AccessKeyID
	}
	finish(http.StatusOK, "OK")
	s.writeXML(w, http.StatusOK, reqID, resp)
}

func (s *Store) delay() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stsDelay
}

// redactFields copies the form without the one-time password.
func redactFields(form url.Values) url.Values {
	out := cloneValues(form)
	if _, ok := out["TokenCode"]; ok {
		out["TokenCode"] = []string{redacted}
	}
	return out
}

func (s *Store) getSessionToken(caller Credential, form url.Values, reqID string) (any, *Credential, *stsError) {
	if caller.Temporary() {
		return nil, nil, accessDenied("Cannot call GetSessionToken with session credentials")
	}
	dur, e := durationParam(form, 900, 129600, 43200)
	if e != nil {
		return nil, nil, e
	}
	mfa, e := s.checkMFA(caller, form)
	if e != nil {
		return nil, nil, e
	}
	c := s.issue(caller, dur, func(c *Credential) {
		c.Principal = caller.Principal
		c.UserID = caller.UserID
		c.MFA = mfa
	})
	var resp getSessionTokenResponse
	resp.XMLNS, resp.Metadata.RequestID = stsNamespace, reqID
	resp.Result.Credentials = toXMLCredentials(c)
	return resp, &c, nil
}

func (s *Store) getFederationToken(caller Credential, form url.Values, reqID string) (any, *Credential, *stsError) {
	if caller.Temporary() {
		return nil, nil, accessDenied("Cannot call GetFederationToken with session credentials")
	}
	if form.Has("SerialNumber") || form.Has("TokenCode") {
		// The API has no MFA parameters; a broker that sends them believes in
		// an MFA session it will not get.
		return nil, nil, validationError("GetFederationToken does not accept the MFA parameters SerialNumber and TokenCode")
	}
	name := form.Get("Name")
	if e := nameParam(form, "Name", "name", 2, 32); e != nil {
		return nil, nil, e
	}
	dur, e := durationParam(form, 900, 129600, 43200)
	if e != nil {
		return nil, nil, e
	}
	pol, e := policyParams(form)
	if e != nil {
		return nil, nil, e
	}
	c := s.issue(caller, dur, func(c *Credential) {
		c.Principal = Principal{Type: PrincipalFederatedUser, Name: name}
		c.UserID = s.account + ":" + name
		c.SessionPolicy, c.SessionPolicyARNs = pol.policy, pol.arns
	})
	var resp getFederationTokenResponse
	resp.XMLNS, resp.Metadata.RequestID = stsNamespace, reqID
	resp.Result.Credentials = toXMLCredentials(c)
	resp.Result.FederatedUser.FederatedUserID = c.UserID
	resp.Result.FederatedUser.Arn = c.ARN()
	resp.Result.PackedPolicySize = pol.packed
	return resp, &c, nil
}

func (s *Store) assumeRole(caller Credential, form url.Values, reqID string) (any, *Credential, *stsError) {
	// Parameter syntax first, as AWS validates before it authorizes.
	roleARN := form.Get("RoleArn")
	if !form.Has("RoleArn") {
		return nil, nil, validationError("1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null")
	}
	if n := utf8.RuneCountInString(roleARN); n < 20 || n > 2048 {
		limit := "greater than or equal to 20"
		if n > 2048 {
			limit = "less than or equal to 2048"
		}
		return nil, nil, validationError("1 validation error detected: Value '" + roleARN + "' at 'roleArn' failed to satisfy constraint: " +
			"Member must have length " + limit)
	}
	sessionName := form.Get("RoleSessionName")
	if e := nameParam(form, "RoleSessionName", "roleSessionName", 2, 64); e != nil {
		return nil, nil, e
	}
	requested, e := durationParam(form, 900, 43200, 3600)
	if e != nil {
		return nil, nil, e
	}
	pol, e := policyParams(form)
	if e != nil {
		return nil, nil, e
	}
	sourceID := form.Get("SourceIdentity")
	if form.Has("SourceIdentity") {
		if e := nameParam(form, "SourceIdentity", "sourceIdentity", 2, 64); e != nil {
			return nil, nil, e
		}
	}

	// Who may assume the role.
	notAuthorized := accessDenied("User: " + caller.ARN() + " is not authorized to perform: sts:AssumeRole on resource: " + roleARN)
	role, ok := s.roleByARN(roleARN)
	if !ok || caller.Principal.Type == PrincipalFederatedUser {
		return nil, nil, notAuthorized
	}
	if len(role.TrustedUsers) > 0 && !contains(role.TrustedUsers, caller.BaseUser) {
		return nil, nil, notAuthorized
	}
	mfa, e := s.checkMFA(caller, form)
	if e != nil {
		return nil, nil, e
	}
	mfa = mfa || caller.MFA
	if role.RequireMFA && !mfa {
		return nil, nil, notAuthorized
	}

	// Duration against the chaining cap and the role's maximum.
	if caller.Temporary() && requested > chainedMax*time.Second {
		return nil, nil, validationError("The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
	}
	if requested > role.MaxSession {
		return nil, nil, validationError("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}

	// SourceIdentity is sticky down a chain.
	if caller.SourceIdentity != "" {
		if sourceID != "" && sourceID != caller.SourceIdentity {
			return nil, nil, validationError("The SourceIdentity of a role session cannot be changed once it is set: the calling session has '" +
				caller.SourceIdentity + "' and the request asks for '" + sourceID + "'.")
		}
		sourceID = caller.SourceIdentity
	}

	c := s.issue(caller, requested, func(c *Credential) {
		c.Principal = Principal{Type: PrincipalAssumedRole, Name: role.Name, SessionName: sessionName}
		c.UserID = role.id + ":" + sessionName
		c.MFA = mfa
		c.SessionPolicy, c.SessionPolicyARNs = pol.policy, pol.arns
		c.SourceIdentity = sourceID
	})
	var resp assumeRoleResponse
	resp.XMLNS, resp.Metadata.RequestID = stsNamespace, reqID
	resp.Result.Credentials = toXMLCredentials(c)
	resp.Result.AssumedRoleUser.AssumedRoleID = c.UserID
	resp.Result.AssumedRoleUser.Arn = c.ARN()
	resp.Result.PackedPolicySize = pol.packed
	resp.Result.SourceIdentity = c.SourceIdentity
	return resp, &c, nil
}

func (s *Store) getCallerIdentity(caller Credential, reqID string) any {
	var resp getCallerIdentityResponse
	resp.XMLNS, resp.Metadata.RequestID = stsNamespace, reqID
	resp.Result.Arn, resp.Result.UserID, resp.Result.Account = caller.ARN(), caller.UserID, caller.Account
	return resp
}

// issue mints a temporary credential derived from parent. The lifetime is
// CredTTL when set, else the requested duration; expiry is truncated to the
// second so that the fake and the client, which parses the second-resolution
// <Expiration>, agree on the exact instant.
func (s *Store) issue(parent Credential, requested time.Duration, fill func(*Credential)) Credential {
	ttl := requested
	if s.credTTL > 0 {
		ttl = s.credTTL
	}
	now := s.now()
	c := &Credential{
		SecretAccessKey: s.newSecret(),
		SessionToken:    s.newSessionToken(),
		Expires:         now.Add(ttl).Truncate(time.Second),
		ParentKeyID:     parent.AccessKeyID,
		Account:         s.account,
		BaseUser:        parent.BaseUser,
		IssuedAt:        now,
	}
	fill(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		c.AccessKeyID = s.newKeyID("ASIA")
		if _, taken := s.creds[c.AccessKeyID]; !taken {
			break
		}
	}
	s.putLocked(c)
	return c.clone()
}

func (s *Store) roleByARN(arn string) (roleEntry, bool) {
	rest, ok := strings.CutPrefix(arn, "arn:aws:iam::"+s.account+":role/")
	if !ok || rest == "" {
		return roleEntry{}, false
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 { // a role path: role/path/name
		rest = rest[i+1:]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.roles[rest]
	if !ok {
		return roleEntry{}, false
	}
	return *r, true
}

// checkMFA validates SerialNumber+TokenCode if given. It returns true when a
// valid pair was presented, false when none was, and AWS's errors otherwise.
func (s *Store) checkMFA(caller Credential, form url.Values) (bool, *stsError) {
	serial, code := form.Get("SerialNumber"), form.Get("TokenCode")
	if serial == "" && code == "" {
		return false, nil
	}
	if serial == "" || code == "" {
		return false, accessDenied("MultiFactorAuthentication failed, must provide both MFA serial number and one time pass code.")
	}
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		// The value is a one-time password; unlike AWS's usual message, do
		// not echo it.
		return false, validationError("1 validation error detected: Value at 'tokenCode' failed to satisfy constraint: " +
			"Member must satisfy regular expression pattern: [\\d]*")
	}
	s.mu.Lock()
	u, ok := s.users[caller.BaseUser]
	owned := ok && u.mfa[serial]
	s.mu.Unlock()
	if !owned || !s.mfaValid(serial, code) {
		return false, accessDenied("MultiFactorAuthentication failed with invalid MFA one time pass code.")
	}
	return true, nil
}

// durationParam parses DurationSeconds within [lo, hi], defaulting to def.
func durationParam(form url.Values, lo, hi, def int) (time.Duration, *stsError) {
	if !form.Has("DurationSeconds") {
		return time.Duration(def) * time.Second, nil
	}
	v := form.Get("DurationSeconds")
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, validationError("1 validation error detected: Value '" + v + "' at 'durationSeconds' failed to satisfy constraint: Member must be a number")
	}
	if n < lo {
		return 0, validationError("1 validation error detected: Value '" + v + "' at 'durationSeconds' failed to satisfy constraint: " +
			"Member must have value greater than or equal to " + strconv.Itoa(lo))
	}
	if n > hi {
		return 0, validationError("1 validation error detected: Value '" + v + "' at 'durationSeconds' failed to satisfy constraint: " +
			"Member must have value less than or equal to " + strconv.Itoa(hi))
	}
	return time.Duration(n) * time.Second, nil
}

// nameParam checks a required name field: length and STS's [\w+=,.@-]*.
func nameParam(form url.Values, field, member string, lo, hi int) *stsError {
	if !form.Has(field) {
		return validationError("1 validation error detected: Value null at '" + member + "' failed to satisfy constraint: Member must not be null")
	}
	v := form.Get(field)
	prefix := "1 validation error detected: Value '" + v + "' at '" + member + "' failed to satisfy constraint: "
	switch n := utf8.RuneCountInString(v); {
	case n < lo:
		return validationError(prefix + "Member must have length greater than or equal to " + strconv.Itoa(lo))
	case n > hi:
		return validationError(prefix + "Member must have length less than or equal to " + strconv.Itoa(hi))
	}
	if !namePattern.MatchString(v) {
		return validationError(prefix + "Member must satisfy regular expression pattern: [\\w+=,.@-]*")
	}
	return nil
}

type sessionPolicy struct {
	policy string
	arns   []string
	packed *int // nil when no session policy was passed
}

// policyParams validates Policy and PolicyArns.member.N.arn.
//
// PackedPolicySize is reported as ceil(100 × (bytes of the compacted inline
// policy + 64 × number of policy ARNs) / 2048): a percentage of the packed
// limit, monotone in the policy's size. Above 100 the call fails with
// PackedPolicyTooLarge, which can only happen with managed ARNs on top of a
// near-limit inline policy, as at AWS where ARNs count toward the packed size.
func policyParams(form url.Values) (sessionPolicy, *stsError) {
	var sp sessionPolicy
	keys := make([]string, 0)
	for k := range form {
		if strings.HasPrefix(k, "PolicyArns.member.") && strings.HasSuffix(k, ".arn") {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return memberIndex(keys[i]) < memberIndex(keys[j]) })
	for _, k := range keys {
		sp.arns = append(sp.arns, form.Get(k))
	}
	if len(sp.arns) > maxPolicyARNs {
		return sp, validationError("1 validation error detected: Value at 'policyArns' failed to satisfy constraint: " +
			"Member must have length less than or equal to 10")
	}
	for _, a := range sp.arns {
		if n := len(a); n < 20 || n > 2048 {
			return sp, validationError("1 validation error detected: Value '" + a + "' at 'policyArns.member.arn' failed to satisfy constraint: " +
				"Member must have length greater than or equal to 20")
		}
	}
	compact := 0
	if form.Has("Policy") {
		sp.policy = form.Get("Policy")
		n := utf8.RuneCountInString(sp.policy)
		if n < 1 {
			return sp, validationError("1 validation error detected: Value '' at 'policy' failed to satisfy constraint: Member must have length greater than or equal to 1")
		}
		if n > maxPolicyChars {
			// AWS echoes the value; 2 KiB of policy makes that message
			// unreadable, so the fake reports its length instead.
			return sp, validationError("1 validation error detected: Value at 'policy' (" + strconv.Itoa(n) + " characters) failed to satisfy constraint: " +
				"Member must have length less than or equal to 2048")
		}
		if err := ValidatePolicy(sp.policy); err != nil {
			return sp, &stsError{Status: http.StatusBadRequest, Code: "MalformedPolicyDocument", Message: err.Error()}
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(sp.policy)); err != nil {
			return sp, &stsError{Status: http.StatusBadRequest, Code: "MalformedPolicyDocument", Message: "The policy is not in the valid JSON format."}
		}
		compact = buf.Len()
	}
	if sp.policy == "" && len(sp.arns) == 0 {
		return sp, nil
	}
	units := compact + packedARNUnits*len(sp.arns)
	pct := (100*units + maxPolicyChars - 1) / maxPolicyChars
	if pct > 100 {
		return sp, &stsError{Status: http.StatusBadRequest, Code: "PackedPolicyTooLarge",
			Message: "Packed size of consumed session policies and session tags exceeds the limit (" + strconv.Itoa(pct) + "% of the allowed size)."}
	}
	sp.packed = &pct
	return sp, nil
}

func memberIndex(key string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(key, "PolicyArns.member."), ".arn"))
	return n
}

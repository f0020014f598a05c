package iam

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SigV4 verification, per docs/fakeaws.md section 3. The fake recomputes every
// signature from the secret it stores, so a client that signs with the wrong
// key, region, service, clock, payload or header set fails here exactly as it
// would at AWS, with AWS's error types.
//
// Both forms of SigV4 are accepted: the Authorization header (what the SDK's
// clients and v4.Signer.SignHTTP produce) and query-string presigning
// (v4.Signer.PresignHTTP, X-Amz-Signature in the URL), which a websocket
// client may use for the upgrade.

const (
	sigAlgorithm  = "AWS4-HMAC-SHA256"
	amzDateFormat = "20060102T150405Z"
	scopeTerm     = "aws4_request"
	// emptySHA256 is the payload hash of a request without a body, such as
	// the websocket upgrade GET.
	emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	// maxPresignExpires is AWS's one-week ceiling for X-Amz-Expires.
	maxPresignExpires = 604800
)

// Verify checks the SigV4 signature of r, whose body has already been read
// into body, for service ("ssm", "sts", "ssmmessages"). operation is the API
// operation name; it only selects the HTTP status of ExpiredTokenException.
// On success it returns the caller's credential.
func (s *Store) Verify(r *http.Request, body []byte, service, operation string) (Credential, *APIError) {
	c, e, reason := s.check(r, body, service, operation)
	if e != nil {
		s.countSigV4Failure(e, reason)
		return Credential{}, e
	}
	return c, nil
}

// VerifyPresent is Verify for the websocket upgrade (operation
// "OpenDataChannel", empty payload). An upgrade may be unsigned (the token in
// the opening frame authenticates it), so a request with neither an
// Authorization header nor presigning query parameters returns
// (Credential{}, nil, false); anything else is verified and returns true.
func (s *Store) VerifyPresent(r *http.Request, service string) (Credential, *APIError, bool) {
	_, hasHeader := r.Header["Authorization"]
	if !hasHeader && !isPresigned(r.URL.Query()) {
		return Credential{}, nil, false
	}
	c, e := s.Verify(r, nil, service, "OpenDataChannel")
	return c, e, true
}

func isPresigned(q url.Values) bool {
	for _, k := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"} {
		if _, ok := q[k]; ok {
			return true
		}
	}
	return false
}

// authParts is what the request claims about its own signature.
type authParts struct {
	akid, scopeDate, region, service, term string
	signedHeaders                          []string // lowercased and sorted
	signature                              string
	amzDate                                string
	token                                  string
	tokenSent                              bool
	presigned                              bool
	expires                                time.Duration // presigned only; 0 = not given
}

// check returns the credential, or the error and a short reason for the
// SigV4FailureReasons counter.
func (s *Store) check(r *http.Request, body []byte, service, operation string) (Credential, *APIError, string) {
	query := r.URL.Query()
	a, e, reason := parseAuth(r, query)
	if e != nil {
		return Credential{}, e, reason
	}

	t, err := time.Parse(amzDateFormat, a.amzDate)
	if err != nil {
		return Credential{}, errIncomplete("Date must be in ISO-8601 'basic format'. Got '" + a.amzDate +
			"'. See http://en.wikipedia.org/wiki/ISO_8601"), "date-format"
	}

	// The credential scope.
	if a.scopeDate != a.amzDate[:8] {
		return Credential{}, errInvalidSig(fmt.Sprintf("Date in Credential scope does not match YYYYMMDD from "+
			"ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", a.scopeDate, a.amzDate[:8], a.amzDate)), "scope-date"
	}
	if a.region != s.region {
		return Credential{}, errInvalidSig("Credential should be scoped to a valid region."), "scope-region"
	}
	if a.service != service {
		return Credential{}, errInvalidSig("Credential should be scoped to correct service: '" + service + "'."), "scope-service"
	}
	if a.term != scopeTerm {
		return Credential{}, errInvalidSig("Credential should be scoped with a valid terminator: 'aws4_request', not '" +
			a.term + "'."), "scope-terminator"
	}

	// The signed header set.
	if !contains(a.signedHeaders, "host") {
		return Credential{}, errInvalidSig("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."), "unsigned-host"
	}
	if !a.presigned {
		if !contains(a.signedHeaders, "x-amz-date") {
			return Credential{}, errInvalidSig("'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."), "unsigned-date"
		}
		if a.tokenSent && !contains(a.signedHeaders, "x-amz-security-token") {
			return Credential{}, errInvalidSig("'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization."), "unsigned-token"
		}
	}

	// Freshness.
	now := s.now().UTC()
	if e := s.checkTime(a, t, now); e != nil {
		return Credential{}, e, "skew"
	}

	// The key and its token. Expiry is judged before the signature, as AWS
	// does (the token is validated first), so an expired credential answers
	// ExpiredTokenException even if the client also signed badly.
	c, ok := s.Lookup(a.akid)
	if !ok {
		return Credential{}, errUnrecognized(), "unknown-key"
	}
	if a.tokenSent != c.Temporary() || !hmac.Equal([]byte(a.token), []byte(c.SessionToken)) {
		return Credential{}, errUnrecognized(), "token-mismatch"
	}
	if c.ExpiredAt(now) {
		return Credential{}, &APIError{Status: s.expiredStatusFor(operation), Type: ErrExpiredToken, Message: msgExpired}, "expired"
	}

	// The payload. A client may state the hash in X-Amz-Content-Sha256, and
	// that value is what it signed; it must also be the body's real hash, or
	// a signed header could vouch for any body.
	bodyHash := payloadHash(body)
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != bodyHash {
		return Credential{}, errInvalidSig("The provided 'x-amz-content-sha256' header does not match what was computed."), "payload-hash"
	}

	// The signature itself.
	want := signature(c.SecretAccessKey, a, canonicalRequest(r, query, bodyHash, a))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return Credential{}, errInvalidSig(msgSignatureDiffer), "signature-mismatch"
	}
	return c, nil, ""
}

// parseAuth extracts the signature parts from the Authorization header or,
// for a presigned URL, the query.
func parseAuth(r *http.Request, q url.Values) (authParts, *APIError, string) {
	var a authParts
	headers := r.Header.Values("Authorization")
	presigned := isPresigned(q)
	switch {
	case len(headers) == 0 && !presigned:
		return a, errMissingAuth(), "missing"
	case len(headers) > 0 && presigned:
		return a, errIncomplete("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, " +
			"Signature query string parameter or the Authorization header should be specified"), "two-mechanisms"
	case len(headers) > 1:
		return a, errIncomplete("Only one Authorization header is allowed."), "malformed"
	}

	var credential, signed string
	if presigned {
		a.presigned = true
		var missing []string
		for _, k := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders"} {
			if q.Get(k) == "" {
				missing = append(missing, "'"+k+"'")
			}
		}
		if len(missing) > 0 {
			return a, errIncomplete("AWS query-string parameters must include " + strings.Join(missing, ", ") +
				". Re-examine the query-string parameters."), "incomplete"
		}
		if alg := q.Get("X-Amz-Algorithm"); alg != sigAlgorithm {
			return a, errIncomplete("Unsupported AWS 'algorithm': '" + alg + "'"), "algorithm"
		}
		credential, signed, a.signature, a.amzDate = q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature"), q.Get("X-Amz-Date")
		if toks, ok := q["X-Amz-Security-Token"]; ok {
			a.token, a.tokenSent = strings.Join(toks, ","), true
		}
		if v := q.Get("X-Amz-Expires"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return a, errIncomplete("X-Amz-Expires should be a number"), "expires-format"
			}
			if n > maxPresignExpires {
				return a, errIncomplete("X-Amz-Expires must be less than a week (in seconds) that is 604800"), "expires-format"
			}
			a.expires = time.Duration(n) * time.Second
		}
	} else {
		h := headers[0]
		rest, ok := strings.CutPrefix(h, sigAlgorithm+" ")
		if !ok {
			alg, _, _ := strings.Cut(h, " ")
			return a, errIncomplete("Unsupported AWS 'algorithm': '" + alg + "'"), "algorithm"
		}
		fields := map[string]string{}
		for _, part := range strings.Split(rest, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok {
				fields[k] = v
			}
		}
		var missing []string
		for _, k := range []string{"Credential", "Signature", "SignedHeaders"} {
			if fields[k] == "" {
				missing = append(missing, "Authorization header requires '"+k+"' parameter.")
			}
		}
		a.amzDate = r.Header.Get("X-Amz-Date")
		if a.amzDate == "" {
			missing = append(missing, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
		}
		if len(missing) > 0 {
			return a, errIncomplete(strings.Join(missing, " ")), "incomplete"
		}
		credential, signed, a.signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
		if toks, ok := r.Header["X-Amz-Security-Token"]; ok {
			a.token, a.tokenSent = strings.Join(toks, ","), true
		}
	}

	parts := strings.Split(credential, "/")
	if len(parts) != 5 {
		return a, errIncomplete("Credential must have exactly 5 slash-delimited elements, e.g. " +
			"keyid/date/region/service/term, got '" + credential + "'"), "credential-format"
	}
	a.akid, a.scopeDate, a.region, a.service, a.term = parts[0], parts[1], parts[2], parts[3], parts[4]
	if len(a.amzDate) < 8 {
		return a, errIncomplete("Date must be in ISO-8601 'basic format'. Got '" + a.amzDate + "'."), "date-format"
	}
	for _, h := range strings.Split(signed, ";") {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			a.signedHeaders = append(a.signedHeaders, h)
		}
	}
	sort.Strings(a.signedHeaders)
	return a, nil, ""
}

// checkTime enforces ±skew around X-Amz-Date for header signatures; a
// presigned URL with X-Amz-Expires is valid from its date (less the skew)
// until date+expires.
func (s *Store) checkTime(a authParts, t, now time.Time) *APIError {
	window := s.skew
	if a.presigned && a.expires > 0 {
		window = a.expires
	}
	if earliest := now.Add(-window); t.Before(earliest) {
		return errInvalidSig(fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %s.)",
			t.Format(amzDateFormat), earliest.Format(amzDateFormat), now.Format(amzDateFormat), fmtWindow(window)))
	}
	if latest := now.Add(s.skew); t.After(latest) {
		return errInvalidSig(fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + %s.)",
			t.Format(amzDateFormat), latest.Format(amzDateFormat), now.Format(amzDateFormat), fmtWindow(s.skew)))
	}
	return nil
}

func fmtWindow(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + " min"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + " sec"
}

// canonicalRequest builds the SigV4 canonical request:
//
//	method \n canonical URI \n canonical query \n canonical headers \n signed headers \n payload hash
func canonicalRequest(r *http.Request, query url.Values, payloadHash string, a authParts) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(query, a.presigned))
	b.WriteByte('\n')
	for _, h := range a.signedHeaders {
		b.WriteString(h)
		b.WriteByte(':')
		b.WriteString(canonicalHeaderValue(r, h))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(a.signedHeaders, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

// canonicalURI escapes the already-escaped path once more, byte by byte,
// leaving only RFC 3986 unreserved characters and '/'. Non-S3 services
// double-encode like this, and so does the SDK's signer.
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if isUnreserved(c) || c == '/' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// canonicalQuery encodes every name and value (space as %20, everything but
// the unreserved set escaped) and sorts the pairs after encoding, by name
// then value. A presigned request's own X-Amz-Signature is left out.
func canonicalQuery(q url.Values, presigned bool) string {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range q {
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		ek := uriEncode(k)
		for _, v := range vs {
			pairs = append(pairs, pair{ek, uriEncode(v)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// canonicalHeaderValue returns a signed header's value as the signer saw it:
// host from r.Host (Go moves it out of r.Header), content-length from
// r.ContentLength, anything else from the header with each value trimmed,
// runs of spaces collapsed, and multiple values joined with ",".
func canonicalHeaderValue(r *http.Request, name string) string {
	switch name {
	case "host":
		return collapseSpaces(r.Host)
	case "content-length":
		if r.ContentLength >= 0 {
			return strconv.FormatInt(r.ContentLength, 10)
		}
	}
	vs := r.Header.Values(name)
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = collapseSpaces(v)
	}
	return strings.Join(out, ",")
}

func collapseSpaces(v string) string {
	v = strings.TrimSpace(v)
	if !strings.Contains(v, "  ") {
		return v
	}
	var b strings.Builder
	space := false
	for i := 0; i < len(v); i++ {
		if v[i] == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

func payloadHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// signature derives the signing key from the secret and scope and signs the
// string to sign; the result is lowercase hex.
func signature(secret string, a authParts, canonical string) string {
	scope := a.scopeDate + "/" + a.region + "/" + a.service + "/" + scopeTerm
	sum := sha256.Sum256([]byte(canonical))
	toSign := sigAlgorithm + "\n" + a.amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := hmacSHA256([]byte("AWS4"+secret), a.scopeDate)
	k = hmacSHA256(k, a.region)
	k = hmacSHA256(k, a.service)
	k = hmacSHA256(k, scopeTerm)
	return hex.EncodeToString(hmacSHA256(k, toSign))
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

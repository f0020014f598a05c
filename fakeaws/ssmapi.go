package fakeaws

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/google/uuid"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

const jsonContentType = "application/x-amz-json-1.1"

var documentNamePattern = regexp.MustCompile(`^[a-zA-Z0-9_\-.:/]{3,128}$`)

// handleAPI serves POST / for STS (awsquery, dispatched on Action), SSM and
// EC2 Instance Connect (JSON 1.1, dispatched on X-Amz-Target).
func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	if isEC2Request(r) {
		s.handleEC2(w, r)
		return
	}
	if r.Header.Get("X-Amz-Target") == "" {
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		s.IAM.STSHandler().ServeHTTP(rec, r)
		return
	}
	target := r.Header.Get("X-Amz-Target")
	if strings.HasPrefix(target, eicTargetPrefix) {
		s.handleEIC(w, r)
		return
	}
	op := strings.TrimPrefix(target, "AmazonSSM.")
	rec := &statusRecorder{ResponseWriter: w, status: 200}
	defer func() { s.stats.apiCall(op, rec.status) }()
	w = rec
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		s.writeError(w, &iam.APIError{Status: 404, Type: "UnknownOperationException", Message: "unknown path or method"})
		return
	}
	if !strings.HasPrefix(target, "AmazonSSM.") {
		s.writeError(w, &iam.APIError{Status: 400, Type: "UnknownOperationException", Message: "unknown target " + target})
		return
	}
	body, ok := s.readJSONBody(w, r, 1<<20)
	if !ok {
		return
	}
	cred, aerr := s.IAM.Verify(r, body, "ssm", op)
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}
	if f := s.takeAPIFault(op); f != nil {
		s.writeError(w, f)
		return
	}
	var out any
	switch op {
	case "StartSession":
		out, aerr = s.startSession(cred, body)
	case "ResumeSession":
		out, aerr = s.resumeSession(cred, body)
	case "TerminateSession":
		out, aerr = s.terminateSession(cred, body)
	case "DescribeInstanceInformation":
		out, aerr = s.describeInstanceInformation(cred, body)
	default:
		aerr = &iam.APIError{Status: 400, Type: "UnknownOperationException", Message: "operation " + op + " is not implemented by fakeaws"}
	}
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", jsonContentType)
	w.Header().Set("x-amzn-RequestId", uuid.NewString())
	w.WriteHeader(200)
	_, _ = w.Write(b)
}

func (s *Server) writeError(w http.ResponseWriter, e *iam.APIError) {
	s.IAM.WriteJSONError(w, e)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// decodeStrict parses a JSON body into v, refusing type mismatches such as a
// string where the model says list of strings.
func decodeStrict(body []byte, v any) *iam.APIError {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return &iam.APIError{Status: 400, Type: "SerializationException", Message: err.Error()}
	}
	return nil
}

func validation(format string, args ...any) *iam.APIError {
	return &iam.APIError{Status: 400, Type: "ValidationException", Message: fmt.Sprintf(format, args...)}
}

func accessDenied(c iam.Credential, account, action, resource string) *iam.APIError {
	return &iam.APIError{Status: 400, Type: "AccessDeniedException",
		Message: fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s because no session policy allows the %s action",
			c.Principal.ARN(account), action, resource, action)}
}

// allowed applies the caller's session policy, if any.
func (s *Server) allowed(c iam.Credential, action string, resources ...string) *iam.APIError {
	for _, res := range resources {
		ok, err := iam.Allowed(c.SessionPolicy, action, res)
		if err != nil || !ok {
			return accessDenied(c, s.opts.Account, action, res)
		}
	}
	return nil
}

type startSessionRequest struct {
	Target       *string             `json:"Target"`
	DocumentName *string             `json:"DocumentName"`
	Parameters   map[string][]string `json:"Parameters"`
	Reason       *string             `json:"Reason"`
}

type sessionResponse struct {
	SessionID  string `json:"SessionId"`
	TokenValue string `json:"TokenValue,omitempty"`
	StreamURL  string `json:"StreamUrl,omitempty"`
}

func (s *Server) startSession(cred iam.Credential, body []byte) (any, *iam.APIError) {
	var req startSessionRequest
	if e := decodeStrict(body, &req); e != nil {
		return nil, e
	}
	if req.Target == nil || len(*req.Target) < 1 || len(*req.Target) > 400 {
		return nil, validation("1 validation error detected: Value at 'target' failed to satisfy constraint: Member must have length between 1 and 400")
	}
	docName := DocumentShell
	if req.DocumentName != nil {
		docName = *req.DocumentName
		if !documentNamePattern.MatchString(docName) {
			return nil, validation("1 validation error detected: Value '%s' at 'documentName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9_\\-.:/]{3,128}$", docName)
		}
	}
	if req.Reason != nil && (len(*req.Reason) < 1 || len(*req.Reason) > 256) {
		return nil, validation("Value at 'reason' failed to satisfy constraint: Member must have length between 1 and 256")
	}
	for k, vs := range req.Parameters {
		if len(k) < 1 || len(k) > 255 {
			return nil, validation("parameter name %q must have length between 1 and 255", k)
		}
		for _, v := range vs {
			if len(v) < 1 || len(v) > 65535 {
				return nil, validation("parameter %q value must have length between 1 and 65535", k)
			}
		}
	}
	target := *req.Target
	if e := s.allowed(cred, "ssm:StartSession", s.instanceARN(target), s.documentARN(docName)); e != nil {
		return nil, e
	}
	s.mu.Lock()
	doc := s.documents[docName]
	t := s.targets[target]
	s.mu.Unlock()
	if doc == nil {
		return nil, &iam.APIError{Status: 400, Type: "InvalidDocument", Message: fmt.Sprintf("Document with name %s does not exist.", docName)}
	}
	props, err := doc.substitute(req.Parameters)
	if err != nil {
		return nil, &iam.APIError{Status: 400, Type: "InvalidParameters", Message: err.Error()}
	}
	if t == nil || !t.Connected || t.NotManaged {
		return nil, &iam.APIError{Status: 400, Type: "TargetNotConnected", Message: target + " is not connected."}
	}
	ss := s.newSession(cred, *t, doc, props)
	tok := ss.issueToken()
	return sessionResponse{SessionID: ss.id, TokenValue: tok, StreamURL: ss.streamURL()}, nil
}

type sessionIDRequest struct {
	SessionID *string `json:"SessionId"`
}

func (s *Server) sessionFromRequest(body []byte) (string, *iam.APIError) {
	var req sessionIDRequest
	if e := decodeStrict(body, &req); e != nil {
		return "", e
	}
	if req.SessionID == nil || len(*req.SessionID) < 1 || len(*req.SessionID) > 96 {
		return "", validation("1 validation error detected: Value at 'sessionId' failed to satisfy constraint: Member must have length between 1 and 96")
	}
	return *req.SessionID, nil
}

func (s *Server) resumeSession(cred iam.Credential, body []byte) (any, *iam.APIError) {
	id, e := s.sessionFromRequest(body)
	if e != nil {
		return nil, e
	}
	if e := s.allowed(cred, "ssm:ResumeSession", s.sessionARN(id)); e != nil {
		return nil, e
	}
	ss := s.session(id)
	if ss == nil {
		return nil, &iam.APIError{Status: 400, Type: "DoesNotExistException", Message: "Session " + id + " does not exist."}
	}
	ss.noteResume()
	if ss.isOver() {
		if s.opts.ResumeTerminatedAsError {
			return nil, &iam.APIError{Status: 400, Type: "DoesNotExistException", Message: "Session " + id + " is terminated."}
		}
		return sessionResponse{SessionID: id}, nil
	}
	if s.opts.RotateCellNumber {
		ss.rotateCell()
	}
	tok := ss.issueToken()
	return sessionResponse{SessionID: id, TokenValue: tok, StreamURL: ss.streamURL()}, nil
}

func (s *Server) terminateSession(cred iam.Credential, body []byte) (any, *iam.APIError) {
	id, e := s.sessionFromRequest(body)
	if e != nil {
		return nil, e
	}
	if e := s.allowed(cred, "ssm:TerminateSession", s.sessionARN(id)); e != nil {
		return nil, e
	}
	if ss := s.session(id); ss != nil {
		ss.noteTerminateAPI()
		ss.terminate("")
	}
	return sessionResponse{SessionID: id}, nil
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func randomToken() string {
	b := make([]byte, 96)
	_, _ = rand.Read(b)
	return "AAEAA" + strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(encodeStd(b)), "=")
}

// readJSONBody checks a JSON 1.1 request's Content-Type and reads its body,
// at most limit bytes; on failure it has answered with a
// SerializationException.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != jsonContentType {
		s.writeError(w, &iam.APIError{Status: 400, Type: "SerializationException", Message: "Content-Type must be " + jsonContentType + ", got " + ct})
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit))
	if err != nil {
		s.writeError(w, &iam.APIError{Status: 400, Type: "SerializationException", Message: "reading body: " + err.Error()})
		return nil, false
	}
	return body, true
}

package iam

import (
	"encoding/xml"
	"net/http"
	"strconv"
	"time"
)

// The awsquery response shapes of STS, element for element as AWS sends them,
// so the SDK's deserializer parses them. Every response is
// <ActionResponse xmlns=...><ActionResult>...</ActionResult>
// <ResponseMetadata><RequestId/></ResponseMetadata></ActionResponse>.

const (
	stsNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"
	stsVersion   = "2011-06-15"
)

type xmlCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

func toXMLCredentials(c Credential) xmlCredentials {
	return xmlCredentials{
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		SessionToken:    c.SessionToken,
		Expiration:      c.Expires.UTC().Format(time.RFC3339),
	}
}

type responseMetadata struct {
	RequestID string `xml:"RequestId"`
}

type getSessionTokenResponse struct {
	XMLName xml.Name `xml:"GetSessionTokenResponse"`
	XMLNS   string   `xml:"xmlns,attr"`
	Result  struct {
		Credentials xmlCredentials `xml:"Credentials"`
	} `xml:"GetSessionTokenResult"`
	Metadata responseMetadata `xml:"ResponseMetadata"`
}

type assumeRoleResponse struct {
	XMLName xml.Name `xml:"AssumeRoleResponse"`
	XMLNS   string   `xml:"xmlns,attr"`
	Result  struct {
		Credentials     xmlCredentials `xml:"Credentials"`
		AssumedRoleUser struct {
			AssumedRoleID string `xml:"AssumedRoleId"`
			Arn           string `xml:"Arn"`
		} `xml:"AssumedRoleUser"`
		PackedPolicySize *int   `xml:"PackedPolicySize,omitempty"`
		SourceIdentity   string `xml:"SourceIdentity,omitempty"`
	} `xml:"AssumeRoleResult"`
	Metadata responseMetadata `xml:"ResponseMetadata"`
}

type getFederationTokenResponse struct {
	XMLName xml.Name `xml:"GetFederationTokenResponse"`
	XMLNS   string   `xml:"xmlns,attr"`
	Result  struct {
		Credentials   xmlCredentials `xml:"Credentials"`
		FederatedUser struct {
			FederatedUserID string `xml:"FederatedUserId"`
			Arn             string `xml:"Arn"`
		} `xml:"FederatedUser"`
		PackedPolicySize *int `xml:"PackedPolicySize,omitempty"`
	} `xml:"GetFederationTokenResult"`
	Metadata responseMetadata `xml:"ResponseMetadata"`
}

type getCallerIdentityResponse struct {
	XMLName xml.Name `xml:"GetCallerIdentityResponse"`
	XMLNS   string   `xml:"xmlns,attr"`
	Result  struct {
		Arn     string `xml:"Arn"`
		UserID  string `xml:"UserId"`
		Account string `xml:"Account"`
	} `xml:"GetCallerIdentityResult"`
	Metadata responseMetadata `xml:"ResponseMetadata"`
}

type errorResponse struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	XMLNS   string   `xml:"xmlns,attr"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

// stsError is an STS failure in awsquery terms.
type stsError struct {
	Status  int
	Code    string
	Message string
}

func validationError(msg string) *stsError {
	return &stsError{Status: http.StatusBadRequest, Code: "ValidationError", Message: msg}
}

func accessDenied(msg string) *stsError {
	return &stsError{Status: http.StatusForbidden, Code: "AccessDenied", Message: msg}
}

// writeXML writes an STS response with the headers AWS sets; Date follows the
// store's clock (see Store.Now).
func (s *Store) writeXML(w http.ResponseWriter, status int, reqID string, v any) {
	body, err := xml.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte("<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code></Error></ErrorResponse>")
	}
	h := w.Header()
	h.Set("Content-Type", "text/xml")
	h.Set("x-amzn-RequestId", reqID)
	h.Set("Date", s.now().UTC().Format(http.TimeFormat))
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *Store) writeSTSError(w http.ResponseWriter, reqID string, e *stsError) {
	var resp errorResponse
	resp.XMLNS = stsNamespace
	resp.Error.Type = "Sender"
	if e.Status >= 500 {
		resp.Error.Type = "Receiver"
	}
	resp.Error.Code, resp.Error.Message = e.Code, e.Message
	resp.RequestID = reqID
	s.writeXML(w, e.Status, reqID, resp)
}

package fakeaws

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// EC2 DescribeInstances over the EC2 Query protocol (docs/fakeaws.md 3.2):
// a form POST with Action and Version, SigV4 with service "ec2", XML in the
// 2016-11-15 namespace, errors as <Response><Errors><Error>. Only i-
// targets are EC2 instances; mi- nodes exist for SSM alone.

const (
	ec2Version   = "2016-11-15"
	ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"
	maxEC2Body   = 1 << 20
)

// isEC2Request routes a POST to the EC2 handler: a SigV4 credential scoped
// to "ec2", or (unsigned, so it gets EC2's own refusal) a form naming an EC2
// action. The body is read and put back for whoever serves it.
func isEC2Request(r *http.Request) bool {
	if r.Header.Get("X-Amz-Target") != "" || r.Method != http.MethodPost {
		return false
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		return strings.Contains(auth, "/ec2/aws4_request")
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		return false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxEC2Body+1))
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return false
	}
	form, _ := url.ParseQuery(string(body))
	return form.Get("Action") == "DescribeInstances"
}

type ec2Error struct {
	Status        int
	Code, Message string
}

type ec2ErrorResponse struct {
	XMLName xml.Name `xml:"Response"`
	Errors  struct {
		Error struct {
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		} `xml:"Error"`
	} `xml:"Errors"`
	RequestID string `xml:"RequestID"`
}

// ec2AuthError translates a SigV4 refusal into EC2's codes: EC2 predates
// the JSON services' names and answers AuthFailure for an unknown key,
// RequestExpired for an expired token.
func ec2AuthError(e *iam.APIError) *ec2Error {
	switch e.Type {
	case iam.ErrUnrecognizedClient:
		return &ec2Error{401, "AuthFailure", "AWS was not able to validate the provided access credentials"}
	case iam.ErrExpiredToken:
		return &ec2Error{400, "RequestExpired", "Request has expired."}
	case iam.ErrMissingAuthenticationToken:
		return &ec2Error{401, "AuthFailure", "AWS was not able to authenticate the request: access credentials are missing"}
	case iam.ErrInvalidSignature:
		return &ec2Error{403, "SignatureDoesNotMatch", e.Message}
	}
	return &ec2Error{400, e.Type, e.Message}
}

func (s *Server) writeEC2(w http.ResponseWriter, status int, v any) {
	body, err := xml.Marshal(v)
	if err != nil {
		status, body = 500, []byte("<Response><Errors><Error><Code>InternalError</Code></Error></Errors></Response>")
	}
	h := w.Header()
	h.Set("Content-Type", "text/xml;charset=UTF-8")
	h.Set("Date", s.IAM.Now().UTC().Format(http.TimeFormat))
	h.Set("Content-Length", strconv.Itoa(len(xml.Header)+len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(body)
}

func (s *Server) writeEC2Error(w http.ResponseWriter, e *ec2Error) {
	var resp ec2ErrorResponse
	resp.Errors.Error.Code, resp.Errors.Error.Message = e.Code, e.Message
	resp.RequestID = uuid.NewString()
	s.writeEC2(w, e.Status, resp)
}

func (s *Server) handleEC2(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, status: 200}
	w = rec
	op := "ec2:unknown"
	defer func() { s.stats.apiCall(op, rec.status) }()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxEC2Body+1))
	if err != nil || len(body) > maxEC2Body {
		s.writeEC2Error(w, &ec2Error{400, "InvalidRequest", "The request body could not be read or is too large."})
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		s.writeEC2Error(w, &ec2Error{400, "InvalidQueryParameter", "The request body is not a valid form."})
		return
	}
	action := form.Get("Action")
	if action == "DescribeInstances" {
		op = action
	}
	cred, aerr := s.IAM.Verify(r, body, "ec2", action)
	if aerr != nil {
		s.writeEC2Error(w, ec2AuthError(aerr))
		return
	}
	if v := form.Get("Version"); v != ec2Version {
		s.writeEC2Error(w, &ec2Error{400, "InvalidParameterValue", fmt.Sprintf("Invalid API version %q; fakeaws speaks %s", v, ec2Version)})
		return
	}
	if action != "DescribeInstances" {
		s.writeEC2Error(w, &ec2Error{400, "InvalidAction", "The action " + action + " is not valid for this web service."})
		return
	}
	if f := s.takeAPIFault(op); f != nil {
		s.writeEC2Error(w, &ec2Error{f.Status, f.Type, f.Message})
		return
	}
	if ok, err := iam.Allowed(cred.SessionPolicy, "ec2:DescribeInstances", "*"); err != nil || !ok {
		s.writeEC2Error(w, &ec2Error{403, "UnauthorizedOperation", fmt.Sprintf("You are not authorized to perform this operation. User: %s is not authorized to perform: ec2:DescribeInstances because no session policy allows the ec2:DescribeInstances action", cred.ARN())})
		return
	}
	resp, e := s.describeInstances(form)
	if e != nil {
		s.writeEC2Error(w, e)
		return
	}
	s.writeEC2(w, 200, resp)
}

// ec2Filter is one Filter.N: Name and its values (ORed, with wildcards).
type ec2Filter struct {
	name   string
	values []string
}

var memberKey = regexp.MustCompile(`^(Filter|InstanceId)\.(\d+)(?:\.(Name|Value)(?:\.(\d+))?)?$`)

// ec2Filters are the filter names the fake implements; EC2 knows many more
// and the fake refuses those as it refuses unknown ones, with EC2's code.
func ec2FilterKnown(name string) bool {
	switch name {
	case "tag-key", "private-ip-address", "private-dns-name", "instance-id", "instance-state-name":
		return true
	}
	return strings.HasPrefix(name, "tag:") && len(name) > len("tag:")
}

// parseEC2Form collects Filter.N.Name/Value.M and InstanceId.N in index
// order and refuses parameters DescribeInstances does not have.
func parseEC2Form(form url.Values) ([]ec2Filter, []string, *ec2Error) {
	filters := map[int]*ec2Filter{}
	ids := map[int]string{}
	for k, vs := range form {
		switch k {
		case "Action", "Version", "MaxResults", "NextToken", "DryRun":
			continue
		}
		m := memberKey.FindStringSubmatch(k)
		if m == nil || len(vs) != 1 {
			return nil, nil, &ec2Error{400, "UnknownParameter", "The parameter " + k + " is not recognized"}
		}
		n, _ := strconv.Atoi(m[2])
		switch {
		case m[1] == "InstanceId" && m[3] == "":
			ids[n] = vs[0]
		case m[1] == "Filter" && m[3] == "Name" && m[4] == "":
			f := filters[n]
			if f == nil {
				f = &ec2Filter{}
				filters[n] = f
			}
			f.name = vs[0]
		case m[1] == "Filter" && m[3] == "Value" && m[4] != "":
			f := filters[n]
			if f == nil {
				f = &ec2Filter{}
				filters[n] = f
			}
			f.values = append(f.values, vs[0])
		default:
			return nil, nil, &ec2Error{400, "UnknownParameter", "The parameter " + k + " is not recognized"}
		}
	}
	var fs []ec2Filter
	for _, n := range sortedKeys(filters) {
		f := filters[n]
		if f.name == "" {
			return nil, nil, &ec2Error{400, "InvalidParameterValue", fmt.Sprintf("The filter 'null' is invalid (Filter.%d has no Name)", n)}
		}
		if !ec2FilterKnown(f.name) {
			return nil, nil, &ec2Error{400, "InvalidParameterValue", "The filter '" + f.name + "' is invalid"}
		}
		sort.Strings(f.values)
		fs = append(fs, *f)
	}
	var idList []string
	for _, n := range sortedKeys(ids) {
		idList = append(idList, ids[n])
	}
	return fs, idList, nil
}

func sortedKeys[V any](m map[int]V) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}

func (f ec2Filter) matches(v instanceView) bool {
	var have []string
	switch {
	case f.name == "tag-key":
		for k := range v.tags() {
			have = append(have, k)
		}
	case strings.HasPrefix(f.name, "tag:"):
		if val, ok := v.tags()[strings.TrimPrefix(f.name, "tag:")]; ok {
			have = []string{val}
		}
	case f.name == "private-ip-address":
		have = []string{v.PrivateIP}
	case f.name == "private-dns-name":
		have = []string{v.PrivateDNS}
	case f.name == "instance-id":
		have = []string{v.ID}
	case f.name == "instance-state-name":
		have = []string{"running"}
	}
	for _, want := range f.values {
		for _, h := range have {
			if h != "" && globMatch(want, h) {
				return true
			}
		}
	}
	return false
}

type ec2Tag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type ec2Instance struct {
	InstanceID    string `xml:"instanceId"`
	ImageID       string `xml:"imageId"`
	InstanceState struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"instanceState"`
	PrivateDNSName   string   `xml:"privateDnsName"`
	DNSName          string   `xml:"dnsName"`
	InstanceType     string   `xml:"instanceType"`
	PrivateIPAddress string   `xml:"privateIpAddress,omitempty"`
	PlatformDetails  string   `xml:"platformDetails"`
	TagSet           []ec2Tag `xml:"tagSet>item"`
}

type ec2Reservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	GroupSet      struct{}      `xml:"groupSet"`
	Instances     []ec2Instance `xml:"instancesSet>item"`
}

type describeInstancesResponse struct {
	XMLName      xml.Name         `xml:"DescribeInstancesResponse"`
	XMLNS        string           `xml:"xmlns,attr"`
	RequestID    string           `xml:"requestId"`
	Reservations []ec2Reservation `xml:"reservationSet>item"`
	NextToken    string           `xml:"nextToken,omitempty"`
}

func (s *Server) describeInstances(form url.Values) (any, *ec2Error) {
	filters, ids, e := parseEC2Form(form)
	if e != nil {
		return nil, e
	}
	size := s.opts.PageSize
	if mr := form.Get("MaxResults"); mr != "" {
		if len(ids) > 0 {
			return nil, &ec2Error{400, "InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults"}
		}
		n, err := strconv.Atoi(mr)
		if err != nil || n < 5 || n > 1000 {
			return nil, &ec2Error{400, "InvalidParameterValue", fmt.Sprintf("Value ( %s ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", mr)}
		}
		size = min(size, n)
	}
	all := s.inventory()
	byID := map[string]instanceView{}
	var ec2s []instanceView
	for _, v := range all {
		if !v.managed() {
			ec2s = append(ec2s, v)
			byID[v.ID] = v
		}
	}
	for _, id := range ids {
		if !ec2IDPattern.MatchString(id) {
			return nil, &ec2Error{400, "InvalidInstanceID.Malformed", fmt.Sprintf("Invalid id: %q", id)}
		}
		if _, ok := byID[id]; !ok {
			return nil, &ec2Error{400, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", id)}
		}
	}
	var matched []instanceView
	for _, v := range ec2s {
		ok := len(ids) == 0
		for _, id := range ids {
			ok = ok || v.ID == id
		}
		for _, f := range filters {
			ok = ok && f.matches(v)
		}
		if ok {
			matched = append(matched, v)
		}
	}
	query := fingerprint(fmt.Sprint(filters), strings.Join(ids, ","))
	offset := 0
	if tok := form.Get("NextToken"); tok != "" {
		var ok bool
		if offset, ok = parsePageToken(tok, "ec2", query); !ok {
			return nil, &ec2Error{400, "InvalidParameterValue", "The value supplied for nextToken is invalid."}
		}
	}
	items, next := page(matched, offset, size)
	resp := describeInstancesResponse{XMLNS: ec2Namespace, RequestID: uuid.NewString(), Reservations: []ec2Reservation{}}
	for _, v := range items {
		in := ec2Instance{InstanceID: v.ID, ImageID: "ami-0fa1ca9559f1892ec", PrivateDNSName: v.PrivateDNS,
			InstanceType: "t3.micro", PrivateIPAddress: v.PrivateIP, PlatformDetails: "Linux/UNIX"}
		in.InstanceState.Code, in.InstanceState.Name = 16, "running"
		tags := v.tags()
		for _, k := range sortedStrings(tags) {
			in.TagSet = append(in.TagSet, ec2Tag{Key: k, Value: tags[k]})
		}
		// One reservation per instance: what a fleet of single launches
		// looks like.
		resp.Reservations = append(resp.Reservations, ec2Reservation{
			ReservationID: "r-" + v.ID[2:], OwnerID: s.opts.Account, Instances: []ec2Instance{in}})
	}
	if next > 0 {
		resp.NextToken = pageToken("ec2", query, next)
	}
	return resp, nil
}

func sortedStrings(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// validPrivateIP reports whether s is a dotted IPv4 address.
func validPrivateIP(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && ip.To4() != nil && strings.Count(s, ".") == 3
}

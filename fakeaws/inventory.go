package fakeaws

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// SSM DescribeInstanceInformation, the inventory behind targets by name
// (docs/fakeaws.md 3.1). What the API reference documents is kept: the
// filter keys and their values, MaxResults 5..50, 1..100 values per
// filter, InvalidFilterKey, InvalidInstanceInformationFilterValue,
// InvalidInstanceId, InvalidNextToken. What it does not say is a choice,
// made least forgiving: every page holds at most Options.PageSize items
// whatever MaxResults asks, and a NextToken is valid only for the query
// that produced it.

// DefaultPageSize is the page size of both describe APIs unless
// Options.PageSize says otherwise: small, so a client that ignores
// NextToken misses instances here rather than only in large accounts.
const DefaultPageSize = 10

// maxPageTokenChars bounds what a NextToken may be.
const maxPageTokenChars = 1024

var (
	ec2IDPattern     = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)
	managedIDPattern = regexp.MustCompile(`^mi-[0-9a-f]{17}$`)
)

// instanceView is a target as both describe APIs see it, copied under the
// server lock.
type instanceView struct {
	Target
	agentVersion string
}

// inventory returns every target, sorted by id, so pages are stable.
func (s *Server) inventory() []instanceView {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]instanceView, 0, len(s.targets))
	for _, t := range s.targets {
		v := instanceView{Target: *t, agentVersion: t.AgentVersion}
		if v.agentVersion == "" {
			v.agentVersion = s.opts.AgentVersion
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (v instanceView) managed() bool { return strings.HasPrefix(v.ID, "mi-") }

func (v instanceView) pingStatus() string {
	if v.Connected {
		return "Online"
	}
	return "ConnectionLost"
}

// tags are the instance's tags; an EC2 instance's Name is its Name tag.
func (v instanceView) tags() map[string]string {
	t := make(map[string]string, len(v.Tags)+1)
	for k, val := range v.Tags {
		t[k] = val
	}
	if v.Name != "" && !v.managed() {
		t["Name"] = v.Name
	}
	return t
}

// pageToken encodes a position for the query with fingerprint query.
func pageToken(op, query string, offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(op + "\x00" + query + "\x00" + strconv.Itoa(offset)))
}

// parsePageToken returns the offset a token stands for, or false when the
// token is not one of ours or belongs to another query.
func parsePageToken(tok, op, query string) (int, bool) {
	if len(tok) > maxPageTokenChars {
		return 0, false
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, false
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 || parts[0] != op || parts[1] != query {
		return 0, false
	}
	n, err := strconv.Atoi(parts[2])
	return n, err == nil && n > 0
}

// fingerprint hashes the parts of a query a token is bound to.
func fingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// page slices items from offset with at most size of them and returns the
// next offset (0 at the end).
func page[T any](items []T, offset, size int) ([]T, int) {
	if offset >= len(items) {
		return nil, 0
	}
	end := min(offset+size, len(items))
	if end == len(items) {
		return items[offset:end], 0
	}
	return items[offset:end], end
}

// globMatch matches s against an EC2 filter value: * any run, ? one
// character, \ escapes the next one.
func globMatch(p, s string) bool {
	if p == "" {
		return s == ""
	}
	switch p[0] {
	case '*':
		for i := 0; i <= len(s); i++ {
			if globMatch(p[1:], s[i:]) {
				return true
			}
		}
		return false
	case '?':
		return s != "" && globMatch(p[1:], s[1:])
	case '\\':
		if len(p) > 1 {
			p = p[1:]
		}
	}
	return s != "" && s[0] == p[0] && globMatch(p[1:], s[1:])
}

type stringFilter struct {
	Key    *string  `json:"Key"`
	Values []string `json:"Values"`
}

type describeInstanceInformationRequest struct {
	Filters    []stringFilter `json:"Filters"`
	MaxResults *int           `json:"MaxResults"`
	NextToken  *string        `json:"NextToken"`
	// The legacy list is refused: the resolver never sends it.
	InstanceInformationFilterList []any `json:"InstanceInformationFilterList"`
}

type instanceInformation struct {
	InstanceID       string  `json:"InstanceId"`
	PingStatus       string  `json:"PingStatus"`
	LastPingDateTime float64 `json:"LastPingDateTime"`
	AgentVersion     string  `json:"AgentVersion"`
	IsLatestVersion  bool    `json:"IsLatestVersion"`
	PlatformType     string  `json:"PlatformType"`
	PlatformName     string  `json:"PlatformName"`
	ResourceType     string  `json:"ResourceType"`
	IPAddress        string  `json:"IPAddress,omitempty"`
	ComputerName     string  `json:"ComputerName,omitempty"`
	Name             string  `json:"Name,omitempty"`
	SourceID         string  `json:"SourceId"`
	SourceType       string  `json:"SourceType"`
}

type describeInstanceInformationResponse struct {
	InstanceInformationList []instanceInformation `json:"InstanceInformationList"`
	NextToken               string                `json:"NextToken,omitempty"`
}

// ssmFilterKeys are the keys the API reference lists; the fake implements
// those marked true and refuses the others as not implemented (never as
// invalid, which they are not).
var ssmFilterKeys = map[string]bool{
	"InstanceIds": true, "AgentVersion": true, "PingStatus": true, "PlatformTypes": true, "ResourceType": true,
	"ActivationIds": false, "IamRole": false, "AssociationStatus": false, "SourceIds": false, "SourceTypes": false,
}

func invalidFilterKey(key string) *iam.APIError {
	return &iam.APIError{Status: 400, Type: "InvalidFilterKey", Message: fmt.Sprintf("The filter key %q is not valid.", key)}
}

func invalidFilterValue(key, v string) *iam.APIError {
	return &iam.APIError{Status: 400, Type: "InvalidInstanceInformationFilterValue",
		Message: fmt.Sprintf("The filter value %q is not valid for key %s.", v, key)}
}

// ssmFilter is one checked filter: an instance matches when pred holds for
// any of the values.
type ssmFilter struct {
	key    string
	values []string
}

func checkSSMFilters(in []stringFilter, known map[string]instanceView) ([]ssmFilter, *iam.APIError) {
	var out []ssmFilter
	for _, f := range in {
		if f.Key == nil || *f.Key == "" {
			return nil, validation("1 validation error detected: Value null at 'filters.member.key' failed to satisfy constraint: Member must not be null")
		}
		key := *f.Key
		if len(f.Values) < 1 || len(f.Values) > 100 {
			return nil, validation("1 validation error detected: Value at 'filters.member.values' failed to satisfy constraint: Member must have length less than or equal to 100 and greater than or equal to 1")
		}
		for _, v := range f.Values {
			if v == "" {
				return nil, validation("1 validation error detected: Value at 'filters.member.values' failed to satisfy constraint: Member must satisfy constraint: [Member must have length greater than or equal to 1]")
			}
		}
		switch impl, ok := ssmFilterKeys[key]; {
		case strings.HasPrefix(key, "tag:") && len(key) > len("tag:"), key == "tag-key":
		case !ok:
			return nil, invalidFilterKey(key)
		case !impl:
			return nil, validation("filter key %s is valid on AWS but not implemented by fakeaws", key)
		}
		for _, v := range f.Values {
			switch key {
			case "PingStatus":
				if v != "Online" && v != "ConnectionLost" && v != "Inactive" {
					return nil, invalidFilterValue(key, v)
				}
			case "ResourceType":
				if v != "EC2Instance" && v != "ManagedInstance" {
					return nil, invalidFilterValue(key, v)
				}
			case "PlatformTypes":
				if v != "Windows" && v != "Linux" && v != "MacOS" {
					return nil, invalidFilterValue(key, v)
				}
			case "InstanceIds":
				if _, ok := known[v]; !ok {
					return nil, &iam.APIError{Status: 400, Type: "InvalidInstanceId",
						Message: "Instance Id " + v + " is not valid or is not registered with Systems Manager."}
				}
			}
		}
		out = append(out, ssmFilter{key: key, values: f.Values})
	}
	return out, nil
}

func (f ssmFilter) matches(v instanceView) bool {
	for _, want := range f.values {
		var ok bool
		switch {
		case f.key == "InstanceIds":
			ok = v.ID == want
		case f.key == "AgentVersion":
			ok = v.agentVersion == want
		case f.key == "PingStatus":
			ok = v.pingStatus() == want
		case f.key == "PlatformTypes":
			ok = want == "Linux"
		case f.key == "ResourceType":
			ok = want == resourceType(v)
		case f.key == "tag-key":
			_, ok = v.tags()[want]
		default: // tag:KEY
			val, has := v.tags()[strings.TrimPrefix(f.key, "tag:")]
			ok = has && val == want
		}
		if ok {
			return true
		}
	}
	return false
}

func resourceType(v instanceView) string {
	if v.managed() {
		return "ManagedInstance"
	}
	return "EC2Instance"
}

func (s *Server) describeInstanceInformation(cred iam.Credential, body []byte) (any, *iam.APIError) {
	var req describeInstanceInformationRequest
	if e := decodeStrict(body, &req); e != nil {
		return nil, e
	}
	if e := s.allowed(cred, "ssm:DescribeInstanceInformation", "*"); e != nil {
		return nil, e
	}
	if len(req.InstanceInformationFilterList) > 0 {
		return nil, validation("InstanceInformationFilterList is the legacy filter list; fakeaws implements Filters only")
	}
	size := s.opts.PageSize
	if req.MaxResults != nil {
		if n := *req.MaxResults; n < 5 || n > 50 {
			return nil, validation("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value between 5 and 50", n)
		}
		size = min(size, *req.MaxResults)
	}
	var all []instanceView
	known := map[string]instanceView{}
	for _, v := range s.inventory() {
		if !v.NotManaged {
			all = append(all, v)
			known[v.ID] = v
		}
	}
	filters, e := checkSSMFilters(req.Filters, known)
	if e != nil {
		return nil, e
	}
	var matched []instanceView
	for _, v := range all {
		ok := true
		for _, f := range filters {
			ok = ok && f.matches(v)
		}
		if ok {
			matched = append(matched, v)
		}
	}
	query := fingerprint(fmt.Sprint(filters))
	offset := 0
	if req.NextToken != nil {
		var ok bool
		if offset, ok = parsePageToken(*req.NextToken, "ssm", query); !ok {
			return nil, &iam.APIError{Status: 400, Type: "InvalidNextToken", Message: "The specified token isn't valid."}
		}
	}
	items, next := page(matched, offset, size)
	now := s.clk.Now()
	resp := describeInstanceInformationResponse{InstanceInformationList: []instanceInformation{}}
	for _, v := range items {
		resp.InstanceInformationList = append(resp.InstanceInformationList, s.information(v, now))
	}
	if next > 0 {
		resp.NextToken = pageToken("ssm", query, next)
	}
	return resp, nil
}

func (s *Server) information(v instanceView, now time.Time) instanceInformation {
	last := now
	if !v.Connected {
		last = now.Add(-30 * time.Minute)
	}
	info := instanceInformation{
		InstanceID: v.ID, PingStatus: v.pingStatus(), LastPingDateTime: float64(last.Unix()),
		AgentVersion: v.agentVersion, IsLatestVersion: false, PlatformType: "Linux", PlatformName: "Ubuntu",
		ResourceType: resourceType(v), IPAddress: v.PrivateIP, ComputerName: v.PrivateDNS,
		SourceID: v.ID, SourceType: "AWS::EC2::Instance",
	}
	if v.managed() {
		info.Name = v.Name
		info.SourceType = "AWS::SSM::ManagedInstance"
	}
	return info
}

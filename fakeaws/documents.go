package fakeaws

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Document is a Session Manager document as the fake knows it: its
// parameters with defaults and patterns, and the Properties the agent gets
// after substitution (docs/protocol.md 2.2).
type Document struct {
	Name        string
	SessionType string // "Port" for the port documents
	Params      []DocParam
	// Properties maps a property name to a template: "{{ name }}" is
	// replaced by that parameter's value; anything else is literal.
	Properties map[string]string
}

// DocParam is one document parameter.
type DocParam struct {
	Name     string
	Default  string
	Required bool
	Pattern  *regexp.Regexp // nil: any string
}

var (
	// The AWS documents' own parameter patterns.
	portPattern = regexp.MustCompile(`^([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$`)
	hostPattern = regexp.MustCompile(`^[^&|;$><` + "`" + `\\!']+$`)
)

// DocumentShell is the default document when StartSession names none.
const DocumentShell = "SSM-SessionManagerRunShell"

func defaultDocuments() map[string]*Document {
	docs := []*Document{
		{
			Name: "AWS-StartSSHSession", SessionType: "Port",
			Params:     []DocParam{{Name: "portNumber", Default: "22", Pattern: portPattern}},
			Properties: map[string]string{"portNumber": "{{ portNumber }}"},
		},
		{
			Name: "AWS-StartPortForwardingSession", SessionType: "Port",
			Params: []DocParam{
				{Name: "portNumber", Default: "80", Pattern: portPattern},
				{Name: "localPortNumber", Default: "0", Pattern: portPattern},
			},
			Properties: map[string]string{"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding", "localPortNumber": "{{ localPortNumber }}"},
		},
		{
			Name: "AWS-StartPortForwardingSessionToRemoteHost", SessionType: "Port",
			Params: []DocParam{
				{Name: "host", Required: true, Pattern: hostPattern},
				{Name: "portNumber", Default: "80", Pattern: portPattern},
				{Name: "localPortNumber", Default: "0", Pattern: portPattern},
			},
			Properties: map[string]string{"host": "{{ host }}", "portNumber": "{{ portNumber }}", "type": "LocalPortForwarding", "localPortNumber": "{{ localPortNumber }}"},
		},
		{Name: DocumentShell, SessionType: "Standard_Stream", Properties: map[string]string{}},
	}
	m := make(map[string]*Document, len(docs))
	for _, d := range docs {
		m[d.Name] = d
	}
	return m
}

// AddDocument registers a custom document.
func (s *Server) AddDocument(d Document) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dc := d
	s.documents[d.Name] = &dc
}

// substitute validates StartSession parameters against the document and
// returns the agent's Properties.
func (d *Document) substitute(params map[string][]string) (map[string]string, error) {
	known := make(map[string]DocParam, len(d.Params))
	for _, p := range d.Params {
		known[p.Name] = p
	}
	names := make([]string, 0, len(params))
	for n := range params {
		names = append(names, n)
	}
	sort.Strings(names)
	values := make(map[string]string, len(d.Params))
	for _, n := range names {
		p, ok := known[n]
		if !ok {
			return nil, fmt.Errorf("parameter %q is not defined by document %s", n, d.Name)
		}
		v := params[n]
		if len(v) != 1 {
			return nil, fmt.Errorf("parameter %q takes exactly one value, got %d", n, len(v))
		}
		if p.Pattern != nil && !p.Pattern.MatchString(v[0]) {
			return nil, fmt.Errorf("parameter %q value %q does not match %s", n, v[0], p.Pattern)
		}
		values[n] = v[0]
	}
	for _, p := range d.Params {
		if _, ok := values[p.Name]; ok {
			continue
		}
		if p.Required {
			return nil, fmt.Errorf("missing required parameter %q", p.Name)
		}
		values[p.Name] = p.Default
	}
	props := make(map[string]string, len(d.Properties))
	for k, tmpl := range d.Properties {
		if strings.HasPrefix(tmpl, "{{") && strings.HasSuffix(tmpl, "}}") {
			props[k] = values[strings.TrimSpace(tmpl[2:len(tmpl)-2])]
		} else {
			props[k] = tmpl
		}
	}
	return props, nil
}

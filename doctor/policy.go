package doctor

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// Call is one request a session makes, as IAM evaluates it.
type Call struct {
	Action   string            // e.g. ssm:StartSession
	Resource string            // ARN
	Context  map[string]string // condition keys known for the call
}

// Allows evaluates an IAM policy document for call, for the subset of the
// policy language ssmproxy's session policies use (docs/doctor.md 2):
// Allow and Deny, Action and NotAction, Resource and NotResource with *
// and ? wildcards, and the condition operators StringEquals, StringLike,
// Bool and BoolIfExists. Anything else in a statement makes that statement
// not match (an Allow then does not allow, which errs on the side of ✗).
// An explicit Deny wins; without an Allow the call is denied.
func Allows(policy string, call Call) (bool, error) {
	var doc struct {
		Statement json.RawMessage
	}
	if err := json.Unmarshal([]byte(policy), &doc); err != nil {
		return false, fmt.Errorf("policy is not JSON: %w", err)
	}
	var stmts []statement
	if err := json.Unmarshal(doc.Statement, &stmts); err != nil {
		var one statement
		if err2 := json.Unmarshal(doc.Statement, &one); err2 != nil {
			return false, fmt.Errorf("policy statements: %w", err)
		}
		stmts = []statement{one}
	}
	allowed := false
	for _, s := range stmts {
		if !s.matches(call) {
			continue
		}
		switch s.Effect {
		case "Deny":
			return false, nil
		case "Allow":
			allowed = true
		}
	}
	return allowed, nil
}

type statement struct {
	Effect      string
	Action      strList
	NotAction   strList
	Resource    strList
	NotResource strList
	Condition   map[string]map[string]strList
}

// strList is a JSON string or array of strings.
type strList []string

func (l *strList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = strList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

func (s statement) matches(c Call) bool {
	switch {
	case len(s.Action) > 0 && !anyMatch(s.Action, c.Action, true):
		return false
	case len(s.NotAction) > 0 && anyMatch(s.NotAction, c.Action, true):
		return false
	case len(s.Action) == 0 && len(s.NotAction) == 0:
		return false
	case len(s.Resource) > 0 && !anyMatch(s.Resource, c.Resource, false):
		return false
	case len(s.NotResource) > 0 && anyMatch(s.NotResource, c.Resource, false):
		return false
	case len(s.Resource) == 0 && len(s.NotResource) == 0:
		return false
	}
	for op, keys := range s.Condition {
		for key, want := range keys {
			got, present := c.Context[key]
			if !condition(op, present, got, want) {
				return false
			}
		}
	}
	return true
}

func condition(op string, present bool, got string, want strList) bool {
	ifExists := strings.HasSuffix(op, "IfExists")
	if !present {
		return ifExists
	}
	switch strings.TrimSuffix(op, "IfExists") {
	case "StringEquals", "Bool":
		for _, w := range want {
			if got == w {
				return true
			}
		}
	case "StringLike":
		return anyMatch(want, got, false)
	}
	return false
}

// anyMatch: IAM wildcards, * any run and ? one character; actions are
// case-insensitive.
func anyMatch(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if fold {
			p, s = strings.ToLower(p), strings.ToLower(s)
		}
		if wildcard(p, s) {
			return true
		}
	}
	return false
}

// wildcard matches with * and ? only (path.Match also knows [ and \, which
// IAM does not: escape them).
func wildcard(p, s string) bool {
	p = strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`).Replace(p)
	// path.Match stops * at '/', IAM does not: match segment-free by
	// replacing '/' on both sides.
	ok, err := path.Match(strings.ReplaceAll(p, "/", "\x00"), strings.ReplaceAll(s, "/", "\x00"))
	return err == nil && ok
}

package iam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A small evaluator for inline session policies, enough to check the
// least-privilege policy of docs/credentials.md section 6 against the calls the
// fake SSM and MGS see. It is deliberately not IAM: no policy variables, no
// NotPrincipal, and only the conditions the fake can vouch for. Anything it
// does not understand fails closed: an Allow with an unknown condition does
// not allow, a Deny with one still denies.

// documentCheckKey is a condition key the fake can always evaluate: it
// always performs the session-document access check, so the key is "true".
const documentCheckKey = "ssm:SessionDocumentAccessCheck"

// contextKeys are the request context keys some call supplies (through
// AllowedWith), lowercased. A string condition on one of them is evaluated
// as IAM does, with the key absent from calls that do not supply it; a
// condition on any other key stays unknown (fail closed).
var contextKeys = map[string]bool{
	"ec2:osuser": true, // ec2-instance-connect:SendSSHPublicKey's InstanceOSUser
}

type policyDoc struct {
	statements []statement
}

type statement struct {
	effect            string // "Allow" or "Deny"
	actions, resource []string
	notAction, notRes bool                           // the lists are NotAction / NotResource
	condition         map[string]map[string][]string // operator → key → values
}

// ValidatePolicy reports whether policy is a well-formed session policy in the
// grammar Allowed understands. STS uses it for MalformedPolicyDocument.
func ValidatePolicy(policy string) error {
	_, err := parsePolicy(policy)
	return err
}

// Allowed evaluates an inline session policy for action on resource. An
// explicit Deny wins, then any Allow; nothing matching means denied. Action
// and Resource may be a string or a list; "*" and "?" are wildcards, matched
// case-insensitively for actions and case-sensitively for resources. The
// conditions honoured are BoolIfExists (or Bool) ssm:SessionDocumentAccessCheck
// "true", which holds because the fake always performs the document check,
// and string conditions on the context keys of AllowedWith (absent here);
// any other condition makes an Allow not match and a Deny match. An empty
// policy means "no session policy", which allows everything.
func Allowed(policy, action, resource string) (bool, error) {
	return AllowedWith(policy, action, resource, nil)
}

// AllowedWith is Allowed for a call that supplies request context keys
// (lowercased name → value), such as ec2:osuser for SendSSHPublicKey. Only
// the keys in contextKeys are understood: StringEquals, StringLike and their
// IfExists forms on them hold as in IAM (any listed value matches; an absent
// key fails the plain forms and passes the IfExists ones).
func AllowedWith(policy, action, resource string, keys map[string]string) (bool, error) {
	if strings.TrimSpace(policy) == "" {
		return true, nil
	}
	doc, err := parsePolicy(policy)
	if err != nil {
		return false, err
	}
	allowed := false
	for _, st := range doc.statements {
		if !st.matchesRequest(action, resource) {
			continue
		}
		known, holds := st.evalConditions(keys)
		if st.effect == "Deny" {
			if !known || holds {
				return false, nil
			}
			continue
		}
		if known && holds {
			allowed = true
		}
	}
	return allowed, nil
}

func (st statement) matchesRequest(action, resource string) bool {
	a := anyMatch(st.actions, action, true)
	if st.notAction {
		a = !a
	}
	r := anyMatch(st.resource, resource, false)
	if st.notRes {
		r = !r
	}
	return a && r
}

// evalConditions reports whether every condition is one the fake knows
// (known) and whether they all hold, given the call's context keys.
func (st statement) evalConditions(keys map[string]string) (known, holds bool) {
	holds = true
	for op, conds := range st.condition {
		for key, vals := range conds {
			k, h := evalCondition(op, key, vals, keys)
			if !k {
				return false, false
			}
			holds = holds && h
		}
	}
	return true, holds
}

// evalCondition evaluates one operator/key pair; known is false for
// anything the fake cannot vouch for.
func evalCondition(op, key string, vals []string, keys map[string]string) (known, holds bool) {
	if strings.EqualFold(key, documentCheckKey) {
		if op != "BoolIfExists" && op != "Bool" {
			return false, false
		}
		for _, v := range vals {
			if strings.EqualFold(v, "true") {
				return true, true
			}
		}
		return true, false
	}
	lk := strings.ToLower(key)
	if !contextKeys[lk] {
		return false, false
	}
	base, ifExists := strings.CutSuffix(op, "IfExists")
	if base != "StringEquals" && base != "StringLike" {
		return false, false
	}
	got, present := keys[lk]
	if !present {
		return true, ifExists
	}
	for _, v := range vals {
		if (base == "StringEquals" && v == got) || (base == "StringLike" && globMatch(v, got)) {
			return true, true
		}
	}
	return true, false
}

func anyMatch(patterns []string, s string, fold bool) bool {
	if fold {
		s = strings.ToLower(s)
	}
	for _, p := range patterns {
		if fold {
			p = strings.ToLower(p)
		}
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

// globMatch matches s against p, where '*' matches any run (including empty)
// and '?' any single byte. It backtracks only to the last '*', so it runs in
// O(len(p)·len(s)) at worst.
func globMatch(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// policyError carries AWS's own message text (capitalized, with a period),
// which is what STS returns as MalformedPolicyDocument.
type policyError string

func (e policyError) Error() string { return string(e) }

const (
	errPolicySyntax  = policyError("Syntax errors in policy.")
	errPolicyJSON    = policyError("The policy is not in the valid JSON format.")
	errPolicyVersion = policyError("The policy must contain a valid version string")
	errPolicyPrinc   = policyError("Policy document should not specify a principal.")
)

// syntaxError is errPolicySyntax with a detail appended.
func syntaxError(format string, args ...any) error {
	return policyError(string(errPolicySyntax) + " " + fmt.Sprintf(format, args...))
}

func parsePolicy(policy string) (*policyDoc, error) {
	dec := json.NewDecoder(strings.NewReader(policy))
	var top map[string]json.RawMessage
	if err := dec.Decode(&top); err != nil || top == nil {
		return nil, errPolicyJSON
	}
	if dec.More() {
		return nil, errPolicyJSON
	}
	for k := range top {
		switch k {
		case "Version", "Id", "Statement":
		default:
			return nil, syntaxError("Unknown field %s", k)
		}
	}
	if raw, ok := top["Version"]; ok {
		var v string
		if json.Unmarshal(raw, &v) != nil || (v != "2012-10-17" && v != "2008-10-17") {
			return nil, errPolicyVersion
		}
	}
	raw, ok := top["Statement"]
	if !ok {
		return nil, syntaxError("Missing required field Statement")
	}
	var list []json.RawMessage
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, errPolicySyntax
		}
	} else {
		list = []json.RawMessage{raw}
	}
	if len(list) == 0 {
		return nil, syntaxError("Missing required field Statement")
	}
	doc := &policyDoc{}
	for _, r := range list {
		st, err := parseStatement(r)
		if err != nil {
			return nil, err
		}
		doc.statements = append(doc.statements, st)
	}
	return doc, nil
}

func parseStatement(raw json.RawMessage) (statement, error) {
	var st statement
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return st, errPolicySyntax
	}
	for k := range m {
		switch k {
		case "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition":
		case "Principal", "NotPrincipal":
			return st, errPolicyPrinc
		default:
			return st, syntaxError("Unknown field %s", k)
		}
	}
	if json.Unmarshal(m["Effect"], &st.effect) != nil || (st.effect != "Allow" && st.effect != "Deny") {
		return st, syntaxError("Invalid effect")
	}
	var err error
	if st.actions, st.notAction, err = oneOf(m, "Action", "NotAction"); err != nil {
		return st, err
	}
	if st.resource, st.notRes, err = oneOf(m, "Resource", "NotResource"); err != nil {
		return st, err
	}
	if c, ok := m["Condition"]; ok {
		var ops map[string]map[string]json.RawMessage
		if err := json.Unmarshal(c, &ops); err != nil {
			return st, syntaxError("Invalid Condition")
		}
		st.condition = map[string]map[string][]string{}
		for op, keys := range ops {
			st.condition[op] = map[string][]string{}
			for key, v := range keys {
				vals, err := scalarList(v)
				if err != nil {
					return st, syntaxError("Invalid Condition value")
				}
				st.condition[op][key] = vals
			}
		}
	}
	return st, nil
}

// oneOf returns the list under exactly one of the two keys, and whether it
// was the negated one.
func oneOf(m map[string]json.RawMessage, pos, neg string) ([]string, bool, error) {
	p, hasP := m[pos]
	n, hasN := m[neg]
	if hasP == hasN {
		return nil, false, syntaxError("Statement must contain exactly one of %s and %s", pos, neg)
	}
	raw, negated := p, false
	if hasN {
		raw, negated = n, true
	}
	vals, err := stringList(raw)
	if err != nil || len(vals) == 0 {
		return nil, false, syntaxError("Invalid %s", pos)
	}
	return vals, negated, nil
}

// stringList accepts a string or a list of strings.
func stringList(raw json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, err
	}
	return many, nil
}

// scalarList accepts a string, bool or number, or a list of them, as IAM
// condition values do, and returns their string forms.
func scalarList(raw json.RawMessage) ([]string, error) {
	var items []json.RawMessage
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, err
		}
	} else {
		items = []json.RawMessage{raw}
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		var v any
		if err := json.Unmarshal(it, &v); err != nil {
			return nil, err
		}
		switch x := v.(type) {
		case string:
			out = append(out, x)
		case bool:
			out = append(out, strconv.FormatBool(x))
		case float64:
			out = append(out, strconv.FormatFloat(x, 'f', -1, 64))
		default:
			return nil, errors.New("condition value must be a scalar")
		}
	}
	return out, nil
}

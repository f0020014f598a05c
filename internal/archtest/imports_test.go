package archtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ssmproxy/ssmproxy"

// neutral packages are libraries with no knowledge of the layers above:
// any layer may use them, and they use nothing but each other.
var neutral = []string{"internal/clock", "internal/coalesce", "internal/wsframe", "internal/awsconf", "internal/lockfile", "internal/secretenv", "internal/awserr", "internal/redact"}

// tools are programs and test rigs; production code never imports them.
var tools = []string{"fakeaws/cmd/fakeaws", "internal/rig", "internal/bench", "internal/soak", "internal/demo", "internal/dist", "internal/sshserver", "internal/testkit", "internal/archtest", "e2e"}

// allowed lists, for every production package (module-relative; "" is the
// CLI), the module packages its non-test files may import. A package that is
// missing from the table fails the test: a new room needs a stated place.
// docs/architecture.md explains each row.
var allowed = map[string][]string{
	"":         {"ssm", "ssm/wire", "proxy", "broker", "keyring", "prompt", "target", "trace", "doctor", "sshconfig", "neutral"},
	"ssm/wire": {},
	"ssm":      {"ssm/wire", "neutral"},
	"proxy":    {"ssm", "ssm/wire", "neutral"},
	"broker":   {"keyring", "prompt", "neutral"},
	"keyring":  {"prompt", "neutral"},
	"prompt":   {"neutral"},
	// Target lookups: the SDK's describe calls and a cache; no credentials
	// of its own (the CLI hands it a configured aws.Config).
	"target": {"neutral"},
	// The flight recorder reads frame headers; it knows nothing of sessions
	// (ssm calls it through the narrow ssm.Tracer interface).
	"trace": {"ssm/wire", "neutral"},
	// The doctor's checks, report and policy evaluator; the CLI wires them
	// to the broker and the target lookups.
	"doctor": {"neutral"},
	// The ssh-config file: renders target.Nodes, writes and checks files;
	// no AWS call of its own (docs/ssh-config.md).
	"sshconfig": {"target", "neutral"},
	// The fake shares only the wire format with the client: two
	// independent implementations meet on the wire (docs/fakeaws.md).
	"fakeaws":       {"fakeaws/agent", "fakeaws/iam", "ssm/wire", "neutral"},
	"fakeaws/agent": {"ssm/wire", "neutral"},
	"fakeaws/iam":   {"neutral"},
}

// testTools are what tests may import beyond their package's own row: the
// fake (where the client meets it) and the test rigs.
var testTools = []string{"fakeaws", "fakeaws/agent", "fakeaws/iam", "internal/rig", "internal/testkit", "internal/sshserver"}

// fakeTests: the fake's own tests stay away from the client too, or they
// would check the client against itself.
var fakeTests = []string{"fakeaws", "fakeaws/agent", "fakeaws/iam", "ssm/wire", "neutral", "internal/testkit"}

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func rel(p string) (string, bool) {
	if p == module {
		return "", true
	}
	r, ok := strings.CutPrefix(p, module+"/")
	return r, ok
}

// permits reports whether the list allows module package r.
func permits(list []string, r string) bool {
	if slices.Contains(list, r) {
		return true
	}
	return slices.Contains(list, "neutral") && slices.Contains(neutral, r)
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// violations applies the rules to pkgs and describes every broken one.
func violations(pkgs []pkg) []string {
	var bad []string
	for _, p := range pkgs {
		r, _ := rel(p.ImportPath)
		isTool := slices.ContainsFunc(tools, func(tl string) bool { return r == tl || strings.HasPrefix(r, tl+"/") })
		list, known := allowed[r]
		if !known && slices.Contains(neutral, r) {
			list, known = []string{"neutral"}, true
		}
		switch {
		case isTool:
		case !known:
			bad = append(bad, fmt.Sprintf("%s: not in the import rules (add it to docs/architecture.md and this table)", p.ImportPath))
		default:
			for _, imp := range p.Imports {
				if ir, ok := rel(imp); ok && !permits(list, ir) {
					bad = append(bad, fmt.Sprintf("%s imports %s", p.ImportPath, imp))
				}
			}
		}
		if isTool || !known {
			continue
		}
		// Test files keep the same arrows (docs/architecture.md, rules 2-8),
		// plus the fake and the rigs outside the fake itself.
		testList := append(append([]string{r}, list...), testTools...)
		if r == "fakeaws" || strings.HasPrefix(r, "fakeaws/") {
			testList = append([]string{r}, fakeTests...)
		}
		for _, imp := range append(p.TestImports, p.XTestImports...) {
			if ir, ok := rel(imp); ok && !permits(testList, ir) {
				bad = append(bad, fmt.Sprintf("%s (tests) imports %s", p.ImportPath, imp))
			}
		}
	}
	return bad
}

// TestImportRules: every module package imports only what
// docs/architecture.md allows it.
func TestImportRules(t *testing.T) {
	for _, v := range violations(listPackages(t)) {
		t.Error(v)
	}
}

// TestImportRulesCatch: the rules reject the arrows the design forbids (the
// fake reaching into the client, ssm reaching the broker, production code
// importing the fake or a test rig), so a passing TestImportRules means
// something.
func TestImportRulesCatch(t *testing.T) {
	for _, c := range []struct{ from, to string }{
		{"fakeaws", "ssm"},
		{"fakeaws/agent", "ssm"},
		{"ssm", "broker"},
		{"broker", "ssm"},
		{"proxy", "broker"},
		{"ssm/wire", "internal/clock"},
		{"", "fakeaws"},
		{"broker", "internal/rig"},
		{"keyring", "broker"},
		{"internal/clock", "ssm"},
		{"newpkg", "ssm/wire"},
	} {
		p := pkg{ImportPath: path.Join(module, c.from), Imports: []string{path.Join(module, c.to)}}
		if len(violations([]pkg{p})) == 0 {
			t.Errorf("%q importing %q passed the rules", c.from, c.to)
		}
	}
	for _, c := range []struct{ from, to string }{
		{"ssm", "broker"},
		{"fakeaws/agent", "ssm"},
		{"proxy", "keyring"},
	} {
		p := pkg{ImportPath: path.Join(module, c.from), XTestImports: []string{path.Join(module, c.to)}}
		if len(violations([]pkg{p})) == 0 {
			t.Errorf("tests of %q importing %q passed the rules", c.from, c.to)
		}
	}
	ok := pkg{ImportPath: module + "/fakeaws/agent", Imports: []string{module + "/ssm/wire", module + "/internal/clock"}}
	if v := violations([]pkg{ok}); len(v) != 0 {
		t.Errorf("an allowed import was refused: %v", v)
	}
}

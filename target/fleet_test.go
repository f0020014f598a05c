package target

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// TestFleet: every running instance and managed node, with Name, tags, ping
// status and platform, across pages (page size 3); tag filters AND.
func TestFleet(t *testing.T) {
	e := newEnv(t, 3, fleet...)
	unmanaged, err := fakeaws.ParseTargetSpec("i-0aaaaaaaaaaaaaaa7,name=noagent,tag:env=prod")
	if err != nil {
		t.Fatal(err)
	}
	unmanaged.NotManaged = true
	e.ts.AddTarget(unmanaged)
	f, err := e.r.Finder(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := f.Fleet(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range nodes {
		got = append(got, fmt.Sprintf("%s %s %s env=%s %s", n.ID, n.Name, n.PingStatus, n.Tags["env"], n.Platform))
	}
	want := []string{
		"i-0123456789abcdef0  Online env= Linux", // the fake's default instance
		"i-0aaaaaaaaaaaaaaa1 web-1 Online env=prod Linux",
		"i-0aaaaaaaaaaaaaaa2 web-2 Online env=prod Linux",
		"i-0aaaaaaaaaaaaaaa3 db Online env=prod Linux",
		"i-0aaaaaaaaaaaaaaa4 db ConnectionLost env=staging Linux",
		"i-0aaaaaaaaaaaaaaa5 batch ConnectionLost env=prod Linux",
		"i-0aaaaaaaaaaaaaaa6 we*b Online env= Linux",
		"i-0aaaaaaaaaaaaaaa7 noagent NotRegistered env=prod Linux/UNIX",
		"mi-0bbbbbbbbbbbbbbb1 rack-7 Online env= Linux",
		// A managed node's Name tag is not in DescribeInstanceInformation
		// (it would need ListTagsForResource, per node): id alias only.
		"mi-0bbbbbbbbbbbbbbb2  Online env= Linux",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("fleet:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	nodes, err = f.Fleet(context.Background(), []Tag{{"env", "prod"}, {"role", "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].Name != "web-1" || nodes[1].Name != "web-2" || nodes[0].PingStatus != "Online" {
		t.Fatalf("env=prod AND role=web: %+v", nodes)
	}
	nodes, err = f.Fleet(context.Background(), []Tag{{"env", "lab"}})
	if err != nil || len(nodes) != 1 || nodes[0].ID != "mi-0bbbbbbbbbbbbbbb1" || nodes[0].PingStatus != "Online" {
		t.Fatalf("env=lab (a managed node's tag): %+v %v", nodes, err)
	}
}

// TestFleetDenied: a refused listing is an *Error of its own wording.
func TestFleetDenied(t *testing.T) {
	e := newEnv(t, 0, fleet...)
	e.ts.FailAPI("DescribeInstanceInformation", "AccessDeniedException", 400, 1)
	f, _ := e.r.Finder(context.Background())
	_, err := f.Fleet(context.Background(), nil)
	var te *Error
	if !errors.As(err, &te) || te.Reason != Denied || !strings.HasPrefix(err.Error(), "listing the fleet: ") {
		t.Fatalf("%v", err)
	}
}

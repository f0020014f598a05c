package target

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// TestFleet: every managed node across pages (page size 3), EC2 Names and
// tags, hybrid nodes' own names; a tag filter keeps only the EC2
// instances that carry it; an instance SSM does not manage is left out.
func TestFleet(t *testing.T) {
	specs := append([]string(nil), fleet...)
	for i := 0; i < 12; i++ {
		specs = append(specs, fmt.Sprintf("i-0ccccccccccccc%03d,name=n-%d,tag:env=bulk", i, i))
	}
	e := newEnv(t, 3, specs...)
	e.ts.AddTarget(fakeaws.Target{ID: "i-0aaaaaaaaaaaaaaa9", Name: "ghost", Tags: map[string]string{"env": "prod"}, NotManaged: true})
	f, err := e.r.Finder(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	all, err := f.Fleet(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Node{}
	for _, n := range all {
		byID[n.ID] = n
	}
	// The specs and the fake's default instance; the unmanaged one is
	// left out.
	if len(all) != len(specs)+1 {
		t.Errorf("%d nodes, want %d", len(all), len(specs)+1)
	}
	if n := byID["i-0aaaaaaaaaaaaaaa1"]; n.Name != "web-1" || n.Tags["env"] != "prod" || n.PingStatus != "Online" {
		t.Errorf("web-1: %+v", n)
	}
	if n := byID["mi-0bbbbbbbbbbbbbbb1"]; n.Name != "rack-7" {
		t.Errorf("hybrid node: %+v", n)
	}
	if _, ok := byID["i-0aaaaaaaaaaaaaaa9"]; ok {
		t.Error("an instance SSM does not manage is listed")
	}
	prod, err := f.Fleet(context.Background(), map[string]string{"env": "prod"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range prod {
		ids = append(ids, n.ID)
	}
	if strings.Join(ids, " ") != "i-0aaaaaaaaaaaaaaa1 i-0aaaaaaaaaaaaaaa2 i-0aaaaaaaaaaaaaaa3 i-0aaaaaaaaaaaaaaa5" {
		t.Errorf("env=prod: %v", ids)
	}
}

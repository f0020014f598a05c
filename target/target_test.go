package target

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// The resolver against the fake over real sockets, with the SDK's clients
// (the fake's APIs are checked against the documented ones in fakeaws).

var fleet = []string{
	"i-0aaaaaaaaaaaaaaa1,name=web-1,tag:env=prod,tag:role=web,ip=10.0.0.11,dns=ip-10-0-0-11.ec2.internal",
	"i-0aaaaaaaaaaaaaaa2,name=web-2,tag:env=prod,tag:role=web,ip=10.0.0.12,dns=ip-10-0-0-12.ec2.internal",
	"i-0aaaaaaaaaaaaaaa3,name=db,tag:env=prod,ip=10.0.0.13,agent=3.2.582.0",
	"i-0aaaaaaaaaaaaaaa4,name=db,tag:env=staging,ip=10.0.1.13,ping=ConnectionLost,agent=3.1.0.0",
	"i-0aaaaaaaaaaaaaaa5,name=batch,tag:env=prod,ping=ConnectionLost",
	"i-0aaaaaaaaaaaaaaa6,name=we*b,ip=10.0.0.16",
	"mi-0bbbbbbbbbbbbbbb1,name=rack-7,tag:env=lab,ip=192.168.1.7,dns=rack-7.lan",
	"mi-0bbbbbbbbbbbbbbb2,tag:Name=rack-8,ip=192.168.1.8",
}

type env struct {
	ts    *fakeaws.TestServer
	cache *Cache
	clk   *clock.Fake
	r     *Resolver
}

func newEnv(t *testing.T, pageSize int, specs ...string) *env {
	ts := fakeaws.StartTest(t, fakeaws.Options{PageSize: pageSize})
	for _, s := range specs {
		tg, err := fakeaws.ParseTargetSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		ts.AddTarget(tg)
	}
	cfg := aws.Config{Region: ts.Region(), Credentials: credentials.NewStaticCredentialsProvider(ts.User.AccessKeyID, ts.User.SecretAccessKey, "")}
	clk := clock.NewFake(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC))
	e := &env{ts: ts, clk: clk,
		cache: &Cache{Dir: filepath.Join(t.TempDir(), "targets"), Profile: "default", Region: ts.Region(), Clock: clk}}
	e.r = &Resolver{Cache: e.cache, Finder: func(context.Context) (*Finder, error) {
		return &Finder{
			SSM: ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.BaseEndpoint = aws.String(ts.URL()) }),
			EC2: ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(ts.URL()) }),
		}, nil
	}}
	return e
}

// calls is the number of describe calls the fake answered.
func (e *env) calls() int64 {
	var n int64
	for _, op := range []string{"DescribeInstanceInformation", "DescribeInstances"} {
		for _, c := range e.ts.Stats().API[op] {
			n += c
		}
	}
	return n
}

// TestResolve: every kind of query, and every way of having no answer.
func TestResolve(t *testing.T) {
	e := newEnv(t, 0, fleet...)
	cases := []struct {
		target string
		want   string // the id, or "" for an error
		reason Reason
		cands  []string // the ids the error lists
	}{
		{"i-0aaaaaaaaaaaaaaa5", "i-0aaaaaaaaaaaaaaa5", 0, nil}, // an id: no lookup, even offline
		{"web-1", "i-0aaaaaaaaaaaaaaa1", 0, nil},
		{"name:web-2", "i-0aaaaaaaaaaaaaaa2", 0, nil},
		{"tag:env=prod", "", Ambiguous, []string{"i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2", "i-0aaaaaaaaaaaaaaa3", "i-0aaaaaaaaaaaaaaa5"}},
		{"tag:env=staging", "", Offline, []string{"i-0aaaaaaaaaaaaaaa4"}},
		{"db", "", Ambiguous, []string{"i-0aaaaaaaaaaaaaaa3", "i-0aaaaaaaaaaaaaaa4"}},
		{"batch", "", Offline, []string{"i-0aaaaaaaaaaaaaaa5"}},
		{"10.0.0.13", "i-0aaaaaaaaaaaaaaa3", 0, nil},
		{"ip-10-0-0-12.ec2.internal", "i-0aaaaaaaaaaaaaaa2", 0, nil},
		{"IP-10-0-0-12.ec2.internal.", "i-0aaaaaaaaaaaaaaa2", 0, nil},
		{"rack-7", "mi-0bbbbbbbbbbbbbbb1", 0, nil},      // a hybrid node's Name
		{"rack-8", "mi-0bbbbbbbbbbbbbbb2", 0, nil},      // a hybrid node's Name tag
		{"tag:env=lab", "mi-0bbbbbbbbbbbbbbb1", 0, nil}, // a hybrid node's tag
		{"192.168.1.8", "mi-0bbbbbbbbbbbbbbb2", 0, nil}, // a hybrid node's address
		{"rack-7.lan", "mi-0bbbbbbbbbbbbbbb1", 0, nil},  // a hybrid node's host name
		{"we*b", "i-0aaaaaaaaaaaaaaa6", 0, nil},         // a literal *, not a wildcard
		{"web-*", "", NoMatch, nil},                     // no wildcards either
		{"nosuch", "", NoMatch, nil},
		{"10.9.9.9", "", NoMatch, nil},
	}
	for _, c := range cases {
		t.Run(c.target, func(t *testing.T) {
			q, err := Parse(c.target)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.r.Resolve(context.Background(), q)
			if c.want != "" {
				if err != nil || got.ID != c.want {
					t.Fatalf("got %q, %v; want %s", got.ID, err, c.want)
				}
				return
			}
			var te *Error
			if !errors.As(err, &te) || te.Reason != c.reason {
				t.Fatalf("got %q, %v; want reason %d", got.ID, err, c.reason)
			}
			lines := te.CandidateLines()
			if strings.Contains(err.Error(), "\n") || len(lines) != len(c.cands) {
				t.Fatalf("want one line, and one line per candidate: %s\n%s", err, strings.Join(lines, "\n"))
			}
			for i, id := range c.cands {
				f := strings.Fields(lines[i])
				if len(f) != 4 || f[0] != id {
					t.Errorf("candidate line %q: want id, name, ping status, agent version of %s", lines[i], id)
				}
			}
		})
	}
	// The candidate lines carry the name, the ping status and the version.
	q, _ := Parse("db")
	_, err := e.r.Resolve(context.Background(), q)
	var te *Error
	if !errors.As(err, &te) {
		t.Fatal(err)
	}
	all := strings.Join(te.CandidateLines(), "\n")
	for _, want := range []string{"i-0aaaaaaaaaaaaaaa3  ", " db ", "Online", "3.2.582.0", "ConnectionLost", "3.1.0.0"} {
		if !strings.Contains(all, want) {
			t.Errorf("candidate lines lack %q:\n%s", want, all)
		}
	}
}

// TestResolveCache: a second lookup of the same target within the TTL is
// answered without any API call (the fake's counters), per profile and
// region, and a stale entry is looked up again.
func TestResolveCache(t *testing.T) {
	e := newEnv(t, 0, fleet...)
	q, _ := Parse("web-1")
	if _, err := e.r.Resolve(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	first := e.calls()
	if first == 0 {
		t.Fatal("the first lookup made no call")
	}
	e.clk.Advance(29 * time.Second)
	if c, err := e.r.Resolve(context.Background(), q); err != nil || c.ID != "i-0aaaaaaaaaaaaaaa1" {
		t.Fatal(c, err)
	}
	if n := e.calls(); n != first {
		t.Fatalf("a cached lookup made %d calls", n-first)
	}
	st, err := os.Stat(e.cache.path())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("cache file %v %v, want mode 0600", st, err)
	}
	// Another region is another cache.
	other := *e.r
	other.Cache = &Cache{Dir: e.cache.Dir, Profile: "default", Region: "eu-west-1", Clock: e.clk}
	if _, err := other.Resolve(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	if e.calls() == first {
		t.Fatal("another region was answered from this region's cache")
	}
	// Past the TTL it asks again.
	now := e.calls()
	e.clk.Advance(2 * time.Second)
	if _, err := e.r.Resolve(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	if e.calls() == now {
		t.Fatal("a stale entry answered")
	}
	// Failures are not cached: an offline agent that comes back is seen
	// on the next try.
	q2, _ := Parse("batch")
	if _, err := e.r.Resolve(context.Background(), q2); err == nil {
		t.Fatal("an offline match connected")
	}
	e.ts.SetTargetConnected("i-0aaaaaaaaaaaaaaa5", true)
	if c, err := e.r.Resolve(context.Background(), q2); err != nil || c.ID != "i-0aaaaaaaaaaaaaaa5" {
		t.Fatalf("after the agent came back: %v %v", c, err)
	}
	// A cache file others may read is not used.
	if err := os.Chmod(e.cache.path(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, hit := e.cache.get(q); hit {
		t.Fatal("a world-readable cache file was used")
	}
}

// TestResolvePagination: matches beyond the first page of both APIs are
// found (page size 3 against 8 matches), and the page bound stops a
// listing that does not end.
func TestResolvePagination(t *testing.T) {
	var specs []string
	for i := range 8 {
		specs = append(specs, fmt.Sprintf("i-0%016x,tag:pool=blue,ping=ConnectionLost", i+1))
	}
	specs = append(specs, "i-0ccccccccccccccc1,tag:pool=green,name=last")
	for i := range 5 {
		specs = append(specs, fmt.Sprintf("mi-0%016x,name=edge-%d", i+1, i))
	}
	e := newEnv(t, 3, specs...)
	q, _ := Parse("tag:pool=blue")
	_, err := e.r.Resolve(context.Background(), q)
	var te *Error
	if !errors.As(err, &te) || te.Reason != Ambiguous || len(te.Candidates) != 8 {
		t.Fatalf("got %v", err)
	}
	for _, c := range te.Candidates {
		if c.PingStatus != "ConnectionLost" {
			t.Errorf("%s: ping status %q from a later SSM page missing", c.ID, c.PingStatus)
		}
	}
	if st := e.ts.Stats().API["DescribeInstances"]["200"]; st != 3 {
		t.Errorf("DescribeInstances pages %d, want 3", st)
	}
	// The last managed node is on the second page of the listing.
	q, _ = Parse("edge-4")
	if c, err := e.r.Resolve(context.Background(), q); err != nil || c.ID != "mi-00000000000000005" {
		t.Fatalf("got %v %v", c, err)
	}
	// Bounded: with at most one page allowed, the listing is refused.
	f, _ := e.r.Finder(context.Background())
	f.MaxPages = 1
	q, _ = Parse("tag:pool=blue")
	_, err = (&Resolver{Finder: func(context.Context) (*Finder, error) { return f, nil }}).Resolve(context.Background(), q)
	if !errors.As(err, &te) || te.Reason != TooMany {
		t.Fatalf("got %v, want the page bound", err)
	}
}

// TestResolveNotManaged: an EC2 instance Systems Manager does not know
// makes the batched status call fail (InvalidInstanceId); the finder asks
// one by one and lists it as NotRegistered, never as a connectable match.
func TestResolveNotManaged(t *testing.T) {
	e := newEnv(t, 0, fleet...)
	e.ts.AddTarget(fakeaws.Target{ID: "i-0aaaaaaaaaaaaaaa7", Name: "legacy", Tags: map[string]string{"role": "web"}, NotManaged: true})
	q, _ := Parse("legacy")
	_, err := e.r.Resolve(context.Background(), q)
	var te *Error
	if !errors.As(err, &te) || te.Reason != Offline || te.Candidates[0].PingStatus != NotRegistered {
		t.Fatalf("got %v", err)
	}
	q, _ = Parse("tag:role=web")
	_, err = e.r.Resolve(context.Background(), q)
	if !errors.As(err, &te) || te.Reason != Ambiguous || len(te.Candidates) != 3 {
		t.Fatalf("got %v", err)
	}
	want := map[string]string{"i-0aaaaaaaaaaaaaaa1": "Online", "i-0aaaaaaaaaaaaaaa2": "Online", "i-0aaaaaaaaaaaaaaa7": NotRegistered}
	for _, c := range te.Candidates {
		if c.PingStatus != want[c.ID] {
			t.Errorf("%s: ping status %q, want %q", c.ID, c.PingStatus, want[c.ID])
		}
	}
}

// TestResolveDenied: a describe call IAM refuses is reported as such.
func TestResolveDenied(t *testing.T) {
	e := newEnv(t, 0, fleet...)
	e.ts.FailAPI("DescribeInstances", "UnauthorizedOperation", 403, 1)
	q, _ := Parse("web-1")
	_, err := e.r.Resolve(context.Background(), q)
	var te *Error
	if !errors.As(err, &te) || te.Reason != Denied || !strings.Contains(err.Error(), "UnauthorizedOperation") {
		t.Fatalf("got %v", err)
	}
}

// TestParse: the forms of TARGET and the refusals.
func TestParse(t *testing.T) {
	good := map[string]Query{
		"i-0123456789abcdef0":  {Kind: KindID, Value: "i-0123456789abcdef0"},
		"i-01234567":           {Kind: KindID, Value: "i-01234567"},
		"mi-0123456789abcdef0": {Kind: KindID, Value: "mi-0123456789abcdef0"},
		"web-1":                {Kind: KindName, Value: "web-1"},
		"name:web.prod":        {Kind: KindName, Value: "web.prod"},
		"name:i-1":             {Kind: KindName, Value: "i-1"},
		"tag:team=a=b":         {Kind: KindTag, Key: "team", Value: "a=b"},
		"10.0.0.1":             {Kind: KindIP, Value: "10.0.0.1"},
		"Host.Example.":        {Kind: KindDNS, Value: "host.example"},
	}
	for in, want := range good {
		q, err := Parse(in)
		want.Raw = in
		if err != nil || q != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, q, err, want)
		}
	}
	for _, bad := range []string{"", "name:", "tag:env", "tag:=x", "tag:env=", "i-0123", "mi-12", "web 1", "web\x1b[31m", "a..b", strings.Repeat("x", 400)} {
		if q, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted: %+v", bad, q)
		}
	}
}

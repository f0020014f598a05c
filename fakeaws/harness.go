package fakeaws

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// DefaultInstance is the instance every harness registers.
const DefaultInstance = "i-0123456789abcdef0"

// TestServer is a fake started for one test.
type TestServer struct {
	*Server
	// User is a long-term key of IAM user "alice".
	User iam.Credential
	// AllowViolations lists violation codes the test expects; others fail it.
	AllowViolations map[string]bool
}

// StartTest starts a fake on loopback for t with a user "alice" and a
// connected instance DefaultInstance. When t ends it stops the fake and
// fails t on any error-level violation the test did not allow.
func StartTest(t testing.TB, o Options) *TestServer {
	t.Helper()
	// What the real service appears to do: a new cell-number on every
	// ResumeSession (the old StreamUrl refused). The MGS variants keep
	// their zero values unless the test picks one.
	o.RotateCellNumber, o.StrictCellNumber = true, true
	s := New(o)
	if err := s.Start(""); err != nil {
		t.Fatal(err)
	}
	ts := &TestServer{Server: s, User: s.IAM.AddUser("alice"), AllowViolations: map[string]bool{}}
	s.AddTarget(Target{ID: DefaultInstance, Connected: true})
	t.Cleanup(func() {
		s.Close()
		for _, v := range s.Violations("error") {
			if !ts.AllowViolations[v.Code] {
				t.Errorf("fakeaws violation [%s] %s: %s (session %s)", v.Severity, v.Code, v.Detail, v.Session)
			}
		}
	})
	return ts
}

// AddFaults installs rules in order, failing t on an invalid one.
func (ts *TestServer) AddFaults(t testing.TB, rules ...*FaultRule) {
	t.Helper()
	for _, r := range rules {
		if err := ts.AddFault(r); err != nil {
			t.Fatal(err)
		}
	}
}

// AWSConfig returns an aws.Config for c (default: the user key) in the
// fake's region. Endpoints are per client: point each SDK client's
// BaseEndpoint at URL(). The fake hands out endpoints and credentials, never
// a client of ssmproxy's: callers build their own.
func (ts *TestServer) AWSConfig(c *iam.Credential) aws.Config {
	if c == nil {
		c = &ts.User
	}
	return aws.Config{
		Region:      ts.opts.Region,
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)),
	}
}

// Listen starts a TCP listener on loopback that runs handle for each
// connection, closes it when t ends, and returns its port.
func Listen(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); handle(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// Echo copies every byte back.
func Echo(c net.Conn) { _, _ = io.Copy(c, c) }

// WaitFor polls cond until it holds or the timeout passes.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// ViolationCodes returns the codes of the recorded violations.
func (s *Server) ViolationCodes(minSeverity string) string {
	var codes []string
	for _, v := range s.Violations(minSeverity) {
		codes = append(codes, fmt.Sprintf("%s(%s)", v.Code, v.Severity))
	}
	return strings.Join(codes, ",")
}

// Ctx returns a context cancelled when t ends.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAllowsLanguage: Deny wins, NotAction and NotResource, ? and *
// wildcards across '/', unknown operators do not match, a lone statement.
func TestAllowsLanguage(t *testing.T) {
	pol := `{"Statement":[
	 {"Effect":"Allow","Action":"ssm:*","Resource":"*"},
	 {"Effect":"Deny","NotAction":["ssm:Describe*","ssm:Get?arameter"],"Resource":"arn:aws:ssm:*:*:document/secret/*"},
	 {"Effect":"Allow","Action":"s3:GetObject","NotResource":"arn:aws:s3:::private/*"},
	 {"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"NumericLessThan":{"aws:x":"1"}}}]}`
	for _, c := range []struct {
		call Call
		want bool
	}{
		{Call{Action: "ssm:StartSession", Resource: "arn:aws:ec2:r:a:instance/i-1"}, true},
		{Call{Action: "ssm:StartSession", Resource: "arn:aws:ssm:r:a:document/secret/a/b"}, false},
		{Call{Action: "ssm:DescribeSessions", Resource: "arn:aws:ssm:r:a:document/secret/a"}, true},
		{Call{Action: "ssm:GetParameter", Resource: "arn:aws:ssm:r:a:document/secret/a"}, true},
		{Call{Action: "s3:GetObject", Resource: "arn:aws:s3:::public/x"}, true},
		{Call{Action: "s3:GetObject", Resource: "arn:aws:s3:::private/x"}, false},
		{Call{Action: "kms:Decrypt", Resource: "k", Context: map[string]string{"aws:x": "0"}}, false},
		{Call{Action: "ec2:RunInstances", Resource: "*"}, false},
	} {
		got, err := Allows(pol, c.call)
		if err != nil || got != c.want {
			t.Errorf("%+v: %v, %v; want %v", c.call, got, err, c.want)
		}
	}
	if ok, err := Allows(`{"Statement":{"Effect":"Allow","Action":"a:b","Resource":"r"}}`, Call{Action: "a:b", Resource: "r"}); !ok || err != nil {
		t.Errorf("lone statement: %v %v", ok, err)
	}
	if _, err := Allows(`not json`, Call{}); err == nil {
		t.Error("garbage policy: no error")
	}
}

func FuzzAllows(f *testing.F) {
	f.Add(`{"Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"arn:*/x?"}]}`, "ssm:Start", "arn:a/b/xy")
	f.Fuzz(func(t *testing.T, pol, action, resource string) {
		_, _ = Allows(pol, Call{Action: action, Resource: resource})
	})
}

// TestProxyCommandFor: first match wins, negation, Include with globs
// and ~, Match skipped and noted, Key=value syntax.
func TestProxyCommandFor(t *testing.T) {
	home := t.TempDir()
	ssh := filepath.Join(home, ".ssh")
	if err := os.MkdirAll(filepath.Join(ssh, "conf.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(ssh, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("config", "Include conf.d/*.conf\nMatch host x\n  ProxyCommand nope\nHost i-* !i-0bad\n  ProxyCommand=ssmproxy connect %h %p\nHost *\n  ProxyCommand nc %h %p\n")
	write("conf.d/a.conf", "Host web-*\n  ProxyCommand ssmproxy connect --profile prod %h %p\n")
	for host, want := range map[string]string{
		"web-1": "ssmproxy connect --profile prod %h %p", "i-0123": "ssmproxy connect %h %p",
		"i-0bad": "nc %h %p", "db": "nc %h %p",
	} {
		cmd, _, notes, err := ProxyCommandFor(filepath.Join(ssh, "config"), ssh, host)
		if err != nil || cmd != want {
			t.Errorf("%s: %q, %v; want %q", host, cmd, err, want)
		}
		if len(notes) == 0 || !strings.Contains(notes[0], "Match") {
			t.Errorf("%s: notes %q", host, notes)
		}
	}
}

// TestRunTimesOut: a check that hangs is reported as failed after its
// timeout, and the next check still runs.
func TestRunTimesOut(t *testing.T) {
	rs := Run(context.Background(), []Check{
		{Name: "hangs", Timeout: 50 * time.Millisecond, Run: func(ctx context.Context) Result { <-ctx.Done(); time.Sleep(time.Second); return Passf("late") }},
		{Name: "next", Run: func(context.Context) Result { return Passf("ran") }},
	})
	if len(rs) != 2 || rs[0].Status != Fail || rs[1].Status != Pass || OK(rs) {
		t.Fatalf("%+v", rs)
	}
}

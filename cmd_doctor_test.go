//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/doctor"
	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

const offlineInstance = "i-0fffffffffffffff0"

// clientEnv is a clean environment for ssmproxy (this test binary) against
// ts, with a role, a file keyring and an ssh config with ssmproxy's
// ProxyCommand.
func clientEnv(t *testing.T, ts *fakeaws.TestServer) []string {
	t.Helper()
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})
	ts.AddTarget(fakeaws.Target{ID: offlineInstance, Connected: false})
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Host i-* mi-*\n    ProxyCommand ssmproxy connect %h %p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		"XDG_CACHE_HOME=" + filepath.Join(home, "cache"),
		"SSMPROXY_KEYRING_BACKEND=file", "SSMPROXY_FILE_PASSPHRASE=pw", "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL=" + ts.URL(), broker.EnvRoleARN + "=" + ts.IAM.RoleARN(testRole),
		"AWS_ACCESS_KEY_ID=" + ts.User.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + ts.User.SecretAccessKey}
}

// runMain runs ssmproxy args in env; it returns stdout, stderr and the
// exit code.
func runMain(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	a, _ := json.Marshal(args)
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(env, envRunArgs+"="+string(a))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), 0
}

// with replaces or adds environment variables.
func with(env []string, kv ...string) []string {
	out := append([]string(nil), env...)
	for _, s := range kv {
		k, _, _ := strings.Cut(s, "=")
		out = append(out[:0:0], filterOut(out, k)...)
		out = append(out, s)
	}
	return out
}

func filterOut(env []string, k string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, k+"=") {
			out = append(out, e)
		}
	}
	return out
}

// TestDoctorFailures (docs/doctor.md): the fake can make each check fail;
// each failure is its own line with the fix, the other checks still run,
// and only a run where nothing fails exits 0. The table is logged as the
// doctor prints it.
func TestDoctorFailures(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	env := clientEnv(t, ts)
	skewed := fakeaws.StartTest(t, fakeaws.Options{ClockSkew: 7 * time.Minute})
	skewEnv := clientEnv(t, skewed)
	signed := fakeaws.StartTest(t, fakeaws.Options{RequireSignedUpgrade: true})
	signedEnv := clientEnv(t, signed)
	noProxy := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(noProxy, []byte("Host *.example\n    ProxyCommand nc %h %p\nHost i-*\n    ProxyCommand aws ssm start-session --target %h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		env    []string
		args   []string
		check  string // the check that fails
		detail string // in its detail
		fix    string // in its fix
	}{
		{"no region", with(env, "AWS_REGION="), nil, "profile and region", "region", "region"},
		{"keyring backend", with(env, "SSMPROXY_KEYRING_BACKEND=nosuch"), nil, "keyring", "nosuch", "--keyring-backend"},
		{"no credentials", with(env, "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY="), nil, "credentials", "", "ssmproxy login"},
		{"refused key", with(env, "AWS_SECRET_ACCESS_KEY="+strings.Repeat("w", 40)), nil, "credentials", "refused", "ssmproxy login"},
		{"STS unreachable", with(env, "AWS_ENDPOINT_URL_STS=http://127.0.0.1:1"), nil, "STS", "127.0.0.1:1", "network path"},
		{"clock skew", skewEnv, nil, "STS", "7m0s behind AWS's", "NTP"},
		{"SSM API unreachable", with(env, "AWS_ENDPOINT_URL_SSM=http://127.0.0.1:1"), nil, "SSM API", "127.0.0.1:1", "network path"},
		{"plain http off loopback", with(env, "AWS_ENDPOINT_URL_SSM=http://10.0.0.1:80"), nil, "SSM API", "refused", "network path"},
		{"target not registered", env, []string{"i-0aaaaaaaaaaaaaaa0"}, "target", "not registered", "SSM agent"},
		{"target offline", env, []string{offlineInstance}, "target", "ConnectionLost", "start the SSM agent"},
		{"no instance by that name", env, []string{"web-9"}, "target", "web-9", "instance id"},
		{"data channel refused", signedEnv, []string{fakeaws.DefaultInstance}, "session", "signature required", "network path"},
		{"ssh config without ssmproxy", env, []string{"--ssh-config", noProxy, fakeaws.DefaultInstance}, "ssh config", "aws ssm start-session", "ProxyCommand ssmproxy connect"},
		{"no ssh config", env, []string{"--ssh-config", filepath.Join(t.TempDir(), "none")}, "ssh config", "no such file", "ProxyCommand ssmproxy connect"},
	}
	var table strings.Builder
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, stderr, code := runMain(t, c.env, append([]string{"doctor", "--json"}, c.args...)...)
			var rs []doctor.Result
			if err := json.Unmarshal([]byte(out), &rs); err != nil {
				t.Fatalf("--json output %q: %v; stderr %s", out, err, stderr)
			}
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			var failed []string
			for _, r := range rs {
				if r.Status == doctor.Fail {
					failed = append(failed, r.Check)
				}
				if r.Check != c.check {
					continue
				}
				if r.Status != doctor.Fail || !strings.Contains(r.Detail, c.detail) || !strings.Contains(r.Fix, c.fix) {
					t.Errorf("%s: %+v; want a failure mentioning %q, fix %q", r.Check, r, c.detail, c.fix)
				}
			}
			// Later checks that need this one may fail with it (no
			// credentials without STS), never instead of it.
			if !slices.Contains(failed, c.check) {
				t.Errorf("failed checks %q; want %q among them", failed, c.check)
			}
			if len(rs) < 7 {
				t.Errorf("only %d checks ran: a failure must not stop the others", len(rs))
			}
			human, _, _ := runMain(t, c.env, append([]string{"doctor"}, c.args...)...)
			table.WriteString("## " + c.name + "\n" + human)
		})
	}
	// Everything passes: exit 0, every line ✓ or –.
	out, stderr, code := runMain(t, env, "doctor", fakeaws.DefaultInstance)
	if code != 0 || strings.Contains(out, "✗") || strings.Count(out, "✓") < 8 {
		t.Errorf("healthy: exit %d\n%s\nstderr %s", code, out, stderr)
	}
	table.WriteString("## healthy\n" + out)
	t.Logf("doctor output per case:\n%s", table.String())
	for _, s := range []string{ts.User.SecretAccessKey} {
		if strings.Contains(table.String(), s) {
			t.Error("the doctor printed a secret")
		}
	}
}

// TestAllowsOwnPolicy: the evaluator applied to the policy the broker
// really mints: every call of a session allowed, its neighbours denied.
func TestAllowsOwnPolicy(t *testing.T) {
	pol, err := broker.SessionPolicy(broker.Scope{Region: "eu-west-1", Account: "123456789012", Target: "i-0123456789abcdef0",
		PushKeyUser: "ec2-user"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	const inst = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0"
	for _, c := range []struct {
		call doctor.Call
		want bool
	}{
		{doctor.Call{Action: "ssm:StartSession", Resource: inst}, true},
		{doctor.Call{Action: "SSM:startsession", Resource: inst}, true}, // actions are case-insensitive
		{doctor.Call{Action: "ssm:StartSession", Resource: "arn:aws:ssm:eu-west-1::document/AWS-StartSSHSession"}, true},
		{doctor.Call{Action: "ssm:StartSession", Resource: "arn:aws:ssm:eu-west-1::document/AWS-RunShellScript"}, false},
		{doctor.Call{Action: "ssm:StartSession", Resource: "arn:aws:ec2:eu-west-1:123456789012:instance/i-0aaaaaaaaaaaaaaa0"}, false},
		{doctor.Call{Action: "ssm:StartSession", Resource: inst, Context: map[string]string{"ssm:SessionDocumentAccessCheck": "false"}}, false},
		{doctor.Call{Action: "ssm:ResumeSession", Resource: "arn:aws:ssm:eu-west-1:123456789012:session/alice-0abc"}, true},
		{doctor.Call{Action: "ssm:TerminateSession", Resource: "arn:aws:ssm:eu-west-1:123456789012:session/bob-0abc"}, false},
		{doctor.Call{Action: "ssm:SendCommand", Resource: inst}, false},
		{doctor.Call{Action: "ec2-instance-connect:SendSSHPublicKey", Resource: inst, Context: map[string]string{"ec2:osuser": "ec2-user"}}, true},
		{doctor.Call{Action: "ec2-instance-connect:SendSSHPublicKey", Resource: inst, Context: map[string]string{"ec2:osuser": "root"}}, false},
		{doctor.Call{Action: "ec2-instance-connect:SendSSHPublicKey", Resource: inst}, false}, // StringEquals needs the key
	} {
		got, err := doctor.Allows(pol, c.call)
		if err != nil || got != c.want {
			t.Errorf("%+v: %v, %v; want %v", c.call, got, err, c.want)
		}
	}
}

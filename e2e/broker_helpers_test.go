//go:build unix

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// brokerWorld is one user's machine: a home, caches, a file keyring.
type brokerWorld struct {
	t    *testing.T
	f    *fake
	dir  string
	base []string // environment without any AWS key
}

func newBrokerWorld(t *testing.T, f *fake) *brokerWorld {
	dir := t.TempDir()
	env := f.environ(
		"HOME="+filepath.Join(dir, "home"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"SSMPROXY_LOCK_DIR="+filepath.Join(dir, "locks"),
		"SSMPROXY_KEYRING_BACKEND=file",
		"SSMPROXY_FILE_PASSPHRASE="+filePass,
		"SSMPROXY_ROLE_ARN="+brokerRoleARN,
	)
	return &brokerWorld{t: t, f: f, dir: dir, base: without(env, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
}

// fakeKey returns the fake's long-term key for alice.
func (w *brokerWorld) fakeKey() (string, string) {
	var id, secret string
	for _, kv := range w.f.env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "AWS_ACCESS_KEY_ID":
			id = v
		case "AWS_SECRET_ACCESS_KEY":
			secret = v
		}
	}
	return id, secret
}

// login stores alice's key with "ssmproxy login", from the environment as a
// script would.
func (w *brokerWorld) login(profile string) {
	id, secret := w.fakeKey()
	out, _ := run(w.t, append(w.base, "SSMPROXY_LOGIN_ACCESS_KEY_ID="+id, "SSMPROXY_LOGIN_SECRET_ACCESS_KEY="+secret),
		nil, ssmproxyBin, "login", "--profile", profile)
	if !strings.Contains(out, "Stored the key AKIA") || !strings.Contains(out, "user/alice") || strings.Contains(out, secret) {
		w.t.Fatalf("login output %q", out)
	}
}

func without(env []string, keys ...string) []string {
	var out []string
outer:
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		for _, drop := range keys {
			if k == drop {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

// cacheEntries reads the broker's cache files (as a test, to find secrets
// and real expirations).
func (w *brokerWorld) cacheEntries() []map[string]any {
	files, _ := filepath.Glob(filepath.Join(w.dir, "cache", "ssmproxy", "creds", "*.json"))
	var out []map[string]any
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// mintSessionCreds asks the fake's STS for session credentials of alice, as
// a user does before exporting them.
func mintSessionCreds(t *testing.T, f *fake, id, secret string) aws.Credentials {
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id, secret, "")))
	if err != nil {
		t.Fatal(err)
	}
	out, err := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.url) }).
		GetSessionToken(context.Background(), &sts.GetSessionTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	return aws.Credentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey, SessionToken: *c.SessionToken,
		CanExpire: true, Expires: *c.Expiration}
}

// echoSession runs one ssmproxy connect to the echo target, sending a line
// every second for d and checking each comes back.
func echoSession(env []string, port string, id int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d+90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ssmproxyBin, "connect", target, port)
	cmd.Env = env
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	var stderr rig.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(out)
	end := time.Now().Add(d)
	var failure error
	for i := 0; time.Now().Before(end); i++ {
		line := fmt.Sprintf("process-%d line-%d", id, i)
		fmt.Fprintln(in, line)
		if !sc.Scan() || sc.Text() != line {
			failure = fmt.Errorf("process %d: echo %d lost (%q)", id, i, sc.Text())
			break
		}
		time.Sleep(time.Second)
	}
	in.Close()
	err := cmd.Wait()
	if failure == nil && err != nil {
		failure = fmt.Errorf("process %d: %v: %s", id, err, stderr.String())
	}
	if failure != nil {
		return fmt.Errorf("%w\nstderr: %s", failure, stderr.String())
	}
	return nil
}

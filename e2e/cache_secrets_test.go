//go:build unix

package e2e

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// TestCredentialProcessNotCached (docs/credentials.md 5.3, issue 7 item 5):
// credentials ssmproxy did not mint, here a profile's credential_process
// with no role, are never written to the cache directory: after a real
// connect through them, no file under the cache or lock directories holds
// their secret key or session token. Each process asks the source itself.
func TestCredentialProcessNotCached(t *testing.T) {
	port := fakeaws.Listen(t, fakeaws.Echo)
	f := startFake(t)
	w := newBrokerWorld(t, f)
	id, secret := w.fakeKey()
	c := mintSessionCreds(t, f, id, secret)
	out, _ := json.Marshal(map[string]any{"Version": 1, "AccessKeyId": c.AccessKeyID, "SecretAccessKey": c.SecretAccessKey,
		"SessionToken": c.SessionToken, "Expiration": c.Expires.UTC().Format(time.RFC3339)})
	dir := t.TempDir()
	output := filepath.Join(dir, "output.json")
	if err := os.WriteFile(output, out, 0o600); err != nil {
		t.Fatal(err)
	}
	runs := filepath.Join(dir, "runs")
	script := filepath.Join(dir, "creds.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho run >> "+runs+"\ncat "+output+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "aws-config")
	if err := os.WriteFile(cfgFile, []byte("[profile proc]\nregion = us-east-1\ncredential_process = "+script+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(without(w.base, "SSMPROXY_ROLE_ARN"), "AWS_CONFIG_FILE="+cfgFile, "AWS_PROFILE=proc")
	for i := 0; i < 2; i++ {
		if err := echoSession(env, port, i, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(runs); bytes.Count(b, []byte("run")) != 2 {
		t.Errorf("credential_process ran %d times for 2 connects, want once each (nothing shared)", bytes.Count(b, []byte("run")))
	}
	files := 0
	for _, root := range []string{filepath.Join(w.dir, "cache"), filepath.Join(w.dir, "locks")} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			files++
			b, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("read %s: %v", p, err)
				return nil
			}
			for name, s := range map[string]string{"secret access key": c.SecretAccessKey, "session token": c.SessionToken} {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("%s holds the credential_process output's %s in plaintext", p, name)
				}
			}
			return nil
		})
	}
	t.Logf("%d files under the cache and lock directories, none with the process's secrets", files)
}

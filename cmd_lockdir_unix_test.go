//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/broker"
	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// TestUnsafeLockDirExit (docs/credentials.md 5.6): "connect" with a lock
// directory others may write fails before any AWS call with exit 2 and one
// line that names the directory and the setting to fix.
func TestUnsafeLockDirExit(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	ts.IAM.AddRole(iam.Role{Name: testRole, MaxSession: 12 * time.Hour})
	dir := t.TempDir()
	locks := filepath.Join(dir, "shared-locks")
	if err := os.Mkdir(locks, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(locks, 0o777); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal([]string{"connect", fakeaws.DefaultInstance})
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"), "SSMPROXY_LOCK_DIR=" + locks,
		"SSMPROXY_KEYRING_BACKEND=file", "SSMPROXY_FILE_PASSPHRASE=pw", "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL=" + ts.URL(), broker.EnvRoleARN + "=" + ts.IAM.RoleARN(testRole),
		"AWS_ACCESS_KEY_ID=" + ts.User.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + ts.User.SecretAccessKey,
		envRunArgs + "=" + string(a)}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
		t.Fatalf("exit %v, want %d\nstderr: %s", err, exitUsage, stderr.String())
	}
	line := strings.TrimSpace(stderr.String())
	if strings.Count(line, "\n") != 0 || !strings.Contains(line, "lock directory "+locks) ||
		!strings.Contains(line, "writable by others") || !strings.Contains(line, "SSMPROXY_LOCK_DIR") {
		t.Fatalf("stderr %q: want one line naming the directory, the problem and the setting", line)
	}
	t.Log(line)
	if stdout.Len() != 0 {
		t.Fatalf("stdout %q", stdout.String())
	}
	if n := ts.IAM.Stats().STSCalls["AssumeRole"]; n != 0 {
		t.Fatalf("%d AssumeRole calls with an unsafe lock directory", n)
	}
}

//go:build unix

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// TestSSHOverTLS: ssh, scp and rsync through ssmproxy against fakeaws -tls
// (docs/fakeaws.md, "TLS"): every API endpoint is HTTPS and the data
// channel WSS, with a certificate from a CA the fake made at start. With
// the env file's AWS_CA_BUNDLE it all works; without it ssmproxy refuses
// the certificate, ssh fails, and ssmproxy's message says why.
func TestSSHOverTLS(t *testing.T) {
	d := startSSHD(t)
	f := startFake(t, "-tls", "-realistic-agent=false")
	conf := d.sshConfig(t, "")
	env := f.environ()
	var bundle bool
	var noCA []string
	for _, e := range env {
		if strings.HasPrefix(e, "AWS_CA_BUNDLE=") {
			bundle = true
			continue
		}
		noCA = append(noCA, e)
	}
	if !bundle || !strings.HasPrefix(f.URL, "https://") {
		t.Fatalf("fakeaws -tls: URL %s, AWS_CA_BUNDLE in the env file: %v", f.URL, bundle)
	}
	if out, _ := run(t, env, nil, "ssh", "-F", conf, target, "echo over tls"); out != "over tls\n" {
		t.Fatalf("stdout %q", out)
	}
	transfers(t, f, d, 4<<20)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, stderr, err := rig.Run(ctx, noCA, nil, "ssh", "-F", conf, target, "true")
	if err == nil || !strings.Contains(stderr, "certificate") {
		t.Fatalf("without the CA bundle: %v, stderr %q; want a failure naming the certificate", err, tail(stderr))
	}
	t.Logf("without the bundle: %s", strings.TrimSpace(tail(stderr)))
}

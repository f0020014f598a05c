//go:build unix

package e2e

import (
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
)

// TestCLIRefusesPortForwarding: connect with a port-forwarding document
// (type LocalPortForwarding; the agent would speak smux, docs/protocol.md
// 11.1) exits 2 with one clear line and starts no session. A custom
// document of the same type is refused in the handshake
// (ssm.TestCustomPortForwardingDocumentRefused).
func TestCLIRefusesPortForwarding(t *testing.T) {
	f := startFake(t)
	port := fakeaws.Listen(t, fakeaws.Echo)
	for _, doc := range []string{"AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost",
		"arn:aws:ssm:us-east-1::document/AWS-StartPortForwardingSession"} {
		t.Run(doc, func(t *testing.T) {
			out, errOut, code := connect(t, f.environ(), strings.NewReader(""), "--document", doc, target, port)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, errOut)
			}
			if out != "" {
				t.Fatalf("stdout must stay empty, got %q", out)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("want one stderr line, got %q", errOut)
			}
			for _, want := range []string{doc, "port-forwarding document", "LocalPortForwarding", "ssmproxy forward"} {
				if !strings.Contains(errOut, want) {
					t.Fatalf("stderr %q does not mention %q", errOut, want)
				}
			}
		})
	}
	if n := f.stats().API["StartSession"]; len(n) != 0 {
		t.Fatalf("StartSession was called: %v", n)
	}
}

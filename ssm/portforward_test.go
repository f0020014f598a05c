package ssm_test

import (
	"errors"
	"testing"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/ssm"
)

// A custom document whose properties say type LocalPortForwarding slips
// past the name check; the handshake refuses it, so smux never reaches the
// caller (docs/protocol.md 11.1).
func TestCustomPortForwardingDocumentRefused(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	ts.AddDocument(fakeaws.Document{Name: "Team-Tunnel", SessionType: "Port",
		Params:     []fakeaws.DocParam{{Name: "portNumber", Default: "80"}},
		Properties: map[string]string{"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding"}})
	port := fakeaws.Listen(t, fakeaws.Echo)
	if ssm.IsPortForwardingDocument("Team-Tunnel") {
		t.Fatal("the name check already knows the custom document: the test proves nothing")
	}
	_, err := startSession(t, ts, port, func(c *ssm.Config) { c.DocumentName = "Team-Tunnel" })
	var pf *ssm.PortForwardingError
	if !errors.As(err, &pf) || pf.Document != "Team-Tunnel" {
		t.Fatalf("Start: %v, want PortForwardingError for Team-Tunnel", err)
	}
}

// TestPortForwardingDocumentNames: the AWS port-forwarding documents, by
// name or ARN; nothing else.
func TestPortForwardingDocumentNames(t *testing.T) {
	for name, want := range map[string]bool{
		ssm.DocumentPortForwarding:                                      true,
		ssm.DocumentPortForwardingToRemote:                              true,
		"arn:aws:ssm:eu-west-1::document/" + ssm.DocumentPortForwarding: true,
		ssm.DocumentSSH:                   false,
		"AWS-StartPortForwardingSessionX": false,
	} {
		if got := ssm.IsPortForwardingDocument(name); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}

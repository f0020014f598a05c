package ssm

import (
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

func sessionTypeRequest(t *testing.T, props map[string]string) *wire.HandshakeRequest {
	t.Helper()
	params, err := json.Marshal(wire.SessionTypeRequest{SessionType: wire.SessionTypePort, Properties: props})
	if err != nil {
		t.Fatal(err)
	}
	return &wire.HandshakeRequest{AgentVersion: "3.3.1142.0",
		RequestedClientActions: []wire.RequestedClientAction{{ActionType: wire.ActionSessionType, ActionParameters: params}}}
}

// TestHandshakeRefusesPortForwarding: a Port session whose properties say
// type LocalPortForwarding is refused whatever the document is called,
// with a non-success status the agent fails the session on
// (docs/protocol.md 7.3, 11.1); the SSH document's properties pass.
func TestHandshakeRefusesPortForwarding(t *testing.T) {
	h := newHandshake("s-1", DefaultClientVersion, "Custom-Tunnel", false, slog.New(slog.DiscardHandler))
	resp, err := h.answer(sessionTypeRequest(t, map[string]string{
		"portNumber": "5432", "type": wire.PortTypeLocalPortForwarding, "localPortNumber": "0"}))
	var pf *PortForwardingError
	if !errors.As(err, &pf) || pf.Document != "Custom-Tunnel" || pf.SessionID != "s-1" {
		t.Fatalf("refusal %v, want PortForwardingError naming Custom-Tunnel", err)
	}
	if len(resp.ProcessedClientActions) != 1 || resp.ProcessedClientActions[0].ActionStatus != wire.ActionUnsupported ||
		resp.ProcessedClientActions[0].Error == "" {
		t.Fatalf("response %+v, want the SessionType action unsupported with a reason", resp)
	}

	h = newHandshake("s-2", DefaultClientVersion, DocumentSSH, false, slog.New(slog.DiscardHandler))
	resp, err = h.answer(sessionTypeRequest(t, map[string]string{"portNumber": "22"}))
	if err != nil || resp.ProcessedClientActions[0].ActionStatus != wire.ActionSuccess {
		t.Fatalf("SSH document: %+v, %v; want success", resp, err)
	}
}

// TestHandshakeAcceptsPortForwardingWhenCarried: a caller that carries the
// LocalPortForwarding modes (Config.PortForwarding, `ssmproxy forward`)
// gets the session, and the handshake remembers its type so that Mux can
// pick smux (docs/protocol.md 11.1).
func TestHandshakeAcceptsPortForwardingWhenCarried(t *testing.T) {
	h := newHandshake("s-1", DefaultClientVersion, DocumentPortForwarding, true, slog.New(slog.DiscardHandler))
	resp, err := h.answer(sessionTypeRequest(t, map[string]string{
		"portNumber": "5432", "type": wire.PortTypeLocalPortForwarding, "localPortNumber": "0"}))
	if err != nil || resp.ProcessedClientActions[0].ActionStatus != wire.ActionSuccess {
		t.Fatalf("answer %+v, %v; want success", resp, err)
	}
	if !h.localPortForwarding.Load() {
		t.Fatal("the handshake did not record type LocalPortForwarding")
	}
	h = newHandshake("s-2", DefaultClientVersion, DocumentSSH, true, slog.New(slog.DiscardHandler))
	if _, err := h.answer(sessionTypeRequest(t, map[string]string{"portNumber": "22"})); err != nil || h.localPortForwarding.Load() {
		t.Fatalf("SSH document: %v, localPortForwarding %v; want basic", err, h.localPortForwarding.Load())
	}
}

package ssm

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// FuzzHandshakeRequest: any HandshakeRequest payload is either refused as
// malformed or answered (docs/protocol.md 7): one processed action per
// requested action, in order, a response that encodes to JSON the agent can
// parse, and no session unless a Port session type was offered and accepted
// and nothing was requested that ssmproxy cannot do.
func FuzzHandshakeRequest(f *testing.F) {
	f.Add([]byte(`{"AgentVersion":"3.3.1142.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"portNumber":"22"}}}]}`))
	f.Add([]byte(`{"AgentVersion":"3.3.1142.0","RequestedClientActions":[{"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"k"}},{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port"}}]}`))
	f.Add([]byte(`{"RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":"Port"}]}`))
	f.Add([]byte(`{"RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream"}},{"ActionType":"Other"}]}`))
	f.Add([]byte(`{"RequestedClientActions":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, p []byte) {
		h := newHandshake("s-1", "1.2.0.0", "AWS-StartSSHSession", false, slog.New(slog.DiscardHandler))
		if err := h.request(p); err != nil {
			var req wire.HandshakeRequest
			if json.Unmarshal(p, &req) == nil {
				t.Fatalf("refused a payload that parses: %v", err)
			}
			return
		}
		req := h.takePending()
		if req == nil || h.takePending() != nil {
			t.Fatalf("the request must be pending exactly once")
		}
		resp, refusal := h.answer(req)
		if len(resp.ProcessedClientActions) != len(req.RequestedClientActions) {
			t.Fatalf("%d actions answered, %d requested", len(resp.ProcessedClientActions), len(req.RequestedClientActions))
		}
		portOffered, kms := false, false
		for i, a := range req.RequestedClientActions {
			pa := resp.ProcessedClientActions[i]
			if pa.ActionType != a.ActionType {
				t.Fatalf("action %d answered as %q, requested %q", i, pa.ActionType, a.ActionType)
			}
			switch a.ActionType {
			case wire.ActionKMSEncryption:
				kms = true
			case wire.ActionSessionType:
				var st wire.SessionTypeRequest
				if json.Unmarshal(a.ActionParameters, &st) == nil && st.SessionType == wire.SessionTypePort {
					portOffered = true
				}
			}
			if pa.ActionStatus != wire.ActionSuccess && pa.Error == "" {
				t.Fatalf("action %q not done and no error said why", a.ActionType)
			}
		}
		if refusal == nil && (!portOffered || kms) {
			t.Fatalf("session accepted: Port offered %v, KMS requested %v", portOffered, kms)
		}
		if refusal != nil && refusal.Error() == "" {
			t.Fatalf("empty refusal")
		}
		b, err := wire.MarshalPayload(resp)
		if err != nil {
			t.Fatalf("response does not encode: %v", err)
		}
		var back wire.HandshakeResponse
		if err := json.Unmarshal(b, &back); err != nil || len(back.ProcessedClientActions) != len(resp.ProcessedClientActions) {
			t.Fatalf("response does not decode: %v", err)
		}
	})
}

// FuzzHandshakeComplete: any HandshakeComplete payload, well-formed or not,
// opens the gate for data exactly once and never panics.
func FuzzHandshakeComplete(f *testing.F) {
	f.Add([]byte(`{"HandshakeTimeToComplete":1500000,"CustomerMessage":""}`))
	f.Add([]byte(`{"CustomerMessage":"\u001b[2Jhello"}`))
	f.Add([]byte(`nope`))
	f.Fuzz(func(t *testing.T, p []byte) {
		h := newHandshake("s-1", "1.2.0.0", "AWS-StartSSHSession", false, slog.New(slog.DiscardHandler))
		if h.isReady() {
			t.Fatal("ready before HandshakeComplete")
		}
		h.complete(p)
		h.complete(p)
		if !h.isReady() {
			t.Fatal("not ready after HandshakeComplete")
		}
	})
}

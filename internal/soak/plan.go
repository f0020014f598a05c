//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// The one mixed fault plan (issue 7, "Long hauls"). Fake flags: the
// realistic agent (its default), websocket closes every closeEvery, the
// credential lifetime, and a role the broker assumes.
const (
	closeEvery  = 15 * time.Second
	soakRole    = "ssmproxy-soak"
	soakRoleARN = "arn:aws:iam::123456789012:role/" + soakRole
	lossRate    = 0.01
	// agentLoss is the default loss of the agent's own stream frames (its
	// Output) and of ssmproxy's acks for them; SOAK_AGENT_LOSS overrides it. It is lower than lossRate
	// because the real agent repairs loss by resending only its oldest
	// unacked message, at most once per 100 ms tick and once per RTO
	// (docs/protocol.md 8.5), and an ack lost on the way to it leaves that
	// message for the same head-only resend: at its ~1000 messages/s, 1 %
	// loss is 10 holes a second, at or above what it can refill, so the holes pile up
	// and the download falls to the refill rate whatever the client does.
	// Measured with 1 %: 17 MiB of 64 MiB after 3.5 min, then stalls of over
	// a minute. 0.1 % is one hole a second, which the agent keeps up with.
	agentLoss    = 0.001
	dupRate      = 0.01
	reorderWin   = 8
	jitter       = 20 * time.Millisecond
	jitterShare  = 0.5 // of the stream frames; the rest go through the reorder window
	halfOpenFor  = 10 * time.Second
	throttleAt   = 0.10 // share of the download done
	halfOpenAt   = 0.25
	keyringPass  = "soak-keyring-passphrase"
	answerWithin = 2 * time.Minute // an interactive answer later than this fails the run
	stallLimit   = 5 * time.Minute // a transfer without progress this long fails the run
)

func fakeArgs(credTTL time.Duration) []string {
	return []string{"-cred-ttl", credTTL.String(), "-close-every", closeEvery.String(), "-role", soakRole}
}

// relayRules are the frame faults, installed in both directions. A rule acts
// on a frame and stops there, so the rules are ordered: 1 % of stream frames
// and acks are lost, 1 % duplicated; of the rest, half of the stream frames
// wait 0-20 ms (jitter, which lets them overtake each other) and the others
// are released in reversed windows of 8; acks all get the jitter. Sequence
// numbers below 2 (the handshake) are left alone, as the fault tests do.
func relayRules(agentLoss float64) []fakeaws.FaultRule {
	seq := int64(2)
	var rules []fakeaws.FaultRule
	for _, dir := range []string{"client_to_agent", "agent_to_client"} {
		stream := "input_stream_data"
		if dir == "agent_to_client" {
			stream = "output_stream_data"
		}
		for _, mt := range []string{stream, "acknowledge"} {
			loss := lossRate
			if mt == "output_stream_data" || (mt == "acknowledge" && dir == "client_to_agent") {
				loss = agentLoss
			}
			if loss > 0 { // a rule without a probability acts on every frame
				rules = append(rules, fakeaws.FaultRule{Name: "loss", Direction: dir, MessageType: mt, SeqMin: &seq, Probability: loss, Action: fakeaws.ActionDrop})
			}
			rules = append(rules,
				fakeaws.FaultRule{Name: "duplicate", Direction: dir, MessageType: mt, SeqMin: &seq, Probability: dupRate, Action: fakeaws.ActionDuplicate})
		}
		rules = append(rules,
			fakeaws.FaultRule{Name: "jitter", Direction: dir, MessageType: stream, SeqMin: &seq, Probability: jitterShare,
				Action: fakeaws.ActionDelay, Jitter: fakeaws.Duration(jitter)},
			fakeaws.FaultRule{Name: "reorder", Direction: dir, MessageType: stream, SeqMin: &seq, Action: fakeaws.ActionReorder, Window: reorderWin},
			fakeaws.FaultRule{Name: "ack-jitter", Direction: dir, MessageType: "acknowledge", Action: fakeaws.ActionDelay, Jitter: fakeaws.Duration(jitter)})
	}
	return rules
}

func installPlan(f *rig.Fake, agentLoss float64) error {
	rules := relayRules(agentLoss)
	for i := range rules {
		r := &rules[i]
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := f.Post("/_fake/faults", string(b)); err != nil {
			return fmt.Errorf("fault rule %s: %w", r.Name, err)
		}
	}
	return nil
}

func planDescription(credTTL time.Duration, agentLoss float64) string {
	return fmt.Sprintf("%.0f%% loss (%.2g%% of the agent's data frames and their acks), %.0f%% duplicates, reorder window %d, %s jitter (both directions, data and acks); "+
		"websocket closes every %s; %s credentials minted by the broker (role %s, key in a file keyring); "+
		"one %s half-open episode; one throttled ResumeSession; the realistic agent (1 KiB + 1 ms pacing, head-only resend)",
		lossRate*100, agentLoss*100, dupRate*100, reorderWin, jitter, closeEvery, credTTL, soakRole, halfOpenFor)
}

package ssm

import "time"

// Pause: MGS sends pause_publication when the agent's leg is away and
// start_publication when it is back (docs/protocol.md 8.8). Nobody outside
// AWS knows whether start_publication always follows, and the official
// plugin ignores both messages, so no deployed client depends on it. For
// ssmproxy a pause is therefore a hint, never a gate: while paused the
// sender slows down to one probe per interval but keeps sending, so a
// missing start_publication costs at most one interval. Waiting for it
// instead could deadlock an idle ssh session: ssh waits for the user, and
// the user's keystroke would wait for start_publication.

// pausedProbeInterval is how often the sender probes while paused: often
// enough that a keystroke after a lost start_publication is late by at most
// this much (two intervals if the probe itself met the agent's leg away),
// rarely enough that a path that really is away costs one frame per second
// instead of a retransmission storm against MGS. It was 3 s; the variant
// matrix (docs/fakeaws.md 4.1) showed a probe lost to an agent leg that was
// away at that moment costing 6 s of an interactive session.
const pausedProbeInterval = time.Second

// probe returns the one frame to send while paused, or nil before the
// interval since the last probe (or the pause) has passed. The probe is the
// oldest unacked message already sent, if there is one; otherwise the next
// message never sent, so new data goes out even when nothing is in flight.
// Nothing is dropped: every other message keeps its place in the window.
// s.mu must be held.
func (s *sender) probe(now time.Time) []byte {
	if s.live == 0 || now.Sub(s.lastProbe) < pausedProbeInterval {
		return nil
	}
	limit := int(s.unsent - s.base)
	for i := 0; i < limit && i < len(s.q); i++ {
		if m := &s.q[i]; !m.acked && m.sends > 0 {
			s.lastProbe = now
			s.probes++
			s.retransmits++
			s.transmit(m, now)
			return m.frame
		}
	}
	for s.unsent < s.next {
		i := int(s.unsent - s.base)
		s.unsent++
		if i < 0 || s.q[i].acked {
			continue
		}
		m := &s.q[i]
		s.lastProbe = now
		s.probes++
		s.sentNew++
		s.transmit(m, now)
		if s.hint.IsZero() || m.deadline.Before(s.hint) {
			s.hint = m.deadline
		}
		return m.frame
	}
	return nil
}

// setPaused starts or ends a pause. Starting one restarts the probe
// interval; ending one makes every expired timer count again at once.
func (s *sender) setPaused(p bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused == p {
		return
	}
	if !p {
		s.hint = time.Time{}
	}
	s.paused = p
	s.lastProbe = s.clock.Now()
}

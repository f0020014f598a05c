package ssm

import "time"

// supervise owns the data channel for the session's lifetime: it takes the
// first leg from the resumer, runs it, and whenever a leg dies, has the
// resumer resume the session and open the next, until the session ends.
func (s *Session) supervise() {
	defer s.wg.Done()
	defer close(s.done)
	l, err := s.legs.open()
	var rs *resumeState
	for {
		healthy := false
		if err == nil {
			healthy, err = s.runLeg(l)
			s.legDied = s.clk.Now()
		}
		if s.isEnded() || s.terminating.Load() {
			// Ended, or ending: after the TerminateSession flag the service
			// closes the session, and a ResumeSession would only race its
			// channel_closed. Close (or noProgress) calls TerminateSession
			// itself, then finish: Done waits for that, so that it never
			// closes before Err says why.
			<-s.ctx.Done()
			return
		}
		s.log.Info("data channel lost; resuming", "reason", err)
		s.cfg.trace(TraceLegLost, "reason", err, "healthy", healthy)
		// A leg that died before proving itself (no valid frame, or opened
		// and closed at once) does not reset the budget and backoff: a
		// service that accepts upgrades and drops them must not turn into
		// a tight ResumeSession loop.
		if rs == nil || healthy {
			rs = &resumeState{start: s.clk.Now(), backoff: resumeBackoffMin}
		}
		rs.lastLeg = err
		if l, err = s.legs.resume(rs); err != nil {
			s.finish(err)
			return
		}
		s.reconnects.Add(1)
	}
}

// legProven: a leg that stayed up this long counts as healthy even if it
// carried no frame (an idle session).
const legProven = 10 * time.Second

// runLeg makes l the current leg and blocks until it dies. It reports
// whether the leg proved healthy (it carried a valid frame, or lived long)
// and why it died.
func (s *Session) runLeg(l *leg) (proven bool, err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		l.close(true)
		l.start()
		return false, l.wait()
	}
	s.leg = l
	s.mu.Unlock()
	// Acks queued for or in flight on the dead leg may be lost: send every
	// recent one again on the new leg (duplicates are harmless to the agent).
	s.acks.clear()
	if n := s.acks.reack(s.legDied); n > 0 {
		s.log.Debug("re-acking recent messages on the new leg", "count", n)
	}
	s.send.setPaused(false)
	s.send.retransmitAll()
	opened := s.clk.Now()
	s.cfg.trace(TraceLegUp)
	l.start()
	s.prog.setUp(true)
	s.out.wake()
	err = l.wait()
	s.prog.setUp(false)
	s.mu.Lock()
	if s.leg == l {
		s.leg = nil
	}
	s.mu.Unlock()
	return l.validFrames.Load() > 0 || s.clk.Since(opened) >= legProven, err
}

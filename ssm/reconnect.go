package ssm

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// supervise owns the data channel for the session's lifetime: it opens the
// first leg, and whenever a leg dies, resumes the session and opens the next,
// until the session ends.
func (s *Session) supervise() {
	defer s.wg.Done()
	defer close(s.done)
	c, err := s.open(s.info, true)
	var rs *resumeState
	for {
		healthy := false
		if err == nil {
			err, healthy = s.runLeg(c)
			s.legDied = s.clk.Now()
		}
		if s.isEnded() {
			return
		}
		s.log.Info("data channel lost; resuming", "reason", err)
		// A leg that died before proving itself (no valid frame, or opened
		// and closed at once) does not reset the budget and backoff: a
		// service that accepts upgrades and drops them must not turn into
		// a tight ResumeSession loop.
		if rs == nil || healthy {
			rs = &resumeState{start: s.clk.Now(), backoff: resumeBackoffMin}
		}
		rs.lastLeg = err
		if c, err = s.resume(rs); err != nil {
			s.fail(err)
			return
		}
		s.reconnects.Add(1)
	}
}

// resumeState carries the resume budget and backoff across legs that die
// before they prove healthy.
type resumeState struct {
	start    time.Time
	backoff  time.Duration
	attempts int
	// pause is owed before the next ResumeSession: the last leg failed.
	pause bool
	// lastLeg is why the last leg died, reported when the budget runs out.
	lastLeg error
}

// legProven: a leg that stayed up this long counts as healthy even if it
// carried no frame (an idle session).
const legProven = 10 * time.Second

// runLeg makes c the current leg and blocks until it dies. It reports
// whether the leg proved healthy: it carried a valid frame, or lived long.
func (s *Session) runLeg(c *wsConn) (error, bool) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		c.close(true)
		c.start()
		return c.wait(), false
	}
	s.conn = c
	s.mu.Unlock()
	// Acks queued for or in flight on the dead leg may be lost: send every
	// recent one again on the new leg (duplicates are harmless to the agent).
	s.acks.clear()
	if n := s.reackRecent(); n > 0 {
		s.log.Debug("re-acking recent messages on the new leg", "count", n)
	}
	s.send.setPaused(false)
	s.send.retransmitAll()
	opened := s.clk.Now()
	c.start()
	s.wake()
	err := c.wait()
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	s.mu.Unlock()
	return err, c.validFrames.Load() > 0 || s.clk.Since(opened) >= legProven
}

// open dials info's StreamUrl. For the first open after StartSession it
// retries the same token briefly, as the plugin does.
func (s *Session) open(info SessionInfo, first bool) (*wsConn, error) {
	attempts := 1
	if first {
		attempts += firstOpenRetries
	}
	var err error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			if !s.sleep(time.Duration(i) * 300 * time.Millisecond) {
				return nil, s.ctx.Err()
			}
		}
		var c *wsConn
		if c, err = s.dial(info); err == nil {
			return c, nil
		}
		var de *DialError
		if !errors.As(err, &de) {
			return nil, err
		}
	}
	return nil, err
}

func (s *Session) dial(info SessionInfo) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, apiCallTimeout)
	defer cancel()
	ws, bc, err := dialChannel(ctx, info.StreamURL, info.TokenValue, dialConfig{
		ClientID: s.cfg.ClientID, ClientVersion: s.cfg.ClientVersion,
		Sign: s.cfg.SignDial, Credentials: s.cfg.Credentials, Region: s.cfg.Region,
		TLSConfig: s.cfg.TLSConfig, Timeout: apiCallTimeout,
	})
	if err != nil {
		return nil, err
	}
	return newWSConn(s, ws, bc), nil
}

// resume calls ResumeSession and dials the StreamUrl and token it returns,
// retrying with capped exponential backoff and jitter for up to the resume
// budget (protocol.md 10.3). Terminal answers end it at once.
func (s *Session) resume(rs *resumeState) (*wsConn, error) {
	deadline := rs.start.Add(s.cfg.ResumeBudget)
	credRetried := false
	last := rs.lastLeg
	for {
		if rs.pause {
			wait := rs.backoff/2 + rand.N(rs.backoff/2+1)
			if s.clk.Now().Add(wait).After(deadline) {
				return nil, &ResumeError{SessionID: s.info.SessionID, Attempts: rs.attempts, Elapsed: s.clk.Since(rs.start), Last: last}
			}
			s.log.Debug("waiting before the next resume attempt", "attempt", rs.attempts, "retryIn", wait)
			if !s.sleep(wait) {
				return nil, s.ctx.Err()
			}
			rs.backoff = min(rs.backoff*2, resumeBackoffMax)
		}
		rs.pause = true
		rs.attempts++
		if s.ctx.Err() != nil {
			return nil, s.ctx.Err()
		}
		ctx, cancel := context.WithTimeout(s.ctx, apiCallTimeout)
		info, err := s.cfg.API.ResumeSession(ctx, s.info.SessionID)
		cancel()
		if err == nil {
			if info.TokenValue == "" {
				return nil, &SessionEndedError{SessionID: s.info.SessionID,
					Detail: "ResumeSession returned no token: the session timed out or was terminated"}
			}
			if info.StreamURL == "" {
				info.StreamURL = s.info.StreamURL
			}
			s.info.TokenValue, s.info.StreamURL = info.TokenValue, info.StreamURL
			c, derr := s.dial(info)
			if derr == nil {
				s.log.Info("data channel resumed", "attempt", rs.attempts, "after", s.clk.Since(rs.start).Round(time.Millisecond))
				return c, nil
			}
			// A failed dial gets a new ResumeSession, never a reused token.
			err = derr
			if errors.Is(derr, ErrInsecureStreamURL) || IsPermanent(derr) {
				return nil, derr
			}
		} else {
			var ae *APIError
			switch {
			case IsPermanent(err):
				return nil, err
			case errors.As(err, &ae) && ae.Kind == KindSessionGone:
				return nil, &SessionEndedError{SessionID: s.info.SessionID, Detail: ae.Error()}
			case errors.As(err, &ae) && (ae.Kind == KindAccessDenied || ae.Kind == KindInvalidRequest):
				return nil, err
			case refusedCredentials(err):
				// The service refused the credentials: invalidate, re-mint
				// once and retry at once; a second refusal is final.
				if credRetried || !s.invalidateCredentials() {
					return nil, err
				}
				credRetried = true
				rs.pause = false
				last = err
				s.log.Info("credentials refused on resume; refreshing them", "err", err)
				continue
			}
		}
		last = err
		s.log.Debug("resume attempt failed", "attempt", rs.attempts, "err", err)
	}
}

// sleep waits d on the session clock; false if the session ended meanwhile.
func (s *Session) sleep(d time.Duration) bool {
	t := s.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-s.ctx.Done():
		return false
	}
}

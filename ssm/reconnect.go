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
	for {
		if err == nil {
			err = s.runLeg(c)
		}
		if s.isEnded() {
			return
		}
		s.log.Info("data channel lost; resuming", "reason", err)
		if c, err = s.resume(); err != nil {
			s.fail(err)
			return
		}
		s.reconnects.Add(1)
	}
}

// runLeg makes c the current leg and blocks until it dies.
func (s *Session) runLeg(c *wsConn) error {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		c.close(true)
		c.start()
		return c.wait()
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
	c.start()
	s.wake()
	err := c.wait()
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	s.mu.Unlock()
	return err
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
func (s *Session) resume() (*wsConn, error) {
	start := s.clk.Now()
	deadline := start.Add(s.cfg.ResumeBudget)
	backoff := resumeBackoffMin
	credRetried := false
	var last error
	for attempt := 1; ; attempt++ {
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
				s.log.Info("data channel resumed", "attempt", attempt, "after", s.clk.Since(start).Round(time.Millisecond))
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
				// once and retry once; a second refusal is final.
				if credRetried || !s.invalidateCredentials() {
					return nil, err
				}
				credRetried = true
				last = err
				s.log.Info("credentials refused on resume; refreshing them", "err", err)
				continue
			}
		}
		last = err
		wait := backoff/2 + rand.N(backoff/2+1)
		if s.clk.Now().Add(wait).After(deadline) {
			return nil, &ResumeError{SessionID: s.info.SessionID, Attempts: attempt, Elapsed: s.clk.Since(start), Last: last}
		}
		s.log.Debug("resume attempt failed", "attempt", attempt, "err", err, "retryIn", wait)
		if !s.sleep(wait) {
			return nil, s.ctx.Err()
		}
		backoff = min(backoff*2, resumeBackoffMax)
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

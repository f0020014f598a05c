package ssm

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// resumer supplies a session's legs: the first one from StartSession's
// StreamUrl and token, and after a leg died, a new one through
// ResumeSession, with backoff and jitter within the resume budget
// (docs/protocol.md 10.3). Each leg hands its frames to in and writes from
// out; the resumer itself touches no stream state. It runs on the session's
// supervisor goroutine only.
type resumer struct {
	cfg  Config
	api  API
	clk  clock.Clock
	log  *slog.Logger
	ctx  context.Context // the session's: done when the session ends
	info SessionInfo     // the latest StreamUrl and token
	urls streamURLPolicy // which StreamUrls may be dialled (docs/protocol.md 3.1)
	// transport: the SDK client's TLS settings and proxy, for every dial.
	transport dialTransport
	in        legHandler
	out       legOutbox
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

// open dials the StreamUrl from StartSession, retrying the same token
// briefly, as the plugin does.
func (r *resumer) open() (*leg, error) {
	attempts := 1 + firstOpenRetries
	var err error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			if !r.sleep(time.Duration(i) * 300 * time.Millisecond) {
				return nil, r.ctx.Err()
			}
		}
		var l *leg
		if l, err = r.dial(); err == nil {
			return l, nil
		}
		var de *DialError
		if !errors.As(err, &de) {
			return nil, err
		}
	}
	return nil, err
}

// dial opens a leg to the latest StreamUrl with the latest token.
func (r *resumer) dial() (*leg, error) {
	ctx, cancel := context.WithTimeout(r.ctx, apiCallTimeout)
	defer cancel()
	ws, bc, err := dialChannel(ctx, r.info.StreamURL, r.info.TokenValue, dialConfig{
		ClientID: r.cfg.ClientID, ClientVersion: r.cfg.ClientVersion,
		Sign: r.cfg.SignDial, Credentials: r.cfg.AWS.Credentials, Region: r.cfg.AWS.Region,
		Transport: r.transport, Timeout: apiCallTimeout,
	})
	if err != nil {
		return nil, err
	}
	return newLeg(ws, bc, r.in, r.out, legConfig{pingInterval: r.cfg.PingInterval, readTimeout: r.cfg.ReadTimeout,
		clock: r.clk, log: r.log, tracer: r.cfg.Trace, coalesce: r.cfg.readCoalesce()}), nil
}

// resume calls ResumeSession and dials the StreamUrl and token it returns,
// retrying with capped exponential backoff and jitter for up to the resume
// budget (docs/protocol.md 10.3). Terminal answers end it at once.
func (r *resumer) resume(rs *resumeState) (*leg, error) {
	deadline := rs.start.Add(r.cfg.ResumeBudget)
	credRetried := false
	last := rs.lastLeg
	for {
		if rs.pause {
			wait := rs.backoff/2 + time.Duration(r.cfg.Jitter()*float64(rs.backoff/2))
			if r.clk.Now().Add(wait).After(deadline) {
				return nil, &ResumeError{SessionID: r.info.SessionID, Attempts: rs.attempts, Elapsed: r.clk.Since(rs.start), Last: last}
			}
			r.log.Debug("waiting before the next resume attempt", "attempt", rs.attempts, "retryIn", wait)
			if !r.sleep(wait) {
				return nil, r.ctx.Err()
			}
			rs.backoff = min(rs.backoff*2, resumeBackoffMax)
		}
		rs.pause = true
		rs.attempts++
		if r.ctx.Err() != nil {
			return nil, r.ctx.Err()
		}
		ctx, cancel := context.WithTimeout(r.ctx, apiCallTimeout)
		info, err := r.api.ResumeSession(ctx, r.info.SessionID)
		cancel()
		r.cfg.trace(TraceResumeCall, "attempt", rs.attempts, "err", err)
		if err == nil {
			if info.TokenValue == "" {
				return nil, &SessionEndedError{SessionID: r.info.SessionID,
					Detail: "ResumeSession returned no token: the session timed out or was terminated"}
			}
			if info.StreamURL == "" {
				info.StreamURL = r.info.StreamURL
			}
			if err := r.urls.checkInfo(SessionInfo{SessionID: r.info.SessionID, StreamURL: info.StreamURL}); err != nil {
				// Final: the service itself points the token elsewhere.
				// Close calls TerminateSession.
				return nil, err
			}
			r.info.TokenValue, r.info.StreamURL = info.TokenValue, info.StreamURL
			l, derr := r.dial()
			if derr == nil {
				r.log.Info("data channel resumed", "attempt", rs.attempts, "after", r.clk.Since(rs.start).Round(time.Millisecond))
				r.cfg.trace(TraceResumed, "attempt", rs.attempts, "after", r.clk.Since(rs.start))
				return l, nil
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
				return nil, &SessionEndedError{SessionID: r.info.SessionID, Detail: ae.Error()}
			case errors.As(err, &ae) && (ae.Kind == KindAccessDenied || ae.Kind == KindInvalidRequest):
				return nil, err
			case refusedCredentials(err):
				// The service refused the credentials: invalidate, re-mint
				// once and retry at once; a second refusal is final.
				if credRetried || !invalidate(r.cfg.AWS.Credentials) {
					return nil, err
				}
				credRetried = true
				rs.pause = false
				last = err
				r.log.Info("credentials refused on resume; refreshing them", "err", err)
				continue
			}
		}
		last = err
		r.log.Debug("resume attempt failed", "attempt", rs.attempts, "err", err)
	}
}

// sleep waits d on the session clock; false if the session ended meanwhile.
func (r *resumer) sleep(d time.Duration) bool {
	t := r.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-r.ctx.Done():
		return false
	}
}

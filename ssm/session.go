package ssm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Session is one Session Manager port session: an io.ReadWriteCloser over the
// data channel that survives reconnects.
//
// The session owns the stream state (sender, receiver, delivery ring, acks,
// handshake); each websocket is a leg (leg.go) that it replaces on every
// reconnect (reconnect.go). Frames from a leg are dispatched in dispatch.go.
type Session struct {
	cfg  Config
	api  API
	log  *slog.Logger
	clk  clock.Clock
	info SessionInfo // the latest StartSession/ResumeSession answer

	send  *sender
	recv  *receiver
	deliv *delivery
	acks  *acks
	out   *outbox
	hs    *handshake
	legs  *resumer
	prog  *progress

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervisor has stopped
	wg     sync.WaitGroup

	mu          sync.Mutex
	leg         *leg
	endErr      error // why the session ended; nil for a normal end
	ended       bool
	peerClosed  bool   // channel_closed received
	closeReason string // channel_closed Output
	closing     bool   // Close in progress
	// stopping is our own reason to end the session, set before we
	// terminate it (a silent agent, progress.go), so that the
	// channel_closed our TerminateSession provokes ends it with this.
	stopping error
	// terminating: the TerminateSession flag (Close) or API call
	// (noProgress) is out; the session is ending, so a leg lost now is not
	// resumed.
	terminating atomic.Bool

	legDied       time.Time // when the last leg died (supervisor only)
	reconnects    atomic.Int64
	invalidFrames atomic.Int64
	// oversizeWarned: the one warning about oversize payloads is out.
	oversizeWarned atomic.Bool
	bytesOut       atomic.Int64
}

// Start calls StartSession, opens the data channel and completes the
// handshake. It returns when data can flow, or with the reason it cannot.
// Zero fields of cfg take their defaults; Verify's errors come back before
// any network call.
func Start(ctx context.Context, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Verify(); err != nil {
		return nil, err
	}
	urls, err := newStreamURLPolicy(cfg.AWS)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	api := NewAPI(cfg.AWS)
	var info SessionInfo
	err = withCredentialRetry(ctx, cfg.AWS.Credentials, cfg.Log, func(ctx context.Context) (err error) {
		callCtx, cancel := context.WithTimeout(ctx, apiCallTimeout)
		defer cancel()
		info, err = api.StartSession(callCtx, StartInput{
			Target: cfg.Target, DocumentName: cfg.DocumentName, Parameters: cfg.Parameters, Reason: cfg.Reason,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := urls.checkInfo(info); err != nil {
		// The session exists on the service's side: end it there rather
		// than leave it to the idle timeout (docs/protocol.md 3.1).
		cfg.Log.Warn("refusing the StreamUrl; terminating the session", "err", err)
		terminate(api, cfg, info.SessionID)
		return nil, err
	}
	s := newSession(cfg, api, info, urls)
	s.log.Info("session started", "target", cfg.Target, "document", cfg.DocumentName)
	cfg.trace(TraceSessionStart, "session", info.SessionID, "target", cfg.Target, "document", cfg.DocumentName)
	s.wg.Add(3)
	go s.supervise()
	go s.drainer()
	go func() {
		defer s.wg.Done()
		s.prog.watch(s.ctx, s.hs.ready, s.noProgress)
	}()

	timer := s.clk.NewTimer(cfg.HandshakeTimeout)
	defer timer.Stop()
	select {
	case <-s.hs.ready:
		return s, nil
	case <-s.done:
		err := s.Err()
		if err == nil {
			_, reason := s.ClosedByPeer()
			err = &HandshakeError{SessionID: info.SessionID, Reason: reason}
		}
		s.wg.Wait()
		return nil, err
	case <-timer.C():
		s.finish(&HandshakeError{SessionID: info.SessionID, Timeout: cfg.HandshakeTimeout})
	case <-ctx.Done():
		s.finish(ctx.Err())
	}
	err = s.Err()
	s.terminateAPI()
	s.wg.Wait()
	return nil, err
}

func newSession(cfg Config, api API, info SessionInfo, urls streamURLPolicy) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	log := cfg.Log.With("session", info.SessionID)
	s := &Session{
		cfg: cfg, api: api, log: log, clk: cfg.Clock, info: info,
		send:  newSender(cfg.Stream, cfg.Clock, wire.TypeInputStreamData),
		deliv: newDelivery(cfg.DeliveryBuffer),
		acks:  &acks{clk: cfg.Clock},
		hs:    newHandshake(info.SessionID, cfg.ClientVersion, cfg.DocumentName, cfg.PortForwarding, log),
		ctx:   ctx, cancel: cancel,
		done: make(chan struct{}),
	}
	s.out = newOutbox(s.acks, s.send)
	s.prog = newProgress(cfg.Clock, cfg.NoProgressTimeout)
	s.send.onBusy = s.prog.setBusy
	s.recv = newReceiver(receiverLimits{messages: cfg.MaxOutOfOrder, bytes: cfg.MaxOutOfOrderBytes}, s.deliver)
	s.legs = &resumer{cfg: cfg, api: api, clk: cfg.Clock, log: log, ctx: ctx, info: info, urls: urls,
		transport: sdkDialTransport(cfg.AWS.HTTPClient, cfg.TLSConfig), in: s, out: s.out}
	return s
}

// drainer hands messages the receiver holds to the delivery ring whenever
// the local reader made room; the websocket reader never waits for it.
func (s *Session) drainer() {
	defer s.wg.Done()
	for {
		select {
		case <-s.deliv.room:
			s.recv.drain()
		case <-s.ctx.Done():
			return
		}
	}
}

// ID is the SessionId.
func (s *Session) ID() string { return s.info.SessionID }

// AgentVersion is the version the agent reported in its HandshakeRequest.
func (s *Session) AgentVersion() string { return s.hs.agentVersion() }

// Mux reports whether the agent multiplexes this session with smux
// (docs/protocol.md 11.1): the SessionType named LocalPortForwarding and the
// agent is newer than 3.0.196.0, the plugin's rule (a malformed version
// means basic mode). Valid once Start returned.
func (s *Session) Mux() bool {
	return s.hs.localPortForwarding.Load() && wire.VersionGreater(s.AgentVersion(), MuxMinAgentVersion)
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended: nil while running and after a normal end
// (channel_closed or Close).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endErr
}

// ClosedByPeer reports whether the service ended the session with
// channel_closed, and the reason it gave (often empty).
func (s *Session) ClosedByPeer() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peerClosed, s.closeReason
}

// Read returns the agent's Output bytes in order. It returns io.EOF after the
// service closed the channel and every byte received before was read.
func (s *Session) Read(p []byte) (int, error) { return s.deliv.Read(p) }

// WriteTo copies the agent's Output to w until the service closes the
// channel (returning nil) or the session fails. io.Copy uses it: it writes
// straight from the receive buffer, batching whatever has arrived.
func (s *Session) WriteTo(w io.Writer) (int64, error) { return s.deliv.WriteTo(w) }

// Write sends p as Output, cut into messages of at most wire.MaxPayload
// bytes. It blocks while the send window is full (back-pressure); during a
// reconnect the data is queued, never dropped. Nothing is sent before the
// handshake completed: the agent would discard it (docs/protocol.md 7.2).
func (s *Session) Write(p []byte) (int, error) {
	select {
	case <-s.hs.ready:
	case <-s.done:
		return 0, s.writeErr()
	}
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), wire.MaxPayload)]
		if err := s.send.enqueue(s.ctx, wire.PayloadOutput, chunk); err != nil {
			if s.ctx.Err() != nil || errors.Is(err, errSealed) {
				return n, s.writeErr()
			}
			return n, err
		}
		s.bytesOut.Add(int64(len(chunk)))
		s.out.wake()
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

func (s *Session) writeErr() error {
	if err := s.Err(); err != nil {
		return err
	}
	return io.ErrClosedPipe
}

// SendFlag sends a Flag message (DisconnectToPort in basic port mode) in
// order with the data written before it, waiting while the send window is
// full (docs/protocol.md 6).
func (s *Session) SendFlag(ctx context.Context, f wire.Flag) error {
	select {
	case <-s.hs.ready:
	case <-s.done:
		return s.writeErr()
	}
	if err := s.sendFlag(ctx, f); err != nil {
		if s.ctx.Err() != nil || errors.Is(err, errSealed) {
			return s.writeErr()
		}
		return err
	}
	return nil
}

// sendFlag sends a Flag message on the stream, waiting while the send
// window is full.
func (s *Session) sendFlag(ctx context.Context, f wire.Flag) error {
	if err := s.send.enqueue(ctx, wire.PayloadFlag, wire.EncodeFlag(f)); err != nil {
		return err
	}
	s.out.wake()
	return nil
}

// Drain waits until everything written so far has been acknowledged by the
// agent, the timeout passes, or the session ends. It reports whether all data
// was acknowledged.
func (s *Session) Drain(timeout time.Duration) bool {
	timer := s.clk.NewTimer(timeout)
	defer timer.Stop()
	for {
		changed := s.send.changed()
		if n, _ := s.send.pending(); n == 0 {
			return true
		}
		select {
		case <-changed:
		case <-timer.C():
			return false
		case <-s.done:
			n, _ := s.send.pending()
			return n == 0
		}
	}
}

// Close ends the session cleanly: it waits (bounded) for outstanding data to
// be acknowledged, sends the TerminateSession flag when the agent understands
// it, calls the TerminateSession API and closes the websocket normally.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.done
		s.wg.Wait()
		return nil
	}
	s.closing = true
	ended := s.ended
	peer := s.peerClosed
	s.mu.Unlock()

	// Writes racing with Close (ssh's last bytes after it closed our
	// stdout) are refused from here on: after the flag the agent would
	// discard them unacked.
	s.send.seal()
	if !ended {
		// Basic mode understands the flag from agent 2.3.722.0 on. Skip it
		// when the agent is not acking (the window may be full and the flag
		// would wait for room); the API call ends the session either way.
		if s.Drain(s.cfg.DrainTimeout) && wire.VersionGreater(s.AgentVersion(), "2.3.722.0") {
			ctx, cancel := context.WithTimeout(s.ctx, time.Second)
			s.terminating.Store(true)
			if err := s.sendFlag(ctx, wire.FlagTerminateSession); err == nil {
				s.Drain(time.Second)
			}
			cancel()
		}
	}
	if !peer {
		s.terminateAPI()
	}
	s.finish(nil)
	s.wg.Wait()
	return nil
}

// terminateAPI calls TerminateSession with credentials fetched now.
func (s *Session) terminateAPI() { terminate(s.api, s.cfg, s.info.SessionID) }

// terminate calls TerminateSession for id, bounded, with credentials
// fetched now; a failure is only logged (the service's idle timeout ends
// the session anyway).
func terminate(api API, cfg Config, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := withCredentialRetry(ctx, cfg.AWS.Credentials, cfg.Log, func(ctx context.Context) error {
		return api.TerminateSession(ctx, id)
	}); err != nil {
		cfg.Log.Warn("terminate session failed", "session", id, "err", err)
	}
}

// finish marks the session ended (once) and stops everything: err is the
// reason (nil for a normal end).
func (s *Session) finish(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.endErr = err
	l := s.leg
	s.mu.Unlock()
	s.cfg.trace(TraceSessionEnd, "err", err)
	if err != nil {
		s.log.Debug("session ending", "err", err)
	}
	s.send.close(ErrStreamClosed)
	s.deliv.close(err)
	if l != nil {
		l.close(err == nil)
	}
	s.cancel()
}

// ownReason is our own reason to end the session, if we decided to: a
// refused handshake, or the agent's silence.
func (s *Session) ownReason() error {
	if err := s.hs.refused(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

func (s *Session) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// Stats is a snapshot of a session's counters.
type Stats struct {
	SessionID     string
	Reconnects    int64
	InvalidFrames int64
	BytesIn       int64
	BytesOut      int64
	Sender        SenderStats
	Receiver      ReceiverStats
}

// Stats returns the session's counters.
func (s *Session) Stats() Stats {
	return Stats{SessionID: s.info.SessionID, Reconnects: s.reconnects.Load(), InvalidFrames: s.invalidFrames.Load(),
		BytesIn: s.deliv.received(), BytesOut: s.bytesOut.Load(), Sender: s.send.stats(), Receiver: s.recv.stats()}
}

// withCredentialRetry runs call; if the service refused the credentials
// (expired, revoked, or stale on a skewed clock) and the provider can be
// invalidated, it mints afresh and runs call once more.
func withCredentialRetry(ctx context.Context, p aws.CredentialsProvider, log *slog.Logger, call func(context.Context) error) error {
	err := call(ctx)
	if refusedCredentials(err) && invalidate(p) {
		log.Info("the service refused the credentials; retrying with fresh ones", "err", err)
		err = call(ctx)
	}
	return err
}

// refusedCredentials reports whether the service itself refused the
// credentials (expired, unknown, bad signature), as opposed to the provider
// failing to produce any.
func refusedCredentials(err error) bool {
	var ae *APIError
	var ce *CredentialsError
	return errors.As(err, &ae) && ae.Kind == KindCredentials && !errors.As(err, &ce)
}

// invalidate asks the credentials cache to mint afresh next time.
func invalidate(p aws.CredentialsProvider) bool {
	if inv, ok := p.(interface{ Invalidate() }); ok {
		inv.Invalidate()
		return true
	}
	return false
}

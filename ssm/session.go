package ssm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/uuid"
	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Document names of the AWS port documents.
const (
	DocumentSSH                    = "AWS-StartSSHSession"
	DocumentPortForwarding         = "AWS-StartPortForwardingSession"
	DocumentPortForwardingToRemote = "AWS-StartPortForwardingSessionToRemoteHost"
)

// Session defaults.
const (
	// DefaultHandshakeTimeout bounds the wait from StartSession to
	// HandshakeComplete. The plugin waits forever; the agent itself gives up
	// after 15 s without our answer.
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultResumeBudget is how long reconnecting may take before the data
	// channel is declared lost. The plugin gives up after ~3-6 s; an hourly
	// "Bye" plus a throttled or flaky network needs minutes.
	DefaultResumeBudget = 5 * time.Minute
	// DefaultDrainTimeout bounds the wait for outstanding acks on a clean end.
	DefaultDrainTimeout = 5 * time.Second
	resumeBackoffMin    = 200 * time.Millisecond
	resumeBackoffMax    = 10 * time.Second
	apiCallTimeout      = 30 * time.Second
	// firstOpenRetries: if the first dial after StartSession fails, retry the
	// same token briefly before falling back to ResumeSession (protocol.md 10.3).
	firstOpenRetries = 2
)

// processClientID is one ClientId per process, reused on every reconnect.
var processClientID = uuid.NewString()

// Config describes a session to start.
type Config struct {
	Target       string
	DocumentName string              // default AWS-StartSSHSession
	Parameters   map[string][]string // e.g. {"portNumber": {"22"}}
	Reason       string

	// API performs the SSM calls (required; see NewAPI).
	API API
	// Credentials, if set, is used to sign data-channel dials (SignDial) and
	// is invalidated once when the service rejects credentials, so the next
	// call mints fresh ones. It should be the provider the API uses.
	Credentials aws.CredentialsProvider
	Region      string
	// SignDial signs every websocket upgrade with SigV4 (off by default: the
	// token alone is accepted, see protocol.md section 14, item 6).
	SignDial  bool
	TLSConfig *tls.Config

	ClientVersion    string        // default DefaultClientVersion
	ClientID         string        // default: one per process
	HandshakeTimeout time.Duration // default DefaultHandshakeTimeout
	PingInterval     time.Duration // default DefaultPingInterval
	ReadTimeout      time.Duration // default 3 × PingInterval
	ResumeBudget     time.Duration // default DefaultResumeBudget
	DrainTimeout     time.Duration // default DefaultDrainTimeout
	Stream           StreamConfig
	MaxOutOfOrder    int
	DeliveryBuffer   int

	Clock clock.Clock
	Log   *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.DocumentName == "" {
		c.DocumentName = DocumentSSH
	}
	if c.ClientVersion == "" {
		c.ClientVersion = DefaultClientVersion
	}
	if c.ClientID == "" {
		c.ClientID = processClientID
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 3 * c.PingInterval
	}
	if c.ResumeBudget <= 0 {
		c.ResumeBudget = DefaultResumeBudget
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	c.Clock = clock.Or(c.Clock)
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Session is one Session Manager port session: an io.ReadWriteCloser over the
// data channel that survives reconnects.
type Session struct {
	cfg  Config
	log  *slog.Logger
	clk  clock.Clock
	info SessionInfo // the latest StartSession/ResumeSession answer

	send   *sender
	recv   *receiver
	deliv  *delivery
	acks   ackQueue
	recent recentAckRing
	kick   chan struct{}

	ready        chan struct{} // closed at HandshakeComplete
	readyOnce    sync.Once
	pendingHS    *wire.HandshakeRequest // set by delivery, answered after the ack is queued
	agentVersion atomic.Value           // string
	properties   map[string]string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervisor has stopped
	wg     sync.WaitGroup

	mu          sync.Mutex
	conn        *wsConn
	endErr      error // why the session ended; nil for a normal end
	ended       bool
	peerClosed  bool   // channel_closed received
	closeReason string // channel_closed Output
	closing     bool   // Close in progress: no reconnects
	refusal     error  // we refused the handshake; the end's reason

	legDied       time.Time // when the last leg died (supervisor only)
	reconnects    atomic.Int64
	invalidFrames atomic.Int64
	bytesOut      atomic.Int64
}

// Start calls StartSession, opens the data channel and completes the
// handshake. It returns when data can flow, or with the reason it cannot.
func Start(ctx context.Context, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	if cfg.API == nil {
		return nil, errors.New("ssm: Config.API is required")
	}
	start := func() (SessionInfo, error) {
		callCtx, cancel := context.WithTimeout(ctx, apiCallTimeout)
		defer cancel()
		return cfg.API.StartSession(callCtx, StartInput{
			Target: cfg.Target, DocumentName: cfg.DocumentName, Parameters: cfg.Parameters, Reason: cfg.Reason,
		})
	}
	info, err := start()
	if refusedCredentials(err) && invalidate(cfg.Credentials) {
		// Credentials from a shared cache may have been revoked or be stale
		// on a skewed clock: mint new ones and try once more.
		cfg.Log.Info("StartSession refused the credentials; retrying with fresh ones", "err", err)
		info, err = start()
	}
	if err != nil {
		return nil, err
	}
	s := newSession(cfg, info)
	s.log.Info("session started", "target", cfg.Target, "document", cfg.DocumentName)
	s.wg.Add(2)
	go s.supervise()
	go s.drainer()

	timer := s.clk.NewTimer(cfg.HandshakeTimeout)
	defer timer.Stop()
	select {
	case <-s.ready:
		return s, nil
	case <-s.done:
		err := s.Err()
		if err == nil {
			err = &HandshakeError{SessionID: info.SessionID, Reason: s.closeReasonText()}
		}
		s.wg.Wait()
		return nil, err
	case <-timer.C():
		s.fail(&HandshakeError{SessionID: info.SessionID, Timeout: cfg.HandshakeTimeout})
	case <-ctx.Done():
		s.fail(ctx.Err())
	}
	err = s.Err()
	s.terminateAPI()
	s.wg.Wait()
	return nil, err
}

func newSession(cfg Config, info SessionInfo) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		cfg: cfg, log: cfg.Log.With("session", info.SessionID), clk: cfg.Clock, info: info,
		send:  newSender(cfg.Stream, cfg.Clock, wire.TypeInputStreamData),
		deliv: newDelivery(cfg.DeliveryBuffer),
		kick:  make(chan struct{}, 1),
		ready: make(chan struct{}),
		ctx:   ctx, cancel: cancel,
		done: make(chan struct{}),
	}
	s.agentVersion.Store("")
	s.recv = newReceiver(cfg.MaxOutOfOrder, s.deliver)
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
func (s *Session) AgentVersion() string { return s.agentVersion.Load().(string) }

// Properties are the session properties from the HandshakeRequest.
func (s *Session) Properties() map[string]string { return s.properties }

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

func (s *Session) closeReasonText() string {
	_, r := s.ClosedByPeer()
	return r
}

// Read returns the agent's Output bytes in order. It returns io.EOF after the
// service closed the channel and every byte received before was read.
func (s *Session) Read(p []byte) (int, error) { return s.deliv.Read(p) }

// WriteTo copies the agent's Output to w until the service closes the
// channel (returning nil) or the session fails. io.Copy uses it: it writes
// straight from the receive buffer, batching whatever has arrived.
func (s *Session) WriteTo(w io.Writer) (int64, error) { return s.deliv.WriteTo(w) }

// Write sends p as Output, cut into messages of at most wire.MaxPayload bytes.
// It blocks while the send window is full (back-pressure); during a
// reconnect the data is queued, never dropped.
func (s *Session) Write(p []byte) (int, error) {
	select {
	case <-s.ready:
	case <-s.done:
		return 0, s.writeErr()
	}
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), wire.MaxPayload)]
		if err := s.send.enqueue(s.ctx, wire.PayloadOutput, chunk); err != nil {
			if s.ctx.Err() != nil {
				return n, s.writeErr()
			}
			return n, err
		}
		s.bytesOut.Add(int64(len(chunk)))
		s.wake()
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

// SendFlag sends a Flag message (e.g. DisconnectToPort) on the stream,
// waiting while the send window is full.
func (s *Session) SendFlag(f wire.Flag) error { return s.sendFlag(s.ctx, f) }

func (s *Session) sendFlag(ctx context.Context, f wire.Flag) error {
	if err := s.send.enqueue(ctx, wire.PayloadFlag, wire.EncodeFlag(f)); err != nil {
		return err
	}
	s.wake()
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

	if !ended {
		// Basic mode understands the flag from agent 2.3.722.0 on. Skip it
		// when the agent is not acking (the window may be full and the flag
		// would wait for room); the API call ends the session either way.
		if s.Drain(s.cfg.DrainTimeout) && wire.VersionGreater(s.AgentVersion(), "2.3.722.0") {
			ctx, cancel := context.WithTimeout(s.ctx, time.Second)
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
func (s *Session) terminateAPI() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.callWithCredentialRetry(ctx, func(ctx context.Context) error {
		return s.cfg.API.TerminateSession(ctx, s.info.SessionID)
	}); err != nil {
		s.log.Warn("terminate session failed", "err", err)
	}
}

// callWithCredentialRetry runs call, and if the service rejects the
// credentials, invalidates the provider's cache and runs it once more.
func (s *Session) callWithCredentialRetry(ctx context.Context, call func(context.Context) error) error {
	err := call(ctx)
	if refusedCredentials(err) && s.invalidateCredentials() {
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

// invalidateCredentials asks the credentials cache to mint afresh next time.
func (s *Session) invalidateCredentials() bool { return invalidate(s.cfg.Credentials) }

func invalidate(p aws.CredentialsProvider) bool {
	if inv, ok := p.(interface{ Invalidate() }); ok {
		inv.Invalidate()
		return true
	}
	return false
}

// fail ends the session with err.
func (s *Session) fail(err error) { s.finish(err) }

// finish marks the session ended (once) and stops everything.
func (s *Session) finish(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.endErr = err
	c := s.conn
	s.mu.Unlock()
	if err != nil {
		s.log.Debug("session ending", "err", err)
	}
	s.send.close(ErrStreamClosed)
	s.deliv.close(err)
	if c != nil {
		c.close(err == nil)
	}
	s.cancel()
}

func (s *Session) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

func (s *Session) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
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
	s.deliv.mu.Lock()
	in := s.deliv.total
	s.deliv.mu.Unlock()
	return Stats{SessionID: s.info.SessionID, Reconnects: s.reconnects.Load(), InvalidFrames: s.invalidFrames.Load(),
		BytesIn: in, BytesOut: s.bytesOut.Load(), Sender: s.send.stats(), Receiver: s.recv.stats()}
}

// HandshakeError: the agent never completed the handshake.
type HandshakeError struct {
	SessionID string
	Timeout   time.Duration
	Reason    string
}

func (e *HandshakeError) Error() string {
	if e.Timeout > 0 {
		return fmt.Sprintf("session %s: no handshake from the agent within %s (is the agent healthy and able to reach Session Manager?)", e.SessionID, e.Timeout)
	}
	if e.Reason != "" {
		return fmt.Sprintf("session %s: the session ended during the handshake: %s", e.SessionID, e.Reason)
	}
	return fmt.Sprintf("session %s: the session ended during the handshake", e.SessionID)
}

// HandshakeRefusedError: the agent asked for something ssmproxy cannot do.
type HandshakeRefusedError struct {
	SessionID string
	What      string
}

func (e *HandshakeRefusedError) Error() string {
	return fmt.Sprintf("session %s: %s", e.SessionID, e.What)
}

// ResumeError: the data channel was lost and could not be resumed within the
// budget.
type ResumeError struct {
	SessionID string
	Attempts  int
	Elapsed   time.Duration
	Last      error
}

func (e *ResumeError) Error() string {
	return fmt.Sprintf("session %s: data channel lost; %d reconnect attempts over %s failed, last: %v",
		e.SessionID, e.Attempts, e.Elapsed.Round(time.Second), e.Last)
}

func (e *ResumeError) Unwrap() error { return e.Last }

// SessionEndedError: the service ended the session while the data channel
// was away (idle timeout, maximum duration, or terminated elsewhere).
type SessionEndedError struct {
	SessionID string
	Detail    string
}

func (e *SessionEndedError) Error() string {
	return fmt.Sprintf("session %s was ended by the service (%s)", e.SessionID, e.Detail)
}

// Package agent is the fake SSM agent of fakeaws: one Port-plugin session of
// amazon-ssm-agent, faithful to the real agent on the wire, quirks included
// (docs/protocol.md sections 4-12, docs/fakeaws.md section 5).
//
// It dials the fake Message Gateway Service over a real websocket, performs
// the agent side of the handshake, runs its own reliability layer (head-only
// retransmission, selective acks, re-acked duplicates, pause handling) and
// moves bytes between the data channel and a real TCP target.
//
// The reliability layer here is deliberately independent of the client's
// (package ssm reuses nothing of it, and it reuses only package ssm/wire: the
// frame codec, payload structs and message reader, pinned by the golden
// vectors): two implementations meeting on the wire is what makes the fake
// worth testing against.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// Real-agent constants (amazon-ssm-agent agent/session/config and
// agent/session/communicator; docs/protocol.md sections 8.4, 8.6, 9.1, 10.1).
const (
	defaultAgentVersion       = "3.3.1142.0"
	defaultHandshakeTimeout   = 15 * time.Second
	defaultPaceSleep          = time.Millisecond
	defaultBufferCap          = 100000
	defaultPingInterval       = 54 * time.Second
	defaultPongWait           = 60 * time.Second
	resendTick                = 100 * time.Millisecond // ResendSleepInterval
	drainTimeout              = 2 * time.Second        // outgoing buffer drain at session end
	reconnectAttempts         = 5
	reconnectInitialMin       = 100 * time.Millisecond
	reconnectMaxDelay         = 5 * time.Second
	readErrorsBeforeReconnect = 5
	maxReadChunk              = 1024 // StreamDataPayloadSize
)

// ErrSessionTerminated is what CreateDataChannel answers once the session is
// over ("Session is already terminated"). It ends the agent for good.
var ErrSessionTerminated = errors.New("session is already terminated")

// ErrGaveUp wraps Run's error when the agent ran out of reconnect attempts
// for its leg. The real agent then logs and stops; what MGS tells the
// client is unknown, so the caller decides (docs/fakeaws.md 4.1).
var ErrGaveUp = errors.New("agent gave up reconnecting")

// Quirks switches the real agent's quirks. The zero value is the real agent;
// each field turns one quirk off or changes it (docs/fakeaws.md section 5.3).
type Quirks struct {
	// Unpaced drops the 1 ms sleep after each message the port pump sends.
	// Payloads stay at most 1024 bytes either way.
	Unpaced bool
	// PaceSleep is the pump's sleep per message (default 1 ms).
	PaceSleep time.Duration
	// ResendAllExpired resends every expired message on each 100 ms tick
	// instead of only the oldest unacked one.
	ResendAllExpired bool
	// CheckDigest drops frames whose payload digest is wrong, without acking.
	// The real agent does not check it: corrupted payloads reach the target.
	CheckDigest bool
	// HandshakeTimeout is the wait for the HandshakeResponse (default 15 s).
	HandshakeTimeout time.Duration
	// HandshakeDelay delays the HandshakeRequest.
	HandshakeDelay time.Duration
	// NoHandshake never sends a HandshakeRequest; the session then fails
	// with the handshake timeout.
	NoHandshake bool
	// SessionTypeOverride replaces "Port" in the HandshakeRequest.
	SessionTypeOverride string
	// ExtraAction adds a second RequestedClientAction of this ActionType.
	ExtraAction string
	// NoReackDuplicates stops re-acking duplicates (seq < expected).
	NoReackDuplicates bool
	// OutgoingBufferCap bounds the unacked messages kept for retransmission
	// (default 100000). On overflow a new message is sent once and not kept.
	OutgoingBufferCap int
	// IncomingBufferCap bounds the out-of-order messages kept (default 100000).
	IncomingBufferCap int
	// PingInterval is the websocket ping period (default 54 s).
	PingInterval time.Duration
	// PongWait is the read deadline after each pong (default 60 s); the first
	// deadline is PingInterval+PongWait after the connection opens.
	PongWait time.Duration
}

// Config describes one agent session.
type Config struct {
	SessionID  string
	InstanceID string // sent as ClientInstanceId in the agent's opening frame
	// AgentVersion is reported in the HandshakeRequest (default 3.3.1142.0).
	AgentVersion string
	// Properties are the substituted document properties, sent verbatim in
	// the HandshakeRequest. The agent itself reads portNumber, host and type.
	Properties map[string]string
	// CreateDataChannel stands in for the agent's CreateDataChannel call: it
	// returns the websocket URL of the agent leg and a fresh single-use token.
	// It is called before the first dial and before every reconnect. An error
	// wrapping ErrSessionTerminated is final.
	CreateDataChannel func(ctx context.Context) (url, token string, err error)
	// TLS configures the agent leg's TLS when its URL is wss:// (nil: the
	// system roots).
	TLS *tls.Config
	// DialTarget dials "host:port" for the Port plugin (default net.Dialer).
	DialTarget func(ctx context.Context, addr string) (net.Conn, error)
	// Resolve resolves the host property (default net.DefaultResolver).
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// DenyList holds addresses the agent refuses to forward to (default: the
	// real agent's list, docs/protocol.md section 12). Loopback is not denied.
	DenyList []netip.Addr
	// DefaultHost is dialled when there is no host property (default "localhost").
	DefaultHost string
	Quirks      Quirks
	// Clock drives the protocol timers (resend tick, RTO, handshake timeout,
	// pings and pong deadline, reconnect backoff, drain). Nil is the real
	// clock. The pump's pacing sleep always uses real time: it models a
	// scheduler yield, and on a fake clock it would stall the pump.
	Clock clock.Clock
	Log   *slog.Logger // nil discards
	// Violation records a client protocol violation; severity is "error" or "warning".
	Violation func(severity, code, detail string)
	// Stats, if non-nil, is updated atomically.
	Stats *Stats

	// muxTune, a test hook, adjusts the smux server's configuration after
	// the agent's own choices (the keepalive tests shorten its timers).
	muxTune func(*smux.Config)
}

// Stats are the agent's counters, updated with sync/atomic so that a server
// can snapshot them while the session runs.
type Stats struct {
	FramesIn          atomic.Int64 // binary websocket messages received
	FramesOut         atomic.Int64 // binary websocket messages written
	DataMessagesOut   atomic.Int64 // new output_stream_data messages
	Retransmissions   atomic.Int64
	AcksIn            atomic.Int64
	AcksOut           atomic.Int64
	DuplicatesIn      atomic.Int64
	DuplicatesReacked atomic.Int64
	OutOfOrderIn      atomic.Int64
	DigestFailures    atomic.Int64
	BytesToTarget     atomic.Int64
	BytesFromTarget   atomic.Int64
	Reconnects        atomic.Int64 // successful reconnects of the agent leg
	DroppedNotReady   atomic.Int64 // in-order messages refused as "not ready" (no ack)
	// Mux mode (docs/fakeaws.md 4.3).
	MuxStreamsAccepted atomic.Int64 // smux streams accepted
	MuxDialsFailed     atomic.Int64 // streams answered with ConnectToPortError
	MuxBuffered        atomic.Int64 // client data bytes held inside the agent's smux now
	MuxBufferedPeak    atomic.Int64 // the most MuxBuffered has been
}

// DefaultDenyList is the real agent's default list of addresses it never
// forwards to (EC2 metadata, DNS, NTP and friends; docs/protocol.md section 12).
func DefaultDenyList() []netip.Addr {
	return []netip.Addr{
		netip.MustParseAddr("169.254.169.254"),
		netip.MustParseAddr("169.254.169.253"),
		netip.MustParseAddr("169.254.169.123"),
		netip.MustParseAddr("169.254.169.250"),
		netip.MustParseAddr("169.254.169.251"),
		netip.MustParseAddr("fd00:ec2::254"),
		netip.MustParseAddr("fd00:ec2::253"),
		netip.MustParseAddr("fd00:ec2::123"),
		netip.MustParseAddr("fd00:ec2::240"),
	}
}

// withDefaults fills the zero fields of cfg with the real agent's values.
func withDefaults(cfg Config) Config {
	if cfg.AgentVersion == "" {
		cfg.AgentVersion = defaultAgentVersion
	}
	if cfg.DialTarget == nil {
		var d net.Dialer
		cfg.DialTarget = func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	if cfg.Resolve == nil {
		cfg.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if cfg.DenyList == nil {
		cfg.DenyList = DefaultDenyList()
	}
	if cfg.DefaultHost == "" {
		cfg.DefaultHost = "localhost"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Violation == nil {
		cfg.Violation = func(string, string, string) {}
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	cfg.Clock = clock.Or(cfg.Clock)
	q := &cfg.Quirks
	if q.PaceSleep <= 0 {
		q.PaceSleep = defaultPaceSleep
	}
	if q.HandshakeTimeout <= 0 {
		q.HandshakeTimeout = defaultHandshakeTimeout
	}
	if q.OutgoingBufferCap <= 0 {
		q.OutgoingBufferCap = defaultBufferCap
	}
	if q.IncomingBufferCap <= 0 {
		q.IncomingBufferCap = defaultBufferCap
	}
	if q.PingInterval <= 0 {
		q.PingInterval = defaultPingInterval
	}
	if q.PongWait <= 0 {
		q.PongWait = defaultPongWait
	}
	return cfg
}

// Run runs one agent session until it ends. It returns nil when the Port
// plugin run ended successfully (target EOF under the SSH document, the
// TerminateSession flag, channel_closed from MGS) and otherwise an error whose
// text is the reason the session failed, which the caller reports to the
// client as the Output of channel_closed. It returns promptly, with every
// goroutine it started stopped, when ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	if cfg.CreateDataChannel == nil {
		return errors.New("agent: Config.CreateDataChannel is required")
	}
	s := newSession(withDefaults(cfg))
	return s.run(ctx)
}

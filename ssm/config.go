package ssm

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/uuid"

	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/internal/coalesce"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Document names of the AWS port documents.
const (
	DocumentSSH                    = "AWS-StartSSHSession"
	DocumentPortForwarding         = "AWS-StartPortForwardingSession"
	DocumentPortForwardingToRemote = "AWS-StartPortForwardingSessionToRemoteHost"
)

// IsPortForwardingDocument reports whether name (or a document ARN) is one
// of the AWS port-forwarding documents, whose Properties say type
// LocalPortForwarding: the agent multiplexes those sessions with smux
// (docs/protocol.md 11.1, 11.4), which a Session does not speak yet. A
// custom document with the same property is caught in the handshake
// instead (PortForwardingError).
func IsPortForwardingDocument(name string) bool {
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:] // arn:aws:ssm:region:account:document/NAME
	}
	return strings.EqualFold(name, DocumentPortForwarding) || strings.EqualFold(name, DocumentPortForwardingToRemote)
}

// MuxMinAgentVersion: agents newer than this multiplex LocalPortForwarding
// sessions with smux (docs/protocol.md 11.1, the plugin's rule).
const MuxMinAgentVersion = "3.0.196.0"

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
	// same token briefly before falling back to ResumeSession
	// (docs/protocol.md 10.3).
	firstOpenRetries = 2
)

// processClientID is one ClientId per process, reused on every reconnect.
var processClientID = uuid.NewString()

// Config describes a session to start. A zero field takes its default (see
// DefaultConfig); a value that cannot work is an error from Verify, never
// silently replaced.
type Config struct {
	Target       string
	DocumentName string              // default AWS-StartSSHSession
	Parameters   map[string][]string // e.g. {"portNumber": {"22"}}
	Reason       string
	// PortForwarding: the caller carries the LocalPortForwarding modes
	// (smux or basic with DisconnectToPort, docs/protocol.md 11), so the
	// handshake accepts a SessionType of that type; without it such a
	// session is refused (PortForwardingError), because its bytes would
	// be smux frames.
	PortForwarding bool
	// OnFlag, if set, is called on the receive goroutine with each Flag
	// message from the agent (ConnectToPortError in mux mode, 11.4). It
	// must not block.
	OnFlag func(wire.Flag)

	// AWS is where the session's AWS access comes from: the region, the
	// credentials provider and the endpoint resolution of the SSM client
	// (NewAPI). Every StartSession, ResumeSession, TerminateSession and
	// signed dial retrieves credentials from AWS.Credentials at that
	// moment, and a provider with an Invalidate method is invalidated once
	// when the service refuses its credentials.
	AWS aws.Config
	// SignDial signs every websocket upgrade with SigV4 (off by default: the
	// token alone is accepted, docs/protocol.md 14, item 6).
	SignDial bool
	// TLSConfig, if set, replaces the TLS settings of the websocket dial,
	// which are otherwise those of AWS.HTTPClient's transport (its CA
	// bundle), as is its proxy (docs/protocol.md 3.1).
	TLSConfig *tls.Config

	ClientVersion    string        // default DefaultClientVersion
	ClientID         string        // default: one per process
	HandshakeTimeout time.Duration // default DefaultHandshakeTimeout
	PingInterval     time.Duration // default DefaultPingInterval
	ReadTimeout      time.Duration // default 3 × PingInterval
	ResumeBudget     time.Duration // default DefaultResumeBudget
	DrainTimeout     time.Duration // default DefaultDrainTimeout
	// NoProgressTimeout ends a session whose data stays unacked while
	// nothing comes from the agent for this much connected time
	// (docs/protocol.md 9.4); default DefaultNoProgressTimeout.
	NoProgressTimeout time.Duration
	Stream            StreamConfig
	MaxOutOfOrder     int // messages; default DefaultMaxOutOfOrder
	// MaxOutOfOrderBytes bounds the payload bytes held ahead of a gap
	// (docs/protocol.md 8.6); default DefaultMaxOutOfOrderBytes. It must
	// hold at least one message of MaxStreamPayload.
	MaxOutOfOrderBytes int
	DeliveryBuffer     int // bytes; default DefaultDeliveryBuffer
	// ReadCoalesce is the least time between two websocket reads while the
	// agent's output trickles in one direction (internal/coalesce,
	// docs/bench.md); default coalesce.DefaultInterval, negative: every
	// read goes at once.
	ReadCoalesce time.Duration

	// Clock times everything the session schedules; Jitter returns a
	// number in [0, 1) for reconnect backoff. Tests inject both.
	Clock  clock.Clock
	Jitter func() float64
	Log    *slog.Logger
	// Trace, if set, records the session's protocol events for the flight
	// recorder (trace.go, docs/trace.md).
	Trace Tracer
}

// DefaultConfig is a Config with every default filled in; set Target, AWS
// and the document's Parameters.
func DefaultConfig() Config { return Config{}.withDefaults() }

// withDefaults fills zero fields.
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
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 3 * c.PingInterval
	}
	if c.ResumeBudget == 0 {
		c.ResumeBudget = DefaultResumeBudget
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.NoProgressTimeout == 0 {
		c.NoProgressTimeout = DefaultNoProgressTimeout
	}
	if c.MaxOutOfOrder == 0 {
		c.MaxOutOfOrder = DefaultMaxOutOfOrder
	}
	if c.MaxOutOfOrderBytes == 0 {
		c.MaxOutOfOrderBytes = DefaultMaxOutOfOrderBytes
	}
	if c.DeliveryBuffer == 0 {
		c.DeliveryBuffer = DefaultDeliveryBuffer
	}
	if c.ReadCoalesce == 0 {
		c.ReadCoalesce = coalesce.DefaultInterval
	}
	c.Stream = c.Stream.withDefaults()
	c.Clock = clock.Or(c.Clock)
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// readCoalesce is the legs' read moderation: off for a negative
// ReadCoalesce.
func (c Config) readCoalesce() coalesce.Config { return coalesce.Setting(c.ReadCoalesce) }

// Verify reports every setting that cannot work, before any network call.
func (c Config) Verify() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Target == "" {
		bad("no target")
	}
	if c.AWS.Region == "" {
		bad("no region in the AWS config")
	} else if !regionName.MatchString(c.AWS.Region) {
		// The region names the StreamUrl host (docs/protocol.md 3.1).
		bad("region %q is not a region name", c.AWS.Region)
	}
	if c.AWS.Credentials == nil {
		bad("no credentials provider in the AWS config")
	}
	if !wire.ValidClientVersion(c.ClientVersion) {
		// Agents key smux keepalive and mux mode on it (docs/protocol.md 11.5).
		bad("client version %q is not a four-part version above 1.2.331.0", c.ClientVersion)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"handshake timeout", c.HandshakeTimeout}, {"ping interval", c.PingInterval}, {"read timeout", c.ReadTimeout},
		{"resume budget", c.ResumeBudget}, {"drain timeout", c.DrainTimeout}, {"no-progress timeout", c.NoProgressTimeout}} {
		if d.v <= 0 {
			bad("%s %s is not positive", d.name, d.v)
		}
	}
	if c.ReadTimeout > 0 && c.ReadTimeout <= c.PingInterval {
		// The pong to our ping is what keeps an idle leg's reads alive.
		bad("read timeout %s must be longer than the ping interval %s", c.ReadTimeout, c.PingInterval)
	}
	if c.NoProgressTimeout > 0 && c.NoProgressTimeout <= c.ReadTimeout {
		// A dead leg is the read deadline's to find and a resume's to fix;
		// no progress is for a live leg with a silent agent behind it.
		bad("no-progress timeout %s must be longer than the read timeout %s", c.NoProgressTimeout, c.ReadTimeout)
	}
	if c.MaxOutOfOrder <= 0 {
		bad("out-of-order buffer of %d messages", c.MaxOutOfOrder)
	}
	if c.MaxOutOfOrderBytes < MaxStreamPayload {
		// A message the buffer could never hold would stall the stream
		// whenever it arrives ahead of a gap.
		bad("out-of-order buffer of %d bytes is smaller than the largest accepted payload (%d)", c.MaxOutOfOrderBytes, MaxStreamPayload)
	}
	if c.DeliveryBuffer < wire.MaxFrameSize {
		// The ring takes whole messages: one larger than the ring would
		// never fit and stall the stream.
		bad("delivery buffer of %d bytes is smaller than the largest message (%d)", c.DeliveryBuffer, wire.MaxFrameSize)
	}
	if err := c.readCoalesce().Verify(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Stream.Verify(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

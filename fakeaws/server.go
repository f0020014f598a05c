// Package fakeaws is a local stand-in for the AWS side of Session Manager:
// STS and the SSM JSON API (with real SigV4 verification), the Message
// Gateway Service relay over real websockets, and an SSM agent running the
// Port plugin against real TCP targets. It behaves like the real service on
// the wire, quirks included, and records the client's protocol violations.
//
// It backs tests, benchmarks and the demo; production code never imports it.
// Of the client it imports only package ssm/wire, the wire format pinned by
// the golden vectors; it hands out endpoints and credentials, never a client.
package fakeaws

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws/agent"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
	"github.com/ssmproxy/ssmproxy/internal/clock"
)

// Options configure a Server. The zero value is a realistic service on the
// real clock.
type Options struct {
	Region  string // default us-east-1
	Account string // default 123456789012
	Clock   clock.Clock
	Log     *slog.Logger

	// CredTTL, if set, is the lifetime of every credential STS issues.
	CredTTL time.Duration
	// AgentQuirks: the zero value is the real agent's behaviour.
	AgentQuirks  agent.Quirks
	AgentVersion string // default 3.3.1142.0
	// ClockSkew shifts the Date header of every API answer (STS, SSM, EC2)
	// by this much, as a server whose clock differs from the client's
	// would show it; requests are still verified against the true time
	// (docs/fakeaws.md 3.4). For ssmproxy doctor's clock check.
	ClockSkew time.Duration

	// CloseEvery closes both data-channel legs with 1000 "Bye" on this
	// period (MGS recycling; the real service does it about hourly). 0: off.
	CloseEvery time.Duration
	// CloseLegs selects which legs the schedule closes: "both" (default),
	// "client" or "agent".
	CloseLegs string
	// IdleTimeout ends sessions without stream data for this long
	// (default 20 min, the Session Manager default).
	IdleTimeout time.Duration
	// MaxSessionDuration ends sessions after this long (0: no limit).
	MaxSessionDuration time.Duration
	// TokenTTL is how long a StartSession/ResumeSession token stays usable
	// (default 60 s). Tokens are single use.
	TokenTTL time.Duration
	// RotateCellNumber gives every ResumeSession a new cell-number; with
	// StrictCellNumber the old StreamUrl is then refused.
	RotateCellNumber bool
	StrictCellNumber bool
	// RequireSignedUpgrade refuses unsigned client-leg upgrades.
	RequireSignedUpgrade bool
	// ResumeTerminatedAsError answers ResumeSession on an ended session with
	// DoesNotExistException instead of a 200 without TokenValue.
	ResumeTerminatedAsError bool
	// QueueWhileAbsent queues frames for an absent peer leg instead of
	// dropping them (the real behaviour is unknown).
	QueueWhileAbsent bool
	// QualifiedErrorTypes makes API errors use a namespace-qualified
	// __type and a "Message" key.
	QualifiedErrorTypes bool
	// The unknowns of MGS (docs/fakeaws.md 4.1, variants). The zero value
	// of each is the least forgiving variant for a client, so a test that
	// does not pick one runs against the harshest; the doc argues each.
	//
	// Publication: whether MGS tells a leg that its peer went away and came
	// back: PublicationAlways (pause_publication, then start_publication),
	// PublicationPauseOnly (never a start), PublicationNever. The zero value
	// is PublicationPauseOnly: a pause that never ends is what deadlocks a
	// client that gates on pause. bin/fakeaws's flag defaults to always.
	Publication Publication
	// PublicationHeaders: the header of those frames. The zero value is
	// HeadersMinimal (zero CreatedDate, no digest), which the real agent's
	// Validate drops, so the agent never pauses.
	PublicationHeaders PublicationHeaders
	// AgentGiveUp: what the client sees once the agent has run out of
	// reconnect attempts. The zero value is GiveUpSilent (the real agent
	// logs and stops; MGS sends nothing); GiveUpChannelClosed ends the
	// session with channel_closed.
	AgentGiveUp AgentGiveUp
	// PageSize caps every page of DescribeInstanceInformation and
	// DescribeInstances whatever MaxResults asks (both services document
	// that a page may hold fewer items); default DefaultPageSize.
	PageSize int

	// EC2 Instance Connect (docs/fakeaws.md 3.3). EICAuthorizedKeys, if
	// set, is a file the live pushed keys are written to (authorized_keys
	// format, 0600, rewritten atomically; emptied at Start); EICUser limits
	// it to the keys pushed for that OS user ("" every user). EICKeyTTL is
	// how long a key lives (default 60 s, the service's). EICAcceptECDSA
	// accepts ECDSA keys, which AWS does not document (default: refused).
	EICAuthorizedKeys string
	EICUser           string
	EICKeyTTL         time.Duration
	EICAcceptECDSA    bool

	// TLS serves every endpoint over HTTPS and the data channel over WSS,
	// with a server certificate from a CA made at Start that no system
	// trusts (docs/fakeaws.md, "TLS"). Env then names its bundle as
	// AWS_CA_BUNDLE, written to CABundleFile (default: a temporary file
	// removed by Close). TLSUntrustedMGS gives the data channel a
	// certificate from a second CA left out of the bundle: the API calls
	// verify, the websocket must not.
	TLS             bool
	CABundleFile    string
	TLSUntrustedMGS bool
}

// Publication is the pause/start_publication variant (Options.Publication).
type Publication string

const (
	PublicationAlways    Publication = "always"
	PublicationPauseOnly Publication = "pause-only"
	PublicationNever     Publication = "never"
)

// PublicationHeaders is the publication frames' header variant.
type PublicationHeaders string

const (
	HeadersMinimal PublicationHeaders = "minimal"
	HeadersFull    PublicationHeaders = "full"
)

// AgentGiveUp is what happens when the agent stops reconnecting.
type AgentGiveUp string

const (
	GiveUpSilent        AgentGiveUp = "silent"
	GiveUpChannelClosed AgentGiveUp = "channel-closed"
)

// Verify reports options the fake cannot run with.
func (o Options) Verify() error {
	switch o.Publication {
	case "", PublicationAlways, PublicationPauseOnly, PublicationNever:
	default:
		return fmt.Errorf("fakeaws: publication %q: want always, pause-only or never", o.Publication)
	}
	switch o.PublicationHeaders {
	case "", HeadersMinimal, HeadersFull:
	default:
		return fmt.Errorf("fakeaws: publication headers %q: want full or minimal", o.PublicationHeaders)
	}
	switch o.AgentGiveUp {
	case "", GiveUpSilent, GiveUpChannelClosed:
	default:
		return fmt.Errorf("fakeaws: agent give-up %q: want silent or channel-closed", o.AgentGiveUp)
	}
	switch o.CloseLegs {
	case "", "both", "client", "agent":
	default:
		return fmt.Errorf("fakeaws: close legs %q: want both, client or agent", o.CloseLegs)
	}
	if !o.TLS && (o.TLSUntrustedMGS || o.CABundleFile != "") {
		return errors.New("fakeaws: TLSUntrustedMGS and CABundleFile need TLS")
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Account == "" {
		o.Account = "123456789012"
	}
	o.Clock = clock.Or(o.Clock)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.AgentVersion == "" {
		o.AgentVersion = "3.3.1142.0"
	}
	if o.CloseLegs == "" {
		o.CloseLegs = "both"
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 20 * time.Minute
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = 60 * time.Second
	}
	if o.Publication == "" {
		o.Publication = PublicationPauseOnly
	}
	if o.PublicationHeaders == "" {
		o.PublicationHeaders = HeadersMinimal
	}
	if o.AgentGiveUp == "" {
		o.AgentGiveUp = GiveUpSilent
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.EICKeyTTL <= 0 {
		o.EICKeyTTL = DefaultEICKeyTTL
	}
	return o
}

// Server is a running fake.
type Server struct {
	opts  Options
	clk   clock.Clock
	log   *slog.Logger
	IAM   *iam.Store
	stats *stats

	apiLn, mgsLn net.Listener
	tls          *fakeTLS // Options.TLS
	caFile       string   // where the CA bundle was written
	ownCAFile    bool     // a temporary file, removed by Close
	apiSrv       *http.Server
	mgsSrv       *http.Server

	mu        sync.Mutex
	targets   map[string]*Target
	documents map[string]*Document
	sessions  map[string]*session
	faults    *faultEngine
	apiFaults []apiFault
	upFault   upgradeFault
	legDrops  int
	closed    bool
	eic       eicKeys

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Target is an instance the fake knows.
type Target struct {
	ID        string
	Connected bool
	// AgentVersion overrides Options.AgentVersion for this target.
	AgentVersion string
	// PortMap maps a portNumber to a host:port the agent dials instead of
	// 127.0.0.1:portNumber, so harness-owned listeners can play port 22.
	PortMap map[string]string
	// Quirks, if non-nil, replaces Options.AgentQuirks for this target.
	Quirks *agent.Quirks
	// Resolve, if set, resolves remote "host" parameters for this target.
	Resolve func(ctx context.Context, host string) ([]string, error)

	// What DescribeInstanceInformation and DescribeInstances report
	// (inventory.go, ec2api.go); Connected is the ping status (Online or
	// ConnectionLost). Name is the Name tag of an EC2 instance and the
	// managed-instance Name of an mi- node.
	Name       string
	Tags       map[string]string
	PrivateIP  string
	PrivateDNS string
	// NotManaged is an EC2 instance Systems Manager does not know (no
	// agent, or no instance profile): DescribeInstances lists it,
	// DescribeInstanceInformation does not (an InstanceIds filter naming it
	// is InvalidInstanceId), StartSession answers TargetNotConnected.
	NotManaged bool
}

// New creates a fake; call Start to listen.
func New(o Options) *Server {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts: o, clk: o.Clock, log: o.Log,
		IAM: iam.NewStore(iam.Options{Region: o.Region, Account: o.Account, Clock: o.Clock, CredTTL: o.CredTTL,
			QualifiedErrorTypes: o.QualifiedErrorTypes}),
		stats:     newStats(),
		targets:   make(map[string]*Target),
		documents: defaultDocuments(),
		sessions:  make(map[string]*session),
		faults:    newFaultEngine(),
		ctx:       ctx, cancel: cancel,
	}
	return s
}

// Start listens on apiAddr (STS, SSM and the admin API) and on a second
// loopback port for MGS. An empty apiAddr means 127.0.0.1:0.
func (s *Server) Start(apiAddr string) error {
	if err := s.opts.Verify(); err != nil {
		return err
	}
	if apiAddr == "" {
		apiAddr = "127.0.0.1:0"
	}
	if err := s.startEIC(); err != nil {
		return err
	}
	if err := s.startTLS(); err != nil {
		return err
	}
	var err error
	if s.apiLn, err = net.Listen("tcp", apiAddr); err != nil {
		return fmt.Errorf("listen %s: %w", apiAddr, err)
	}
	host, _, _ := net.SplitHostPort(s.apiLn.Addr().String())
	if s.mgsLn, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
		s.apiLn.Close()
		return fmt.Errorf("listen for MGS: %w", err)
	}
	s.mgsLn = noDelayListener{s.mgsLn}
	if s.tls != nil {
		s.apiLn = tls.NewListener(s.apiLn, s.tls.server)
		s.mgsLn = tls.NewListener(s.mgsLn, s.tls.mgsConfig())
	}
	api := http.NewServeMux()
	api.HandleFunc("/_fake/", s.handleAdmin)
	api.HandleFunc("/", s.handleAPI)
	var apiHandler http.Handler = api
	if skew := s.opts.ClockSkew; skew != 0 {
		apiHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			api.ServeHTTP(&skewedDate{ResponseWriter: w, skew: skew}, r)
		})
	}
	// Handshake failures (a client without the -tls bundle) are the
	// fake's debug log, not stderr noise.
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.apiSrv = &http.Server{Handler: apiHandler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	mgs := http.NewServeMux()
	mgs.HandleFunc("/v1/data-channel/", s.handleDataChannel)
	s.mgsSrv = &http.Server{Handler: mgs, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); _ = s.apiSrv.Serve(s.apiLn) }()
	go func() { defer s.wg.Done(); _ = s.mgsSrv.Serve(flushListener{s.mgsLn}) }()
	return nil
}

// Close terminates every session, stops the agents and the listeners.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.terminate("fake shutting down")
	}
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.apiSrv.Shutdown(ctx)
	_ = s.mgsSrv.Shutdown(ctx)
	for _, ss := range sessions {
		ss.wait()
	}
	s.wg.Wait()
	if s.ownCAFile {
		_ = os.Remove(s.caFile)
	}
	return nil
}

// URL is the base URL of the STS/SSM/admin listener.
func (s *Server) URL() string {
	if s.tls != nil {
		return "https://" + s.apiLn.Addr().String()
	}
	return "http://" + s.apiLn.Addr().String()
}

// MGSURL is the base URL of the data-channel listener.
func (s *Server) MGSURL() string {
	if s.tls != nil {
		return "wss://" + s.mgsLn.Addr().String()
	}
	return "ws://" + s.mgsLn.Addr().String()
}

// CABundle is the path of the TLS mode's CA bundle (PEM), "" without TLS.
func (s *Server) CABundle() string { return s.caFile }

// startTLS makes the CA and certificates of the TLS mode and writes the
// bundle.
func (s *Server) startTLS() error {
	if !s.opts.TLS {
		return nil
	}
	t, err := newFakeTLS(s.opts.TLSUntrustedMGS)
	if err != nil {
		return err
	}
	path := s.opts.CABundleFile
	if path == "" {
		f, err := os.CreateTemp("", "fakeaws-ca-*.pem")
		if err != nil {
			return fmt.Errorf("fakeaws: CA bundle: %w", err)
		}
		f.Close()
		path, s.ownCAFile = f.Name(), true
	}
	// A certificate, not a secret: readable like any CA bundle.
	if err := os.WriteFile(path, t.caPEM, 0o644); err != nil {
		return fmt.Errorf("fakeaws: CA bundle: %w", err)
	}
	s.tls, s.caFile = t, path
	return nil
}

// Region is the fake's region.
func (s *Server) Region() string { return s.opts.Region }

// AddTarget registers (or replaces) an instance.
func (s *Server) AddTarget(t Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tc := t
	tc.Tags = maps.Clone(t.Tags)
	s.targets[t.ID] = &tc
}

// SetTargetConnected marks an instance's agent online or offline.
func (s *Server) SetTargetConnected(id string, connected bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.targets[id]; ok {
		t.Connected = connected
	}
}

// Env returns the environment a child process needs to use the fake with
// the given credential: region, the SSM, STS and EC2 Instance Connect
// endpoints, and keys.
func (s *Server) Env(c iam.Credential) []string {
	env := []string{
		"AWS_REGION=" + s.opts.Region,
		"AWS_DEFAULT_REGION=" + s.opts.Region,
		"AWS_ENDPOINT_URL_SSM=" + s.URL(),
		"AWS_ENDPOINT_URL_STS=" + s.URL(),
		"AWS_ENDPOINT_URL_EC2=" + s.URL(),
		"AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT=" + s.URL(),
		"AWS_ACCESS_KEY_ID=" + c.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + c.SecretAccessKey,
		"FAKEAWS_URL=" + s.URL(),
	}
	if s.caFile != "" {
		env = append(env, "AWS_CA_BUNDLE="+s.caFile)
	}
	if c.SessionToken != "" {
		env = append(env, "AWS_SESSION_TOKEN="+c.SessionToken)
	}
	return env
}

// Sessions returns the ids of all sessions, oldest first.
func (s *Server) Sessions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return s.sessions[ids[i]].created.Before(s.sessions[ids[j]].created) })
	return ids
}

func (s *Server) session(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

// TerminateSession ends a session from the service side (as an
// administrator's TerminateSession would).
func (s *Server) TerminateSession(id, reason string) error {
	ss := s.session(id)
	if ss == nil {
		return errors.New("no such session")
	}
	ss.terminate(reason)
	return nil
}

// CloseLeg closes one leg ("client" or "agent") of a session with a close
// frame (code, text), or abruptly without one when code is 0.
func (s *Server) CloseLeg(id, which string, code int, text string) error {
	ss := s.session(id)
	if ss == nil {
		return errors.New("no such session")
	}
	return ss.closeLeg(which, code, text)
}

// WaitSessionEnded waits until session id reaches Terminated.
func (s *Server) WaitSessionEnded(id string, timeout time.Duration) bool {
	ss := s.session(id)
	if ss == nil {
		return false
	}
	select {
	case <-ss.ended:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (s *Server) instanceARN(id string) string {
	if strings.HasPrefix(id, "mi-") {
		return fmt.Sprintf("arn:aws:ssm:%s:%s:managed-instance/%s", s.opts.Region, s.opts.Account, id)
	}
	return fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", s.opts.Region, s.opts.Account, id)
}

func (s *Server) documentARN(name string) string {
	return fmt.Sprintf("arn:aws:ssm:%s::document/%s", s.opts.Region, name)
}

func (s *Server) sessionARN(id string) string {
	return fmt.Sprintf("arn:aws:ssm:%s:%s:session/%s", s.opts.Region, s.opts.Account, id)
}

// skewedDate replaces the Date header of an answer, whoever set it, with
// the time of a clock skew ahead (Options.ClockSkew).
type skewedDate struct {
	http.ResponseWriter
	skew  time.Duration
	wrote bool
}

func (w *skewedDate) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		w.Header().Set("Date", time.Now().Add(w.skew).UTC().Format(http.TimeFormat))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *skewedDate) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

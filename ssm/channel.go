package ssm

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/ssmproxy/ssmproxy/internal/coalesce"
	"github.com/ssmproxy/ssmproxy/internal/redact"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// Websocket constants (docs/protocol.md sections 3 and 9.1).
const (
	// DefaultPingInterval: proxies, NLBs and VPC endpoints drop flows idle
	// for about 60 s, so ping well inside that.
	DefaultPingInterval = 20 * time.Second
	// defaultWriteTimeout bounds one batch of socket writes.
	defaultWriteTimeout = 30 * time.Second
	// DefaultClientVersion mirrors a current official plugin release. It must
	// be a four-part version above 1.2.331.0: agents key smux keepalive and
	// mux mode on it (docs/protocol.md section 11.5).
	DefaultClientVersion = "1.2.804.0"
	// maxWebsocketMessage bounds what the websocket reader accepts; frames
	// above wire.MaxFrameSize are dropped by the decoder, larger messages end the
	// connection (which is then resumed).
	maxWebsocketMessage = 1 << 20
	// batchLimit bounds the bytes buffered before a socket write.
	batchLimit = 256 << 10
	// batchDirect: a write at least this large goes straight to the
	// socket when nothing is buffered (a leg's batches of websocket messages).
	batchDirect = 16 << 10
	// writeBatchFrames bounds how many frames one pass of the writer takes
	// from the stream before it looks at acks again.
	writeBatchFrames = 256
)

// ErrInsecureStreamURL is returned for a ws:// StreamUrl whose host is not a
// loopback address.
var ErrInsecureStreamURL = errors.New("refusing an unencrypted ws:// stream URL for a non-loopback host")

// checkStreamURL enforces wss:// except for loopback hosts (the local fake).
func checkStreamURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("stream URL: %w", err)
	}
	switch u.Scheme {
	case "wss":
		return u, nil
	case "ws":
		host := u.Hostname()
		if host == "localhost" {
			return u, nil
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return u, nil
		}
		return nil, fmt.Errorf("%w: %s", ErrInsecureStreamURL, redactURL(raw))
	default:
		return nil, fmt.Errorf("stream URL scheme %q is not wss", u.Scheme)
	}
}

// presigned reports whether a StreamUrl already carries a SigV4 query
// signature, in which case the dial must not be signed again (docs/protocol.md 3.3).
func presigned(u *url.URL) bool {
	for k := range u.Query() {
		switch strings.ToLower(k) {
		case "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
			"x-amz-signedheaders", "x-amz-signature", "x-amz-security-token":
			return true
		}
	}
	return false
}

// batchConn coalesces the writes of many small websocket messages into few
// syscalls: once batching is on, Write buffers and Flush writes (a write of
// batchDirect bytes or more with nothing buffered goes straight out). Before
// that (TLS and HTTP upgrade handshakes, proxy CONNECT) writes go straight
// through. Its reads, once a leg sets reads, wait while the agent's output
// trickles in (internal/coalesce): one wakeup then reads several messages.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	buf      []byte
	batching bool
	// reads and lw are set by newLeg (setReads) before the leg's reader
	// starts and used by that reader only.
	reads *coalesce.Reads
	lw    *lowWater
	// readTimeout, set by newLeg before the reader starts: each socket
	// read must see data within it (a half-open socket dies of it). Set
	// per read here rather than per message by the leg: one read takes
	// many messages.
	readTimeout time.Duration
}

// setReads turns on read coalescing (before the reader starts).
func (b *batchConn) setReads(r *coalesce.Reads, mark int) {
	b.reads = r
	b.lw = newLowWater(b.Conn, mark)
}

func (b *batchConn) Read(p []byte) (int, error) {
	if b.reads != nil {
		b.reads.Wait()
	}
	if b.readTimeout > 0 {
		_ = b.Conn.SetReadDeadline(time.Now().Add(b.readTimeout))
	}
	if b.reads == nil {
		return b.Conn.Read(p)
	}
	var n int
	var err error
	if b.lw != nil {
		n, err = b.lw.read(p)
	} else {
		n, err = b.Conn.Read(p)
	}
	b.reads.Done(n)
	if b.reads.Trickling() {
		// Silence the socket until a large read's worth has arrived: the
		// next read comes after the coalescing wait anyway.
		b.lw.raise()
	}
	return n, err
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.batching || (len(b.buf) == 0 && len(p) >= batchDirect) {
		// Nothing buffered to keep in order, and a write this large is
		// a batch already: copying it first would only cost.
		return b.Conn.Write(p)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= batchLimit {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (b *batchConn) startBatching() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// Flush writes everything buffered.
func (b *batchConn) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	// Keep the buffer's storage: re-slicing it forward would give away its
	// capacity and reallocate on every batch.
	buf := b.buf
	b.buf = b.buf[:0]
	for len(buf) > 0 {
		k, err := b.Conn.Write(buf)
		if err != nil {
			return err
		}
		buf = buf[k:]
	}
	return nil
}

// dialConfig is what dialing a data channel needs.
type dialConfig struct {
	ClientID      string
	ClientVersion string
	Sign          bool
	Credentials   aws.CredentialsProvider
	Region        string
	Transport     dialTransport
	Timeout       time.Duration
}

// dialTransport is what the websocket dial shares with the SDK's HTTP
// client (docs/protocol.md 3.1): its TLS settings, where a custom CA bundle
// (AWS_CA_BUNDLE, the profile's ca_bundle) lands as RootCAs, and its proxy
// function (HTTPS_PROXY / NO_PROXY as the SDK's transport resolves them).
// A corporate TLS-inspecting proxy that the API calls get through must not
// stop the data channel.
type dialTransport struct {
	TLS   *tls.Config                           // nil: Go's defaults (system roots)
	Proxy func(*http.Request) (*url.URL, error) // nil: no proxy
}

// sdkDialTransport takes the TLS settings and proxy function of the SDK
// client's transport, looking through wrappers that expose the client they
// wrap (Unwrap, as internal/awsconf's loopback rule does). explicit, if
// set (Config.TLSConfig), replaces the TLS settings. A client whose
// transport cannot be seen (a custom one) gives Go's TLS defaults and the
// environment's proxy.
func sdkDialTransport(c aws.HTTPClient, explicit *tls.Config) dialTransport {
	dt := dialTransport{Proxy: http.ProxyFromEnvironment}
	if tr := transportOf(c); tr != nil {
		dt.Proxy = tr.Proxy
		if tr.TLSClientConfig != nil {
			dt.TLS = tr.TLSClientConfig.Clone()
		}
	}
	if explicit != nil {
		dt.TLS = explicit.Clone()
	}
	if dt.TLS != nil {
		// The HTTP transport may offer h2; a websocket upgrade is
		// HTTP/1.1 only.
		dt.TLS.NextProtos = nil
	}
	return dt
}

// transportOf finds the *http.Transport behind an SDK HTTP client, or nil.
func transportOf(c aws.HTTPClient) *http.Transport {
	for range 8 {
		switch v := c.(type) {
		case nil:
			return nil
		case interface{ GetTransport() *http.Transport }: // awshttp.BuildableClient
			return v.GetTransport()
		case *http.Client:
			if v.Transport == nil {
				tr, _ := http.DefaultTransport.(*http.Transport)
				return tr
			}
			tr, _ := v.Transport.(*http.Transport)
			return tr
		case interface{ Unwrap() aws.HTTPClient }:
			c = v.Unwrap()
		default:
			return nil
		}
	}
	return nil
}

// dialChannel opens the websocket to a StreamUrl and sends the opening frame
// (docs/protocol.md 3.2). Nothing acknowledges that frame.
func dialChannel(ctx context.Context, streamURL, token string, dc dialConfig) (*websocket.Conn, *batchConn, error) {
	u, err := checkStreamURL(streamURL)
	if err != nil {
		return nil, nil, err
	}
	var bc *batchConn
	nd := &net.Dialer{Timeout: dc.Timeout, KeepAlive: 15 * time.Second}
	d := websocket.Dialer{
		Proxy:            dc.Transport.Proxy,
		HandshakeTimeout: dc.Timeout,
		ReadBufferSize:   64 << 10,
		WriteBufferSize:  16 << 10,
		TLSClientConfig:  dc.Transport.TLS,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			bc = &batchConn{Conn: c}
			return bc, nil
		},
	}
	hdr := http.Header{}
	if dc.Sign && !presigned(u) {
		if err := signDial(ctx, u, hdr, dc); err != nil {
			return nil, nil, err
		}
	}
	ws, resp, err := d.DialContext(ctx, u.String(), hdr)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, nil, &DialError{Status: resp.StatusCode, Body: redact.String(strings.TrimSpace(string(body))), Err: err}
		}
		return nil, nil, &DialError{Err: err}
	}
	ws.SetReadLimit(maxWebsocketMessage)
	open := wire.OpenDataChannel{
		MessageSchemaVersion: wire.MessageSchemaVersion,
		RequestID:            uuid.NewString(),
		TokenValue:           token,
		ClientID:             dc.ClientID,
		ClientVersion:        dc.ClientVersion,
	}
	b, err := json.Marshal(open)
	if err != nil {
		ws.Close()
		return nil, nil, err
	}
	_ = ws.SetWriteDeadline(time.Now().Add(dc.Timeout))
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		ws.Close()
		return nil, nil, &DialError{Err: fmt.Errorf("send opening frame: %w", err)}
	}
	if bc != nil {
		bc.startBatching()
	}
	return ws, bc, nil
}

// signDial adds a SigV4 signature (service ssmmessages) to the upgrade
// request, with credentials retrieved now, never a copy from session start.
func signDial(ctx context.Context, u *url.URL, hdr http.Header, dc dialConfig) error {
	if dc.Credentials == nil {
		return errors.New("sign data channel: no credentials provider")
	}
	creds, err := dc.Credentials.Retrieve(ctx)
	if err != nil {
		return &CredentialsError{Err: err}
	}
	hu := *u
	switch hu.Scheme {
	case "wss":
		hu.Scheme = "https"
	case "ws":
		hu.Scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hu.String(), nil)
	if err != nil {
		return err
	}
	empty := sha256.Sum256(nil)
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(empty[:]), "ssmmessages", dc.Region, time.Now()); err != nil {
		return fmt.Errorf("sign data channel: %w", err)
	}
	for _, k := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		if v := req.Header.Get(k); v != "" {
			hdr.Set(k, v)
		}
	}
	return nil
}

// DialError is a failure to open the data channel websocket.
type DialError struct {
	Status int // HTTP status of a refused upgrade, 0 if none
	Body   string
	Err    error
}

func (e *DialError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("open data channel: HTTP %d: %s", e.Status, e.Body)
	}
	return "open data channel: " + e.Err.Error()
}

func (e *DialError) Unwrap() error { return e.Err }

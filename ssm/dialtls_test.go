package ssm

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/gorilla/websocket"

	"github.com/ssmproxy/ssmproxy/internal/awsconf"
	"github.com/ssmproxy/ssmproxy/internal/testkit"
	"github.com/ssmproxy/ssmproxy/ssm/wire"
)

// tlsDataChannel is a data channel endpoint over TLS with a certificate no
// system trusts; it reports the token of each opening frame.
func tlsDataChannel(t *testing.T) (wssURL, caFile string, tokens chan string) {
	t.Helper()
	tokens = make(chan string, 4)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var open wire.OpenDataChannel
		if json.Unmarshal(b, &open) == nil {
			tokens <- open.TokenValue
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return "wss" + strings.TrimPrefix(srv.URL, "https") + "/v1/data-channel/alice-0123", caFile, tokens
}

// connectProxy is an HTTP CONNECT proxy on loopback that counts tunnels.
func connectProxy(t *testing.T) (*url.URL, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
				if err != nil {
					_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				defer up.Close()
				n.Add(1)
				_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go func() { _, _ = io.Copy(up, c); up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}, &n
}

func staticCreds() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")
}

// dialWith opens a data channel the way the resumer does, with cfg's
// transport settings.
func dialWith(cfg aws.Config, streamURL string) error {
	c := Config{AWS: cfg}.withDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := dialChannel(ctx, streamURL, "the-token", dialConfig{ClientID: c.ClientID, ClientVersion: c.ClientVersion,
		Transport: sdkDialTransport(cfg.HTTPClient, c.TLSConfig), Timeout: 10 * time.Second})
	if err == nil {
		ws.Close()
	}
	return err
}

// TestDialUsesSDKTLSAndProxy: the websocket dial trusts the CA bundle the
// SDK was configured with (AWS_CA_BUNDLE) and goes through the proxy of the
// SDK's transport (docs/protocol.md 3.1).
func TestDialUsesSDKTLSAndProxy(t *testing.T) {
	streamURL, caFile, tokens := tlsDataChannel(t)
	testkit.CleanAWSEnv(t, "http://127.0.0.1:1", "AWS_CA_BUNDLE")

	// Without the bundle: the server's certificate is unknown.
	cfg, err := awsconf.Load(context.Background(), awsconf.Options{Credentials: staticCreds()})
	if err != nil {
		t.Fatal(err)
	}
	err = dialWith(cfg, streamURL)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("dial without the CA bundle: %v, want an unknown-authority error", err)
	}

	// With AWS_CA_BUNDLE, as the SDK's own calls would use it.
	t.Setenv("AWS_CA_BUNDLE", caFile)
	cfg, err = awsconf.Load(context.Background(), awsconf.Options{Credentials: staticCreds()})
	if err != nil {
		t.Fatal(err)
	}
	if err := dialWith(cfg, streamURL); err != nil {
		t.Fatalf("dial with AWS_CA_BUNDLE: %v", err)
	}
	if tok := <-tokens; tok != "the-token" {
		t.Fatalf("opening frame token %q", tok)
	}

	// The SDK transport's proxy carries the websocket too. (An
	// environment proxy is never used for loopback, so the test sets the
	// transport's proxy the way a custom HTTP client would.)
	proxyURL, tunnels := connectProxy(t)
	cfg, err = config.LoadDefaultConfig(context.Background(), config.WithCredentialsProvider(staticCreds()),
		config.WithHTTPClient(awsconf.HTTPClient().WithTransportOptions(func(tr *http.Transport) { tr.Proxy = http.ProxyURL(proxyURL) })))
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPClient = awsconf.LoopbackOnlyHTTP(cfg.HTTPClient)
	if err := dialWith(cfg, streamURL); err != nil {
		t.Fatalf("dial through the SDK's proxy: %v", err)
	}
	<-tokens
	if n := tunnels.Load(); n != 1 {
		t.Fatalf("CONNECT tunnels through the proxy: %d, want 1", n)
	}
}

package ssm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/ssm"
)

// tlsConfig is the SDK configuration a user with the fake's CA bundle in
// AWS_CA_BUNDLE gets (the bundle read by the SDK's own loader); without
// bundle, the system roots.
func tlsConfig(t *testing.T, ts *fakeaws.TestServer, bundle string) aws.Config {
	t.Helper()
	opts := []func(*config.LoadOptions) error{
		config.WithRegion(ts.Region()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(ts.User.AccessKeyID, ts.User.SecretAccessKey, "")),
	}
	if bundle != "" {
		pem, err := os.ReadFile(bundle)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, config.WithCustomCABundle(bytes.NewReader(pem)))
	}
	cfg, err := config.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BaseEndpoint = aws.String(ts.URL())
	return cfg
}

func startTLS(t *testing.T, ts *fakeaws.TestServer, bundle, port string) (*ssm.Session, error) {
	t.Helper()
	s, err := ssm.Start(fakeaws.Ctx(t), ssm.Config{
		Target: fakeaws.DefaultInstance, Parameters: map[string][]string{"portNumber": {port}},
		AWS: tlsConfig(t, ts, bundle), HandshakeTimeout: 20 * time.Second,
		ResumeBudget: 2 * time.Second,
	})
	if s != nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// TestFakeTLS: the fake's TLS mode (docs/fakeaws.md, "TLS") serves HTTPS
// and WSS with a certificate from its own CA. With the bundle a session
// runs over both (the API calls through the SDK, the data channel through
// ssm's dial, which takes its roots from the SDK's transport); without it
// the first API call fails verification; and when only the data channel's
// certificate comes from a CA outside the bundle, the API calls succeed
// and the websocket refuses it: both verify.
func TestFakeTLS(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{TLS: true})
	if !strings.HasPrefix(ts.URL(), "https://") || !strings.HasPrefix(ts.MGSURL(), "wss://") || ts.CABundle() == "" {
		t.Fatalf("TLS mode serves %s and %s, bundle %q", ts.URL(), ts.MGSURL(), ts.CABundle())
	}
	port := fakeaws.Listen(t, fakeaws.Echo)

	s, err := startTLS(t, ts, ts.CABundle(), port)
	if err != nil {
		t.Fatalf("with the CA bundle: %v", err)
	}
	data := make([]byte, 256<<10)
	rand.Read(data)
	go func() { _, _ = s.Write(data) }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo over wss: %v (equal %v)", err, bytes.Equal(got, data))
	}
	if v := ts.ViolationCodes("warning"); v != "" {
		t.Errorf("violations: %s", v)
	}

	if _, err := startTLS(t, ts, "", port); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA bundle: %v, want a certificate verification failure", err)
	}

	untrusted := fakeaws.StartTest(t, fakeaws.Options{TLS: true, TLSUntrustedMGS: true})
	_, err = startTLS(t, untrusted, untrusted.CABundle(), port)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("data channel certificate outside the bundle: %v, want a certificate verification failure", err)
	}
	if n := untrusted.Stats().API["StartSession"]["200"]; n != 1 {
		t.Errorf("StartSession answered 200 %d times, want 1: the API calls must have verified", n)
	}
}

package ssm_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/ssm"
)

// fakeAWS points cfg's SSM client at the fake (which hands out endpoints
// and credentials, never a client).
func fakeAWS(ts *fakeaws.TestServer, cfg aws.Config) aws.Config {
	cfg.BaseEndpoint = aws.String(ts.URL())
	return cfg
}

func startEcho(t *testing.T, ts *fakeaws.TestServer, port string) *ssm.Session {
	t.Helper()
	cfg := ts.AWSConfig(nil)
	s, err := ssm.Start(fakeaws.Ctx(t), ssm.Config{
		Target: fakeaws.DefaultInstance, Parameters: map[string][]string{"portNumber": {port}},
		AWS:              fakeAWS(ts, cfg),
		HandshakeTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEchoRoundTrip(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	port := fakeaws.Listen(t, fakeaws.Echo)
	s := startEcho(t, ts, port)
	defer s.Close()
	data := make([]byte, 300_000)
	rand.Read(data)
	go func() {
		if _, err := s.Write(data); err != nil {
			t.Error(err)
		}
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echo differs")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st := ts.Stats()
	if st.API["TerminateSession"]["200"] != 1 {
		t.Fatalf("TerminateSession calls: %v", st.API)
	}
}

func TestSinkThroughput(t *testing.T) {
	ts := fakeaws.StartTest(t, fakeaws.Options{})
	sum := make(chan [32]byte, 1)
	port := fakeaws.Listen(t, func(c net.Conn) {
		h := sha256.New()
		io.Copy(h, c)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sum <- s
	})
	s := startEcho(t, ts, port)
	data := make([]byte, 32<<20)
	rand.Read(data)
	start := time.Now()
	if _, err := s.Write(data); err != nil {
		t.Fatal(err)
	}
	if !s.Drain(30 * time.Second) {
		t.Fatal("not drained")
	}
	el := time.Since(start)
	t.Logf("upload 32 MiB in %s: %.1f MB/s; %+v", el, float64(len(data))/el.Seconds()/1e6, s.Stats().Sender)
	s.Close()
	select {
	case got := <-sum:
		if got != sha256.Sum256(data) {
			t.Fatal("checksum differs")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("target never saw EOF")
	}
}

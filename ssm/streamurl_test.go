package ssm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ssmproxy/ssmproxy/internal/awsconf"
	"github.com/ssmproxy/ssmproxy/internal/testkit"
)

// TestStreamURLPolicy: the StreamUrl must be the service's own for the
// region and partition, or the endpoint override's host, with ws:// only
// for a loopback override (docs/protocol.md 3.1).
func TestStreamURLPolicy(t *testing.T) {
	const path = "/v1/data-channel/alice-0123?role=publish_subscribe&cell-number=AAA"
	cases := []struct {
		name, region, override, url string
		ok                          bool
	}{
		{"aws service host", "us-east-1", "", "wss://ssmmessages.us-east-1.amazonaws.com" + path, true},
		{"explicit port 443", "eu-west-1", "", "wss://ssmmessages.eu-west-1.amazonaws.com:443" + path, true},
		{"host in upper case", "eu-west-1", "", "wss://SSMMESSAGES.eu-west-1.AmazonAWS.com" + path, true},
		{"cn partition", "cn-north-1", "", "wss://ssmmessages.cn-north-1.amazonaws.com.cn" + path, true},
		{"cn region with the aws suffix", "cn-north-1", "", "wss://ssmmessages.cn-north-1.amazonaws.com" + path, false},
		{"gov partition", "us-gov-west-1", "", "wss://ssmmessages.us-gov-west-1.amazonaws.com" + path, true},
		{"iso partition", "us-iso-east-1", "", "wss://ssmmessages.us-iso-east-1.c2s.ic.gov" + path, true},
		{"foreign host", "us-east-1", "", "wss://ssmmessages.evil.example" + path, false},
		{"suffix spliced into a foreign domain", "us-east-1", "", "wss://ssmmessages.us-east-1.amazonaws.com.evil.example" + path, false},
		{"wrong region", "us-east-1", "", "wss://ssmmessages.eu-west-1.amazonaws.com" + path, false},
		{"other service", "us-east-1", "", "wss://ssm.us-east-1.amazonaws.com" + path, false},
		{"other port", "us-east-1", "", "wss://ssmmessages.us-east-1.amazonaws.com:8443" + path, false},
		{"ws to the service host", "us-east-1", "", "ws://ssmmessages.us-east-1.amazonaws.com" + path, false},
		{"https scheme", "us-east-1", "", "https://ssmmessages.us-east-1.amazonaws.com" + path, false},
		{"http scheme", "us-east-1", "", "http://ssmmessages.us-east-1.amazonaws.com" + path, false},
		{"user info", "us-east-1", "", "wss://user:pw@ssmmessages.us-east-1.amazonaws.com" + path, false},
		{"not a URL", "us-east-1", "", "wss://ssmmessages.us-east-1.amazonaws.com/\x7f", false},
		{"loopback without an override", "us-east-1", "", "ws://127.0.0.1:9000" + path, false},
		{"loopback override, ws", "us-east-1", "http://127.0.0.1:4566", "ws://127.0.0.1:9000" + path, true},
		{"localhost override, ws", "us-east-1", "http://localhost:4566", "ws://LOCALHOST:9000" + path, true},
		{"loopback override, other loopback name", "us-east-1", "http://localhost:4566", "ws://127.0.0.1:9000" + path, true},
		{"loopback override, non-loopback host", "us-east-1", "http://127.0.0.1:4566", "ws://192.168.1.10:9000" + path, false},
		{"override match, wss any port", "us-east-1", "https://ssm.internal.example", "wss://ssm.internal.example:8443" + path, true},
		{"override mismatch", "us-east-1", "https://ssm.internal.example", "wss://evil.example" + path, false},
		{"override, ws to a non-loopback host", "us-east-1", "https://ssm.internal.example", "ws://ssm.internal.example" + path, false},
		{"override, service host still fine", "us-east-1", "https://vpce-1.ssm.us-east-1.vpce.amazonaws.com", "wss://ssmmessages.us-east-1.amazonaws.com" + path, true},
		{"override, user info", "us-east-1", "http://127.0.0.1:4566", "ws://u@127.0.0.1:9000" + path, false},
		{"override, http scheme", "us-east-1", "http://127.0.0.1:4566", "http://127.0.0.1:9000" + path, false},
	}
	for _, c := range cases {
		cfg := aws.Config{Region: c.region}
		if c.override != "" {
			cfg.BaseEndpoint = aws.String(c.override)
		}
		p, err := newStreamURLPolicy(cfg)
		if err != nil {
			t.Fatalf("%s: policy: %v", c.name, err)
		}
		err = p.checkInfo(SessionInfo{SessionID: "alice-0123", StreamURL: c.url})
		if (err == nil) != c.ok {
			t.Errorf("%s: %s: err %v, want ok=%v", c.name, c.url, err, c.ok)
			continue
		}
		var se *StreamURLError
		if err != nil && (!errors.As(err, &se) || se.SessionID != "alice-0123") {
			t.Errorf("%s: %v is not a StreamURLError naming the session", c.name, err)
		}
		if err != nil && (strings.Contains(err.Error(), "cell-number") || strings.Contains(err.Error(), "pw")) {
			t.Errorf("%s: the error shows the URL's query or user info: %v", c.name, err)
		}
	}
	if _, err := newStreamURLPolicy(aws.Config{Region: "us-east-1.evil.example"}); err == nil {
		t.Error("a region with dots was accepted")
	}
}

// TestStreamURLOverrideFromEnvironment: AWS_ENDPOINT_URL_SSM, as loaded
// into ConfigSources, is the override the policy follows.
func TestStreamURLOverrideFromEnvironment(t *testing.T) {
	testkit.CleanAWSEnv(t, "http://127.0.0.1:1")
	t.Setenv("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:4566")
	cfg, err := awsconf.Load(context.Background(), awsconf.Options{
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	p, err := newStreamURLPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.check("ws://127.0.0.1:9000/v1/data-channel/x"); err != nil {
		t.Fatalf("loopback StreamUrl with a loopback AWS_ENDPOINT_URL_SSM: %v", err)
	}
	if err := p.check("ws://10.0.0.1:9000/v1/data-channel/x"); err == nil {
		t.Fatal("a StreamUrl on another host was accepted")
	}
}

// Package awsconf loads the aws.Config ssmproxy's clients share, with the
// project's transport rules: plain HTTP only to loopback endpoints (the
// local fake), TLS verified everywhere else, endpoint overrides per client.
package awsconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Options select the profile and region.
type Options struct {
	Profile string
	Region  string
	// Credentials, if set, replaces the SDK's default credential chain.
	Credentials aws.CredentialsProvider
}

// ErrNoRegion is returned when no region is configured anywhere.
var ErrNoRegion = errors.New("no AWS region configured: use --region, AWS_REGION or the profile's region")

// Load resolves the shared configuration (environment, ~/.aws/config,
// profile) the way the AWS CLI does. Endpoint overrides such as
// AWS_ENDPOINT_URL_SSM reach only the clients built from the result with
// NewFromConfig, one service at a time.
func Load(ctx context.Context, o Options) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if o.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(o.Profile))
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(o.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, ErrNoRegion
	}
	cfg.HTTPClient = LoopbackOnlyHTTP(cfg.HTTPClient)
	return cfg, nil
}

// LoopbackOnlyHTTP wraps an HTTP client so that it refuses plain HTTP to
// anything but loopback: a session token sent in the clear would be a
// leaked secret. TLS verification stays the SDK's default (on).
func LoopbackOnlyHTTP(next aws.HTTPClient) aws.HTTPClient {
	if next == nil {
		next = awshttp.NewBuildableClient()
	}
	return loopbackOnlyHTTP{next}
}

type loopbackOnlyHTTP struct{ next aws.HTTPClient }

func (c loopbackOnlyHTTP) Do(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !IsLoopbackHost(req.URL.Hostname()) {
		return nil, fmt.Errorf("refusing plain-HTTP endpoint %s: only loopback endpoints may skip TLS", req.URL.Host)
	}
	return c.next.Do(req)
}

// IsLoopbackHost reports whether host is localhost or a loopback address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ScrubEnv returns env without the AWS credential variables, for child
// processes that must use a profile rather than inherited keys.
func ScrubEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN":
			continue
		}
		out = append(out, kv)
	}
	return out
}

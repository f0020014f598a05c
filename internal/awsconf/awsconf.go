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
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Options select the profile and region.
type Options struct {
	Profile string
	Region  string
	// Credentials, if set, replaces the SDK's default credential chain and
	// is the loaded config's provider as it is: not wrapped in the SDK's
	// CredentialsCache, which has no refresh window (it would serve
	// credentials to their last second) and would hide Invalidate. The
	// broker caches and refreshes itself.
	Credentials aws.CredentialsProvider
}

// ErrNoRegion is returned when no region is configured anywhere.
var ErrNoRegion = errors.New("no AWS region configured: use --region, AWS_REGION or the profile's region")

// Load resolves the shared configuration (environment, ~/.aws/config,
// profile) the way the AWS CLI does. Endpoint overrides such as
// AWS_ENDPOINT_URL_SSM reach only the clients built from the result with
// NewFromConfig, one service at a time.
func Load(ctx context.Context, o Options) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{config.WithHTTPClient(HTTPClient())}
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
	if o.Credentials != nil {
		cfg.Credentials = o.Credentials
	}
	return cfg, nil
}

// HTTPClient is the SDK's buildable HTTP client with the loopback rule built
// into its transport. Pass it to config.LoadDefaultConfig: a custom CA bundle
// (AWS_CA_BUNDLE, the profile's ca_bundle) can only be added to a
// *BuildableClient, and the clients the SDK builds internally while it
// resolves credentials (SSO, the STS of a role chain, ...) keep the rule.
// Wrap the loaded cfg.HTTPClient with LoopbackOnlyHTTP afterwards as well.
func HTTPClient() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		next := tr.Proxy
		// The transport consults Proxy for every request, with its URL.
		tr.Proxy = func(req *http.Request) (*url.URL, error) {
			if err := checkScheme(req.URL); err != nil {
				return nil, err
			}
			if next == nil {
				return nil, nil
			}
			return next(req)
		}
	})
}

// LoopbackOnlyHTTP wraps an HTTP client so that it refuses plain HTTP to
// anything but loopback: a session token sent in the clear would be a
// leaked secret. TLS verification stays the SDK's default (on). Apply it to
// a loaded configuration's client, never pass the result to
// config.WithHTTPClient (the SDK could then not add a custom CA bundle).
func LoopbackOnlyHTTP(next aws.HTTPClient) aws.HTTPClient {
	if next == nil {
		next = HTTPClient()
	}
	if _, ok := next.(loopbackOnlyHTTP); ok {
		return next
	}
	return loopbackOnlyHTTP{next}
}

type loopbackOnlyHTTP struct{ next aws.HTTPClient }

func (c loopbackOnlyHTTP) Do(req *http.Request) (*http.Response, error) {
	if err := checkScheme(req.URL); err != nil {
		return nil, err
	}
	return c.next.Do(req)
}

// Unwrap returns the wrapped client: the websocket dial takes its TLS
// settings and proxy from the SDK transport behind it.
func (c loopbackOnlyHTTP) Unwrap() aws.HTTPClient { return c.next }

func checkScheme(u *url.URL) error {
	if u.Scheme == "http" && !IsLoopbackHost(u.Hostname()) {
		return fmt.Errorf("refusing plain-HTTP endpoint %s: only loopback endpoints may skip TLS", u.Host)
	}
	return nil
}

// IsLoopbackHost reports whether host is localhost or a loopback address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

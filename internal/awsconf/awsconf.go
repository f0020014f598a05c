// Package awsconf loads the aws.Config ssmproxy's clients share, with the
// project's transport rules: plain HTTP only to loopback endpoints (the
// local fake) and the platform's link-local credential addresses (EC2
// instance metadata, ECS and EKS container credentials), TLS verified
// everywhere else, endpoint overrides per client.
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
	cfg, err := LoadDefaultConfig(ctx, opts...)
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
// anything but loopback and the link-local credential addresses
// (PlainHTTPAllowed): a session token sent in the clear would be a leaked
// secret. TLS verification stays the SDK's default (on). Apply it to
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
	if u.Scheme == "http" && !PlainHTTPAllowed(u.Hostname()) {
		return fmt.Errorf("refusing plain-HTTP endpoint %s: only loopback and the EC2/ECS/EKS credential addresses may skip TLS", u.Host)
	}
	return nil
}

// linkLocalCredentialHosts are the addresses at which the compute platform
// itself serves credentials over plain HTTP, as the SDK's default chain
// uses them (docs/credentials.md 3.3): the EC2 instance metadata service
// (IPv4 and its IPv6 endpoint mode), the ECS task credentials endpoint and
// the EKS Pod Identity agent (IPv4 and IPv6). They are link-local: the
// hypervisor or the node answers, nothing beyond it can be reached.
var linkLocalCredentialHosts = []net.IP{
	net.ParseIP("169.254.169.254"), // EC2 instance metadata
	net.ParseIP("fd00:ec2::254"),   // EC2 instance metadata, IPv6 endpoint mode
	net.ParseIP("169.254.170.2"),   // ECS container credentials
	net.ParseIP("169.254.170.23"),  // EKS Pod Identity
	net.ParseIP("fd00:ec2::23"),    // EKS Pod Identity, IPv6
}

// PlainHTTPAllowed reports whether an endpoint on host may be reached
// without TLS: loopback (the local fake, a container credentials agent
// named by AWS_CONTAINER_CREDENTIALS_FULL_URI, as the SDK allows) and the
// platform's link-local credential addresses, written as IP addresses.
// Everything else must use TLS: a session token sent in the clear would be
// a leaked secret.
func PlainHTTPAllowed(host string) bool {
	if IsLoopbackHost(host) {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, allowed := range linkLocalCredentialHosts {
		if ip.Equal(allowed) {
			return true
		}
	}
	return false
}

// IsLoopbackHost reports whether host is localhost or a loopback address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

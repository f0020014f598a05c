package ssm

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ssmsdk "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ssmproxy/ssmproxy/internal/awsconf"
)

// The StreamUrl policy (docs/protocol.md 3.1). StartSession and
// ResumeSession name the websocket the session token is sent to; a response
// that points it anywhere else would hand the token (and the session's
// bytes) to that host. So the URL must be the service's own:
//
//   - no endpoint override: wss://ssmmessages.<region>.<dnsSuffix>, port
//     443 or none, the suffix being the region's partition's (amazonaws.com,
//     amazonaws.com.cn, c2s.ic.gov, ...), as the SDK's own endpoint rules
//     resolve it for SSM;
//   - an endpoint override for the SSM client (AWS_ENDPOINT_URL_SSM, the
//     profile's endpoint_url or services section, a BaseEndpoint): that
//     same service URL, or the override's host (any port; for a loopback
//     override, any loopback host); ws:// only when that host is loopback
//     (the local fake).
//
// A URL with user info is refused in every case.

// StreamURLError: the service returned a StreamUrl ssmproxy will not dial.
// The session was terminated (best effort) before it was returned.
type StreamURLError struct {
	SessionID string
	// URL is the refused URL's scheme and host only: its path and query
	// carry the session's id and cell, its user info could carry a secret.
	URL    string
	Reason string
}

func (e *StreamURLError) Error() string {
	if e.URL == "" {
		return fmt.Sprintf("session %s: refusing the service's StreamUrl: %s", e.SessionID, e.Reason)
	}
	return fmt.Sprintf("session %s: refusing the service's StreamUrl %s: %s", e.SessionID, e.URL, e.Reason)
}

// regionName is what a region looks like (us-east-1, cn-north-1,
// us-iso-east-1): one DNS label, so that it cannot splice a domain into
// the expected host.
var regionName = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// streamURLPolicy decides which StreamUrls a session dials.
type streamURLPolicy struct {
	// serviceHost is ssmmessages.<region>.<dnsSuffix>.
	serviceHost string
	// override is the SSM client's endpoint override, nil if none.
	override *url.URL
}

// newStreamURLPolicy derives the policy from the session's AWS config: the
// partition's DNS suffix from the SDK's endpoint rules for SSM in the
// region (ssm.<region>.<suffix>), the override from the SSM client's
// resolved options, which see the same overrides as the API client.
func newStreamURLPolicy(cfg aws.Config) (streamURLPolicy, error) {
	var p streamURLPolicy
	if !regionName.MatchString(cfg.Region) {
		return p, fmt.Errorf("region %q is not a region name", cfg.Region)
	}
	ep, err := ssmsdk.NewDefaultEndpointResolverV2().ResolveEndpoint(context.Background(),
		ssmsdk.EndpointParameters{Region: aws.String(cfg.Region)})
	if err != nil {
		return p, fmt.Errorf("resolve the SSM endpoint of region %s: %w", cfg.Region, err)
	}
	suffix, ok := strings.CutPrefix(strings.ToLower(ep.URI.Hostname()), "ssm."+cfg.Region+".")
	if !ok || suffix == "" {
		return p, fmt.Errorf("the SSM endpoint of region %s is %s, not ssm.%s.<domain>", cfg.Region, ep.URI.Host, cfg.Region)
	}
	p.serviceHost = "ssmmessages." + cfg.Region + "." + suffix
	if base := ssmsdk.NewFromConfig(cfg).Options().BaseEndpoint; base != nil && *base != "" {
		u, err := url.Parse(*base)
		if err != nil || u.Hostname() == "" {
			return p, fmt.Errorf("the SSM endpoint override is not a URL with a host")
		}
		p.override = u
	}
	return p, nil
}

// check returns nil for a StreamUrl the session may dial, or a
// *StreamURLError (SessionID unset) saying why not.
func (p streamURLPolicy) check(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// Not echoed: it did not parse, so it may hold anything.
		return &StreamURLError{Reason: "it is not a URL"}
	}
	refuse := func(format string, args ...any) error {
		return &StreamURLError{URL: u.Scheme + "://" + u.Host, Reason: fmt.Sprintf(format, args...)}
	}
	if u.User != nil {
		return &StreamURLError{URL: u.Scheme + "://" + u.Host, Reason: "it carries user info"}
	}
	host := strings.ToLower(u.Hostname())
	if u.Scheme == "wss" && host == p.serviceHost && (u.Port() == "" || u.Port() == "443") {
		return nil
	}
	if p.override == nil {
		switch {
		case u.Scheme != "wss":
			return refuse("the scheme must be wss")
		case host != p.serviceHost:
			return refuse("the host must be %s, the service's own for the region", p.serviceHost)
		default:
			return refuse("the port must be 443")
		}
	}
	want := strings.ToLower(p.override.Hostname())
	// On loopback the names are one machine: a fake started on
	// localhost:4566 advertises 127.0.0.1.
	sameLoopback := awsconf.IsLoopbackHost(want) && awsconf.IsLoopbackHost(host)
	if host != want && !sameLoopback {
		return refuse("the host must be %s (the service's own) or %s (the endpoint override)", p.serviceHost, want)
	}
	switch u.Scheme {
	case "wss":
		return nil
	case "ws":
		if awsconf.IsLoopbackHost(want) {
			return nil
		}
		return refuse("ws:// is allowed only when the endpoint override is a loopback address")
	}
	return refuse("the scheme must be wss")
}

// checkInfo applies the policy to a StartSession or ResumeSession
// answer; a refusal names the session.
func (p streamURLPolicy) checkInfo(info SessionInfo) error {
	if err := p.check(info.StreamURL); err != nil {
		e := err.(*StreamURLError)
		e.SessionID = info.SessionID
		return e
	}
	return nil
}

package awsconf

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestPlainHTTPRule (docs/credentials.md 3.3): plain HTTP is allowed to
// loopback and to the platform's link-local credential addresses (EC2
// instance metadata, ECS and EKS container credentials, IPv4 and IPv6), and
// to nothing else, not even their neighbours or names that merely look
// alike.
func TestPlainHTTPRule(t *testing.T) {
	for _, c := range []struct {
		host  string
		allow bool
	}{
		{"127.0.0.1", true},
		{"127.8.9.10", true},
		{"::1", true},
		{"localhost", true},
		{"LocalHost", true},
		{"169.254.169.254", true},        // EC2 instance metadata
		{"fd00:ec2::254", true},          // its IPv6 endpoint mode
		{"FD00:EC2:0:0::254", true},      // the same address written otherwise
		{"::ffff:169.254.169.254", true}, // the same IPv4 address, mapped
		{"169.254.170.2", true},          // ECS
		{"169.254.170.23", true},         // EKS Pod Identity
		{"fd00:ec2::23", true},           // EKS Pod Identity, IPv6

		{"169.254.169.253", false}, // the VPC DNS resolver, not credentials
		{"169.254.169.255", false},
		{"169.254.170.3", false},
		{"169.254.170.22", false},
		{"169.254.0.1", false},
		{"fd00:ec2::253", false},
		{"fd00:ec2::24", false},
		{"fe80::1", false},
		{"10.0.0.1", false},
		{"192.0.2.1", false},
		{"0.0.0.0", false},
		{"", false},
		{"instance-data", false}, // IMDS's DNS name: names are not checked by address
		{"169.254.169.254.nip.io", false},
		{"sts.amazonaws.com", false},
		{"localhost.example.com", false},
	} {
		if got := PlainHTTPAllowed(c.host); got != c.allow {
			t.Errorf("PlainHTTPAllowed(%q) = %v, want %v", c.host, got, c.allow)
		}
		u := &url.URL{Scheme: "http", Host: c.host}
		if strings.Contains(c.host, ":") {
			u.Host = "[" + c.host + "]:80"
		}
		if err := checkScheme(u); (err == nil) != c.allow {
			t.Errorf("checkScheme(%s) = %v, want allowed=%v", u, err, c.allow)
		}
		// TLS is never refused.
		u.Scheme = "https"
		if err := checkScheme(u); err != nil {
			t.Errorf("checkScheme(%s) = %v", u, err)
		}
	}
}

// TestPlainHTTPClientReachesMetadata: the guarded client sends a request to
// the instance metadata address on its way (here the dial is redirected to
// a local stand-in, since the address is not routable off EC2), and still
// refuses another plain-HTTP host before dialing.
func TestPlainHTTPClientReachesMetadata(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(r.Host)) }))
	defer srv.Close()
	var dialed []string
	bc := HTTPClient().WithTransportOptions(func(tr *http.Transport) {
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed = append(dialed, addr)
			return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
		}
	})
	c := LoopbackOnlyHTTP(bc)
	for _, target := range []string{"http://169.254.169.254/latest/api/token", "http://[fd00:ec2::254]/latest/api/token",
		"http://169.254.170.2/v2/credentials/x", "http://169.254.170.23/v1/credentials"} {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		resp.Body.Close()
	}
	req, _ := http.NewRequest(http.MethodGet, "http://169.254.169.253/", nil)
	if _, err := c.Do(req); err == nil || !strings.Contains(err.Error(), "refusing plain-HTTP") {
		t.Fatalf("plain HTTP to 169.254.169.253: %v", err)
	}
	if len(dialed) != 4 {
		t.Fatalf("dialed %v: the refused request must not be dialed", dialed)
	}
}

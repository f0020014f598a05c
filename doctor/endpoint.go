package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// Probe is what one HTTPS request to an endpoint showed.
type Probe struct {
	URL      string
	Status   int
	Skew     time.Duration // server Date minus local time, ±1 s (Date has whole seconds)
	HasDate  bool
	Loopback bool // plain http:// on loopback (a local fake or proxy)
	TLS      string
}

// ProbeEndpoint sends one GET to the endpoint's root: any HTTP answer
// (403 and 404 included) shows it is reachable, its TLS certificate
// verified against the system roots or $AWS_CA_BUNDLE; the Date header
// gives the server's clock. Plain http:// is refused except on loopback,
// as every ssmproxy client refuses it (docs/credentials.md 7.3).
func ProbeEndpoint(ctx context.Context, endpoint string, now func() time.Time) (Probe, error) {
	p := Probe{URL: endpoint}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return p, fmt.Errorf("%q is not an endpoint URL", endpoint)
	}
	switch u.Scheme {
	case "https":
	case "http":
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return p, fmt.Errorf("%s is plain http:// off loopback: refused", endpoint)
		}
		p.Loopback = true
	default:
		return p, fmt.Errorf("%s: scheme %q is not https", endpoint, u.Scheme)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if bundle := os.Getenv("AWS_CA_BUNDLE"); bundle != "" {
		pem, err := os.ReadFile(bundle)
		if err != nil {
			return p, fmt.Errorf("AWS_CA_BUNDLE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return p, fmt.Errorf("AWS_CA_BUNDLE %s holds no certificate", bundle)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+"/", nil)
	if err != nil {
		return p, err
	}
	sent := now()
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	got := now()
	p.Status = resp.StatusCode
	if resp.TLS != nil {
		p.TLS = tls.VersionName(resp.TLS.Version) + ", certificate verified"
	}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		p.HasDate = true
		mid := sent.Add(got.Sub(sent) / 2)
		p.Skew = d.Sub(mid.Truncate(time.Second))
	}
	return p, nil
}

package awsconf

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/ssmproxy/ssmproxy/internal/testkit"
)

// TestHTTPClientWithCABundle: LoadDefaultConfig accepts the guarded client
// when AWS_CA_BUNDLE is set (the SDK adds the bundle to it), and the loaded
// client still talks to loopback and refuses plain HTTP elsewhere, both the
// wrapped cfg.HTTPClient and the transport itself.
func TestHTTPClientWithCABundle(t *testing.T) {
	t.Setenv("AWS_CA_BUNDLE", testkit.WriteCABundle(t))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	bc := HTTPClient()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"), config.WithHTTPClient(bc))
	if err != nil {
		t.Fatalf("LoadDefaultConfig with AWS_CA_BUNDLE: %v", err)
	}
	cfg.HTTPClient = LoopbackOnlyHTTP(cfg.HTTPClient)
	for name, c := range map[string]interface {
		Do(*http.Request) (*http.Response, error)
	}{"loaded client": cfg.HTTPClient, "bare transport": bc} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: loopback request: %v", name, err)
		}
		resp.Body.Close()
		req, _ = http.NewRequest(http.MethodGet, "http://192.0.2.1/", nil)
		if _, err := c.Do(req); err == nil || !strings.Contains(err.Error(), "refusing plain-HTTP") {
			t.Fatalf("%s: plain HTTP to a remote host: %v", name, err)
		}
	}
	if _, err := Load(context.Background(), Options{Region: "us-east-1"}); err != nil {
		t.Fatalf("Load with AWS_CA_BUNDLE: %v", err)
	}
}

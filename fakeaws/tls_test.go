package fakeaws

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTLSMode: with Options.TLS the API answers over HTTPS with a
// certificate its bundle verifies and the system roots do not; the bundle
// is written where asked, named in Env, and a temporary one is removed by
// Close.
func TestTLSMode(t *testing.T) {
	get := func(url string, roots *x509.CertPool) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		resp, err := c.Get(url + "/_fake/sessions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("admin answered %s", resp.Status)
			}
		}
		return err
	}

	s := New(Options{TLS: true})
	if err := s.Start(""); err != nil {
		t.Fatal(err)
	}
	bundle := s.CABundle()
	pem, err := os.ReadFile(bundle)
	roots := x509.NewCertPool()
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("bundle %s: %v", bundle, err)
	}
	if !strings.HasPrefix(s.URL(), "https://") || !strings.HasPrefix(s.MGSURL(), "wss://") {
		t.Fatalf("URLs %s %s", s.URL(), s.MGSURL())
	}
	if err := get(s.URL(), roots); err != nil {
		t.Fatalf("with the bundle: %v", err)
	}
	if err := get(s.URL(), nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("with the system roots: %v, want a verification failure", err)
	}
	if env := s.Env(s.IAM.AddUser("alice")); !slices.Contains(env, "AWS_CA_BUNDLE="+bundle) {
		t.Fatalf("Env does not name the bundle: %v", env)
	}
	s.Close()
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Fatalf("temporary bundle left after Close: %v", err)
	}

	// A bundle where asked stays; plain mode names none.
	want := filepath.Join(t.TempDir(), "ca.pem")
	s = New(Options{TLS: true, CABundleFile: want})
	if err := s.Start(""); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(want); err != nil || s.CABundle() != want {
		t.Fatalf("bundle at %s: %v (CABundle %q)", want, err, s.CABundle())
	}
	// The TLS settings without TLS are refused, not ignored.
	for _, o := range []Options{{TLSUntrustedMGS: true}, {CABundleFile: want}} {
		if err := New(o).Start(""); err == nil || !strings.Contains(err.Error(), "need TLS") {
			t.Errorf("%+v without TLS: %v", o, err)
		}
	}
	plain := StartTest(t, Options{})
	for _, e := range plain.Env(plain.User) {
		if strings.HasPrefix(e, "AWS_CA_BUNDLE=") {
			t.Fatalf("plain mode names a bundle: %s", e)
		}
	}
}

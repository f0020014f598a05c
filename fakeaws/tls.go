package fakeaws

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// fakeTLS is what the fake's TLS mode serves with (Options.TLS,
// docs/fakeaws.md, "TLS"): a certificate authority made at start, which
// nothing trusts until a client is given its bundle, and a server
// certificate for the loopback names signed by it. Both keys live only in
// the process.
type fakeTLS struct {
	caPEM  []byte      // the bundle a client needs (AWS_CA_BUNDLE)
	server *tls.Config // for the listeners
	client *tls.Config // for the fake's own agent legs: trusts the CA only
	// mgs, when not nil, is the data channel's listener config with a
	// certificate from a second CA nobody is given (Options.TLSUntrustedMGS).
	mgs *tls.Config
}

func newFakeTLS(untrustedMGS bool) (*fakeTLS, error) {
	now := time.Now()
	ca, server, err := newAuthority("fakeaws test CA", now)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	t := &fakeTLS{
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		server: server,
		client: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}
	if untrustedMGS {
		other, mgs, err := newAuthority("fakeaws untrusted CA", now)
		if err != nil {
			return nil, err
		}
		t.mgs = mgs
		// The fake's own agent must still reach the relay.
		roots.AddCert(other)
	}
	return t, nil
}

// newAuthority makes a CA and a listener config whose certificate it
// signed.
func newAuthority(name string, now time.Time) (*x509.Certificate, *tls.Config, error) {
	ca, caKey, err := newCA(name, now)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := newLeaf(ca, caKey, now)
	if err != nil {
		return nil, nil, err
	}
	return ca, &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, nil
}

// mgsConfig is the data channel listener's config.
func (t *fakeTLS) mgsConfig() *tls.Config {
	if t.mgs != nil {
		return t.mgs
	}
	return t.server
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(name string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("fakeaws: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// newLeaf signs a server certificate for 127.0.0.1, ::1 and localhost:
// the fake listens on loopback only.
func newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	sn, err := serial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: "fakeaws"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("fakeaws: server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// noDelayListener sets TCP_NODELAY on the data channel's accepted
// connections, before TLS (if any) wraps them: the relay writes batches
// and must not wait for Nagle.
type noDelayListener struct{ net.Listener }

func (l noDelayListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return c, err
}

// agentTLS is the fake agent's TLS config for its legs; nil without TLS.
func (s *Server) agentTLS() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return s.tls.client
}

package nbd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// testPKI is a CA with a server and a client certificate, generated once
// per test binary.
type testPKI struct {
	pool           *x509.CertPool
	caDER          []byte // the CA's certificate
	server, client tls.Certificate
}

var getPKI = sync.OnceValues(func() (*testPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leaf := func(serial int64, usage x509.ExtKeyUsage) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
	}
	p := &testPKI{pool: x509.NewCertPool(), caDER: caDER}
	p.pool.AddCert(ca)
	if p.server, err = leaf(2, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.client, err = leaf(3, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, nil
})

func pki(t testing.TB) *testPKI {
	t.Helper()
	p, err := getPKI()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// serverTLS is the server's TLS configuration; clientCerts requires and
// verifies client certificates.
func serverTLS(t testing.TB, clientCerts bool) *tls.Config {
	p := pki(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
	if clientCerts {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, p.pool
	}
	return cfg
}

// startTLSServer serves one export with TLS required on a TCP loopback
// listener and returns its address.
func startTLSServer(t *testing.T, m *memBackend, cfg *tls.Config) (*Server, string) {
	t.Helper()
	srv, err := NewServer([]Export{{Name: "vol", Backend: m}}, Options{HandshakeTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ctx, l, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	return srv, l.Addr().String()
}

// startTLS sends NBD_OPT_STARTTLS, expects the ACK, and runs the client's
// TLS handshake with cert (nil: none); from then on c talks TLS.
func (c *client) startTLS(cert *tls.Certificate) error {
	c.t.Helper()
	c.sendOpt(optStartTLS, nil)
	if r := c.readOptReply(); r.opt != optStartTLS || r.typ != repAck {
		c.t.Fatalf("NBD_OPT_STARTTLS: reply %#x for option %d", r.typ, r.opt)
	}
	cfg := &tls.Config{RootCAs: pki(c.t).pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tc := tls.Client(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.nc = tc
	return nil
}

// TestStartTLS: with TLS required, every option that reveals or selects an
// export gets NBD_REP_ERR_TLS_REQD until NBD_OPT_STARTTLS; STARTTLS with
// data, or a second one, is NBD_REP_ERR_INVALID; inside TLS the export is
// served as usual.
func TestStartTLS(t *testing.T) {
	_, addr := startTLSServer(t, newMem(testSize), serverTLS(t, false))
	c := dialNet(t, "tcp", addr)
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	for _, opt := range []uint32{optGo, optInfo} {
		if _, typ := c.infoGo(opt, "vol"); typ != repErrTLSReqd {
			t.Fatalf("option %d before STARTTLS: reply %#x, want NBD_REP_ERR_TLS_REQD", opt, typ)
		}
	}
	for _, opt := range []uint32{optList, optStructuredReply} {
		c.sendOpt(opt, nil)
		if r := c.readOptReply(); r.typ != repErrTLSReqd {
			t.Fatalf("option %d before STARTTLS: reply %#x, want NBD_REP_ERR_TLS_REQD", opt, r.typ)
		}
	}
	c.sendOpt(optStartTLS, []byte{1})
	if r := c.readOptReply(); r.typ != repErrInvalid {
		t.Fatalf("NBD_OPT_STARTTLS with data: reply %#x", r.typ)
	}
	if err := c.startTLS(nil); err != nil {
		t.Fatal(err)
	}
	c.sendOpt(optStartTLS, nil)
	if r := c.readOptReply(); r.typ != repErrInvalid {
		t.Fatalf("second NBD_OPT_STARTTLS: reply %#x", r.typ)
	}
	ei, typ := c.infoGo(optGo, "vol")
	if typ != repAck || ei.size != testSize {
		t.Fatalf("NBD_OPT_GO inside TLS: reply %#x, size %d", typ, ei.size)
	}
	c.roundTrip(0)
	c.roundTrip(8192)
	// A read bigger than a TLS record.
	if code, got := c.do(cmdRead, 0, 0, 256<<10, nil); code != 0 || len(got) != 256<<10 {
		t.Fatalf("256 KiB read over TLS: error %d", code)
	}
}

// TestTLSExportNameRefused: NBD_OPT_EXPORT_NAME before STARTTLS cannot get
// an error reply, so the connection is closed; so is a plain newstyle
// client.
func TestTLSExportNameRefused(t *testing.T) {
	_, addr := startTLSServer(t, newMem(testSize), serverTLS(t, false))
	for _, flags := range []uint32{clientFlagFixedNewstyle, 0} {
		c := dialNet(t, "tcp", addr)
		c.greet(flags)
		c.sendOpt(optExportName, []byte("vol"))
		c.expectClosed()
	}
}

// TestTLSClientCertRequired: when client certificates are required, a
// client without one is refused in the TLS handshake and served nothing;
// one with a certificate from the CA is served.
func TestTLSClientCertRequired(t *testing.T) {
	srv, addr := startTLSServer(t, newMem(testSize), serverTLS(t, true))
	c := dialNet(t, "tcp", addr)
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	if err := c.startTLS(nil); err == nil {
		// TLS 1.3: the client learns of the refusal at its first read.
		c.sendOpt(optGo, infoData("vol"))
		if _, err := c.nc.Read(make([]byte, 1)); err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
	waitClients(t, srv, 0)

	c = dialNet(t, "tcp", addr)
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	if err := c.startTLS(&pki(t).client); err != nil {
		t.Fatal(err)
	}
	if _, typ := c.infoGo(optGo, "vol"); typ != repAck {
		t.Fatalf("NBD_OPT_GO with a client certificate: reply %#x", typ)
	}
	c.roundTrip(0)
}

// TestStartTLSWithoutTLS: on a plain listener (the unix socket) STARTTLS
// is NBD_REP_ERR_UNSUP and the export is served without it.
func TestStartTLSWithoutTLS(t *testing.T) {
	ts := startServer(t, []Export{{Backend: newMem(testSize)}}, Options{})
	c := dial(t, ts.sock)
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	c.sendOpt(optStartTLS, nil)
	if r := c.readOptReply(); r.typ != repErrUnsup {
		t.Fatalf("NBD_OPT_STARTTLS without TLS: reply %#x", r.typ)
	}
	if _, typ := c.infoGo(optGo, ""); typ != repAck {
		t.Fatalf("NBD_OPT_GO: reply %#x", typ)
	}
	c.roundTrip(0)
}

// TestServeTLSNeedsConfig: ServeTLS without a configuration is refused.
func TestServeTLSNeedsConfig(t *testing.T) {
	srv, err := NewServer([]Export{{Backend: newMem(4096)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := srv.ServeTLS(context.Background(), l, nil); err == nil {
		t.Fatal("ServeTLS(nil) accepted")
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPlainTCPRefused: plain NBD on an address that is not loopback is
// refused unless --insecure; loopback stays allowed. (No traffic is sent:
// the addresses are only parsed and resolved.)
func TestPlainTCPRefused(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:10809", true},
		{"[::1]:10809", true},
		{"localhost:10809", true},
		{"0.0.0.0:10809", false},
		{"[::]:10809", false},
		{":10809", false},
		{"192.0.2.7:10809", false},
	} {
		err := plainAllowed(context.Background(), tc.addr, false)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want allowed %v", tc.addr, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--insecure") {
			t.Errorf("%s: refusal does not name --insecure: %v", tc.addr, err)
		}
		if err := plainAllowed(context.Background(), tc.addr, true); err != nil {
			t.Errorf("%s with --insecure: %v", tc.addr, err)
		}
	}
}

// TestSecurityFlagsRefused: wb-create refuses, before it opens a device,
// plain TCP on a non-loopback address, half a TLS configuration, TLS
// without --listen, unreadable certificates and a budget under 1 MiB.
func TestSecurityFlagsRefused(t *testing.T) {
	dir, b, c := images(t, 64<<20, 8<<20)
	cert, key, ca := writeCert(t, dir)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plain non-loopback", []string{"--listen", "tcp://0.0.0.0:0"}, "--insecure"},
		{"cert without key", []string{"--listen", "tcp://127.0.0.1:0", "--tls-cert", cert}, "go together"},
		{"client CA alone", []string{"--listen", "tcp://127.0.0.1:0", "--tls-client-ca", ca}, "go together"},
		{"TLS without listen", []string{"--tls-cert", cert, "--tls-key", key}, "no --listen"},
		{"bad key", []string{"--listen", "tcp://127.0.0.1:0", "--tls-cert", cert, "--tls-key", ca}, "--tls-key"},
		{"bad client CA", []string{"--listen", "tcp://127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", key}, "no PEM certificate"},
		{"small budget", []string{"--max-inflight-bytes", "4096"}, "at least 1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runOnce(t, append(tc.args, "--reformat", "v", b, c)...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tc.want)
			}
		})
	}
	if _, err := loadTLS(cert, key, ca); err != nil {
		t.Fatalf("a good certificate, key and CA: %v", err)
	}
}

// TestSecurityFlagsDocumented: the man page documents every new flag.
func TestSecurityFlagsDocumented(t *testing.T) {
	page, err := os.ReadFile("../../man/wb-create.8")
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{`\-\-max\-inflight\-bytes`, `\-\-max\-connections`, `\-\-stall\-timeout`, `\-\-tls\-cert`, `\-\-tls\-key`, `\-\-tls\-client\-ca`, `\-\-insecure`} {
		if !bytes.Contains(page, []byte(flag)) {
			t.Errorf("man page lacks %s", flag)
		}
	}
}

// writeCert writes a self-signed certificate (also its own CA) and its key
// as PEM files in dir.
func writeCert(t *testing.T, dir string) (cert, key, ca string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	for f, b := range map[string]*pem.Block{cert: {Type: "CERTIFICATE", Bytes: der}, ca: {Type: "CERTIFICATE", Bytes: der}, key: {Type: "PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/writeboost/writeboost/internal/nbd"
)

// Bounds is what wb-create gives the NBD server against hostile or broken
// clients (issue 18): one memory budget, a connection limit, a stall
// timeout. Embedded in CLI.
type Bounds struct {
	MaxInflightBytes int64         `default:"67108864" placeholder:"BYTES" help:"Memory budget of the NBD server: payload bytes (write data, read buffers) of the requests in flight on all connections together; one connection holds at most half, and the last quarter is kept for connections holding little. At least 1048576."`
	MaxConnections   int           `default:"64" placeholder:"N" help:"NBD connections served at once, on the unix socket and --listen together; more are closed at accept, with a log line."`
	StallTimeout     time.Duration `default:"30s" placeholder:"DURATION" help:"Close an NBD connection whose reply write makes no progress for this long (a client that does not read its replies)."`
}

// TLSFlags are the --listen security flags. Embedded in CLI.
type TLSFlags struct {
	TLSCert     string `name:"tls-cert" placeholder:"FILE" help:"PEM certificate (chain) for NBD over TLS on every --listen address: clients must send NBD_OPT_STARTTLS (nbds:// URIs). Needs --tls-key."`
	TLSKey      string `name:"tls-key" placeholder:"FILE" help:"PEM private key of --tls-cert."`
	TLSClientCA string `name:"tls-client-ca" placeholder:"FILE" help:"PEM CA certificates: --listen clients must present a certificate signed by one of them."`
	Insecure    bool   `help:"Allow plain (unauthenticated, unencrypted) NBD on a --listen address that is not loopback. Without TLS such an address is refused."`
}

// nbdOptions are the NBD server's options from the flags.
func (cli *CLI) nbdOptions(log *slog.Logger) nbd.Options {
	return nbd.Options{
		Logger:       log,
		BudgetBytes:  cli.MaxInflightBytes,
		MaxConns:     cli.MaxConnections,
		StallTimeout: cli.StallTimeout,
	}
}

// listenSecurity checks the --listen security flags before anything is
// opened: it returns the TLS configuration for the TCP listeners (nil:
// plain TCP), and refuses plain TCP on an address that is not loopback
// unless --insecure. The unix socket is always plain: its mode (0600)
// is its authentication.
func (cli *CLI) listenSecurity(ctx context.Context, tcp []string) (*tls.Config, error) {
	if cli.MaxInflightBytes < 1<<20 {
		return nil, fmt.Errorf("--max-inflight-bytes %d: want at least 1048576", cli.MaxInflightBytes)
	}
	if cli.MaxConnections < 1 || cli.StallTimeout <= 0 {
		return nil, fmt.Errorf("--max-connections and --stall-timeout must be positive")
	}
	if cli.TLSCert == "" && cli.TLSKey == "" && cli.TLSClientCA == "" {
		for _, addr := range tcp {
			if err := plainAllowed(ctx, addr, cli.Insecure); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	if cli.TLSCert == "" || cli.TLSKey == "" {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together (--tls-client-ca needs both)")
	}
	if len(tcp) == 0 {
		return nil, fmt.Errorf("--tls-cert: no --listen address to serve TLS on (the unix socket is plain)")
	}
	return loadTLS(cli.TLSCert, cli.TLSKey, cli.TLSClientCA)
}

// plainAllowed refuses plain TCP on addr (HOST:PORT) unless every address
// HOST names is loopback, or insecure.
func plainAllowed(ctx context.Context, addr string, insecure bool) error {
	if insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen tcp://%s: %w", addr, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if host == "" {
		err = fmt.Errorf("every address of this machine")
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			err = fmt.Errorf("%s is not loopback", ip)
			break
		}
	}
	if err != nil {
		return fmt.Errorf("--listen tcp://%s: plain NBD there lets anyone who reaches it read and write the volume (%v): give --tls-cert and --tls-key, or --insecure", addr, err)
	}
	return nil
}

// loadTLS builds the server's TLS configuration: its certificate, and with
// a client CA file, client certificates required and verified.
func loadTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", clientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

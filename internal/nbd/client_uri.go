package nbd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// NBD URIs (NetworkBlockDevice/nbd doc/uri.md), as the client accepts them:
//
//	nbd://HOST[:PORT]/EXPORT            TCP, port 10809 by default
//	nbds://HOST[:PORT]/EXPORT           the same, TLS required (NBD_OPT_STARTTLS)
//	nbd+unix:///EXPORT?socket=PATH      unix socket
//	nbds+unix:///EXPORT?socket=PATH     unix socket, TLS required
//
// The export name is the path without its leading slash (percent-decoded;
// empty: the default export). TLS query parameters (nbds only):
//
//	tls-certificates=DIR  libnbd's and nbdkit's layout: DIR/ca-cert.pem (the
//	                      CA that signed the server's certificate; absent:
//	                      the system's roots), DIR/client-cert.pem and
//	                      DIR/client-key.pem (a client certificate, if both
//	                      exist)
//	tls-ca=FILE           the CA certificate(s), PEM (overrides DIR's)
//	tls-cert=FILE         the client certificate, PEM (with tls-key)
//	tls-key=FILE          its private key, PEM
//	tls-hostname=NAME     the name the server's certificate must carry
//	                      (default: HOST; "localhost" for a unix socket)
//	tls-verify-peer=false do not verify the server's certificate (testing only)
//
// Any other parameter is refused, as are user info and fragments.

// DefaultPort is the IANA port of NBD.
const DefaultPort = "10809"

// ErrBadURI marks a URI the client cannot use.
var ErrBadURI = errors.New("nbd: bad URI")

// Target is a parsed NBD URI.
type Target struct {
	Network, Address string // for net.Dial: "tcp" or "unix"
	Export           string
	TLS              *tls.Config // nil: plain text
	// URI is the URI without its TLS parameters: what names the export
	// (recorded in a cache's binding), with no file paths of keys.
	URI string
}

// IsURI reports whether s looks like an NBD URI rather than a path.
func IsURI(s string) bool {
	for _, p := range []string{"nbd://", "nbds://", "nbd+unix://", "nbds+unix://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// ParseURI parses an NBD URI and loads the TLS files it names.
func ParseURI(s string) (*Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURI, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w %q: %s", ErrBadURI, redact(u), fmt.Sprintf(format, a...))
	}
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return nil, bad("user info, fragments and opaque URIs are not accepted")
	}
	var t Target
	secure := false
	switch u.Scheme {
	case "nbd", "nbds":
		secure = u.Scheme == "nbds"
		if u.Hostname() == "" {
			return nil, bad("no host")
		}
		port := u.Port()
		if port == "" {
			port = DefaultPort
		}
		t.Network, t.Address = "tcp", net.JoinHostPort(u.Hostname(), port)
	case "nbd+unix", "nbds+unix":
		secure = u.Scheme == "nbds+unix"
		if u.Host != "" {
			return nil, bad("a unix socket URI has no host (nbd+unix:///EXPORT?socket=PATH)")
		}
		t.Network, t.Address = "unix", u.Query().Get("socket")
		if t.Address == "" {
			return nil, bad("no socket=PATH")
		}
	default:
		return nil, bad("scheme %q: want nbd, nbds, nbd+unix or nbds+unix", u.Scheme)
	}
	t.Export = strings.TrimPrefix(u.Path, "/")

	q := u.Query()
	for k := range q {
		switch k {
		case "socket":
		case "tls-certificates", "tls-ca", "tls-cert", "tls-key", "tls-hostname", "tls-verify-peer":
			if !secure {
				return nil, bad("%s needs an nbds:// or nbds+unix:// URI", k)
			}
		default:
			return nil, bad("unknown parameter %q", k)
		}
	}
	if secure {
		if t.TLS, err = tlsConfig(q, u.Hostname()); err != nil {
			return nil, bad("%v", err)
		}
	}
	t.URI = redact(u)
	return &t, nil
}

// redact is u with only the socket parameter kept (its slashes as they
// are, as libnbd writes it).
func redact(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	if s := u.Query().Get("socket"); s != "" {
		r.RawQuery = "socket=" + strings.ReplaceAll(url.QueryEscape(s), "%2F", "/")
	}
	return r.String()
}

// tlsConfig builds the client's TLS configuration from the URI's
// parameters.
func tlsConfig(q url.Values, host string) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if conf.ServerName == "" {
		conf.ServerName = "localhost"
	}
	if h := q.Get("tls-hostname"); h != "" {
		conf.ServerName = h
	}
	switch v := q.Get("tls-verify-peer"); v {
	case "", "true", "1", "yes":
	case "false", "0", "no":
		conf.InsecureSkipVerify = true
	default:
		return nil, fmt.Errorf("tls-verify-peer=%s: want true or false", v)
	}
	ca, cert, key := q.Get("tls-ca"), q.Get("tls-cert"), q.Get("tls-key")
	if dir := q.Get("tls-certificates"); dir != "" {
		exists := func(name string) string {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
			return ""
		}
		if ca == "" {
			ca = exists("ca-cert.pem")
		}
		if cert == "" && key == "" {
			cert, key = exists("client-cert.pem"), exists("client-key.pem")
			if cert == "" || key == "" {
				cert, key = "", ""
			}
		}
	}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("CA certificate: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", ca)
		}
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("tls-cert and tls-key go together")
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	return conf, nil
}

// DialURI connects to the export an NBD URI names.
func DialURI(ctx context.Context, uri string, opts ClientOptions) (*Client, *Target, error) {
	t, err := ParseURI(uri)
	if err != nil {
		return nil, nil, err
	}
	var d net.Dialer
	dial := func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, t.Network, t.Address) }
	c, err := Dial(ctx, dial, t.Export, t.TLS, opts)
	if err != nil {
		return nil, nil, err
	}
	return c, t, nil
}

package tls

import (
	cryptotls "crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// secureSuites are the TLS 1.2 suites esbc accepts: ECDHE key exchange
// with an AEAD cipher only (TLS 1.3 suites are all AEAD and fixed by Go).
var secureSuites = []uint16{
	cryptotls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	cryptotls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	cryptotls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	cryptotls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	cryptotls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	cryptotls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ParseMinVersion maps "1.2" or "1.3" to its cryptotls constant.
func ParseMinVersion(v string) (uint16, error) {
	switch v {
	case "1.2", "":
		return cryptotls.VersionTLS12, nil
	case "1.3":
		return cryptotls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tls: unsupported min_version %q (want 1.2 or 1.3)", v)
}

// ServerConfig is the profile of tls:// listeners: the certificate comes
// from store at every handshake; versions below minVersion are refused.
func ServerConfig(store *Store, minVersion uint16) *cryptotls.Config {
	return &cryptotls.Config{
		GetCertificate: store.GetCertificate,
		MinVersion:     minVersion,
		CipherSuites:   secureSuites,
	}
}

// ClientOptions describe the client profile toward one trunk.
type ClientOptions struct {
	// CAFile holds the PEM CAs trusted for the trunk's servers; "" means
	// the system roots.
	CAFile string
	// ServerName is the name the server certificate must carry (the
	// trunk's tls.server_name, else its domain). Required.
	ServerName string
	// CertFile and KeyFile are an optional client certificate (mutual TLS).
	CertFile, KeyFile string
	// MinVersion is the lowest TLS version offered (default TLS 1.2).
	MinVersion uint16
	// OnVerifyFailure, if set, is called when the server certificate does
	// not verify (the handshake then fails).
	OnVerifyFailure func(serverName string, err error)
}

// ClientConfig builds the client profile. The server certificate is
// verified against CAFile and ServerName whatever host the transport
// dialled (an SRV target's name is not what the trunk certificate
// carries: RFC 5922 §4 checks the domain).
func ClientConfig(o ClientOptions) (*cryptotls.Config, error) {
	if o.ServerName == "" {
		return nil, fmt.Errorf("tls client profile: server name required")
	}
	var roots *x509.CertPool
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls client profile: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls client profile: no certificate in %s", o.CAFile)
		}
	}
	if o.MinVersion == 0 {
		o.MinVersion = cryptotls.VersionTLS12
	}
	cfg := &cryptotls.Config{
		ServerName:   o.ServerName,
		MinVersion:   o.MinVersion,
		CipherSuites: secureSuites,
		// Verification is done in VerifyConnection, against o.ServerName,
		// so that it does not depend on the name the transport dialled
		// and failures can be reported.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs cryptotls.ConnectionState) error {
			err := verifyServer(cs, roots, o.ServerName)
			if err != nil && o.OnVerifyFailure != nil {
				o.OnVerifyFailure(o.ServerName, err)
			}
			return err
		},
	}
	if o.CertFile != "" || o.KeyFile != "" {
		c, err := cryptotls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client profile: client certificate: %w", err)
		}
		cfg.Certificates = []cryptotls.Certificate{c}
	}
	return cfg, nil
}

func verifyServer(cs cryptotls.ConnectionState, roots *x509.CertPool, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("tls: server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       name,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: verify %s: %w", name, err)
	}
	return nil
}

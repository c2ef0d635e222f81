package tls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync/atomic"
	"time"
)

// ErrNoCertificate is returned by GetCertificate before any certificate
// was loaded.
var ErrNoCertificate = errors.New("tls: no certificate loaded")

// Store holds the certificate presented by tls:// listeners. Load or Set
// replaces it atomically; handshakes that start afterwards use the new
// one, established connections are not touched.
type Store struct {
	cert atomic.Pointer[cryptotls.Certificate]
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{} }

// Load reads a PEM certificate chain and its key and installs them. On
// error the previous certificate stays.
func (s *Store) Load(certFile, keyFile string) error {
	c, err := cryptotls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", certFile, err)
	}
	s.Set(&c)
	return nil
}

// Set installs c.
func (s *Store) Set(c *cryptotls.Certificate) {
	if c.Leaf == nil && len(c.Certificate) > 0 {
		c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	s.cert.Store(c)
}

// Certificate returns the certificate in force (nil before any Load).
func (s *Store) Certificate() *cryptotls.Certificate { return s.cert.Load() }

// GetCertificate is a cryptotls.Config.GetCertificate callback.
func (s *Store) GetCertificate(*cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error) {
	c := s.cert.Load()
	if c == nil {
		return nil, ErrNoCertificate
	}
	return c, nil
}

// SelfSigned makes a self-signed ECDSA P-256 certificate for hosts (IP
// addresses or DNS names), valid for validFor from now.
func SelfSigned(hosts []string, validFor time.Duration) (*cryptotls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("self-signed: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("self-signed: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "esbc self-signed", Organization: []string{"esbc"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signed: %w", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &cryptotls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

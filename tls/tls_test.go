package tls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &ca{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf writes a certificate for dnsName signed by c into dir, returning the file names.
func (c *ca) leaf(t *testing.T, dir, base, dnsName string, serial int64) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{dnsName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	must(t, os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	return cf, kf
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serve runs an echo TLS server on loopback until the test ends.
func serve(t *testing.T, store *Store, minVersion uint16, m *Metrics) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	ln := NewListener(inner, ServerConfig(store, minVersion), "wan", zap.NewNop(), m)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return inner.Addr().String()
}

func dialSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	c, err := cryptotls.Dial("tcp", addr, &cryptotls.Config{RootCAs: roots, ServerName: "sbc.example.com"})
	must(t, err)
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestRotationServesNewCertToNextHandshake(t *testing.T) {
	dir := t.TempDir()
	a := newCA(t, "ca")
	roots := x509.NewCertPool()
	roots.AddCert(a.cert)
	cf, kf := a.leaf(t, dir, "wan", "sbc.example.com", 100)
	store := NewStore()
	must(t, store.Load(cf, kf))
	addr := serve(t, store, cryptotls.VersionTLS12, nil)

	// An open connection keeps its certificate across the rotation.
	open, err := cryptotls.Dial("tcp", addr, &cryptotls.Config{RootCAs: roots, ServerName: "sbc.example.com"})
	must(t, err)
	defer open.Close()
	if got := open.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 100 {
		t.Fatalf("first serial = %d, want 100", got)
	}

	a.leaf(t, dir, "wan", "sbc.example.com", 200) // rotate on disk
	must(t, store.Load(cf, kf))
	if got := dialSerial(t, addr, roots); got != 200 {
		t.Fatalf("serial after rotation = %d, want 200", got)
	}
	// The old connection still works.
	_, err = open.Write([]byte("ping"))
	must(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(open, buf)
	must(t, err)
	if string(buf) != "ping" {
		t.Fatalf("echo = %q", buf)
	}
}

func TestLoadKeepsOldCertOnError(t *testing.T) {
	dir := t.TempDir()
	a := newCA(t, "ca")
	cf, kf := a.leaf(t, dir, "wan", "sbc.example.com", 7)
	store := NewStore()
	must(t, store.Load(cf, kf))
	must(t, os.WriteFile(cf, []byte("garbage"), 0o600))
	if err := store.Load(cf, kf); err == nil {
		t.Fatal("Load of garbage succeeded")
	}
	if store.Certificate().Leaf.SerialNumber.Int64() != 7 {
		t.Fatal("old certificate lost")
	}
}

func TestOldTLSVersionRefused(t *testing.T) {
	a := newCA(t, "ca")
	cf, kf := a.leaf(t, t.TempDir(), "wan", "sbc.example.com", 1)
	store := NewStore()
	must(t, store.Load(cf, kf))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, tc := range []struct {
		name   string
		min    uint16
		client uint16
	}{
		{"tls1.1 vs min 1.2", cryptotls.VersionTLS12, cryptotls.VersionTLS11},
		{"tls1.2 vs min 1.3", cryptotls.VersionTLS13, cryptotls.VersionTLS12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, store, tc.min, m)
			c, err := cryptotls.Dial("tcp", addr, &cryptotls.Config{
				InsecureSkipVerify: true, MinVersion: tc.client, MaxVersion: tc.client,
			})
			if err == nil {
				c.Close()
				t.Fatal("handshake succeeded")
			}
		})
	}
	// Server side failures are counted by reason once the server has seen them.
	waitCount(t, func() float64 { return counterValue(m.Failures.WithLabelValues("wan", "version")) }, 2)
}

// waitCount polls a counter until it reaches want (the server records
// the failure after the client already saw it).
func waitCount(t *testing.T, f func() float64, want float64) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if f() >= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("counter = %v, want %v", f(), want)
}

func TestClientProfileRefusesOtherCA(t *testing.T) {
	dir := t.TempDir()
	trusted, other := newCA(t, "trusted"), newCA(t, "other")
	caFile := filepath.Join(dir, "ca.pem")
	must(t, os.WriteFile(caFile, trusted.pem, 0o600))

	for _, tc := range []struct {
		name       string
		signer     *ca
		certName   string
		serverName string
		ok         bool
	}{
		{"trusted CA, right name", trusted, "sip.trunk.example", "sip.trunk.example", true},
		{"other CA", other, "sip.trunk.example", "sip.trunk.example", false},
		{"trusted CA, wrong name", trusted, "evil.example", "sip.trunk.example", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cf, kf := tc.signer.leaf(t, t.TempDir(), "srv", tc.certName, 5)
			store := NewStore()
			must(t, store.Load(cf, kf))
			addr := serve(t, store, cryptotls.VersionTLS12, nil)
			var failed string
			cfg, err := ClientConfig(ClientOptions{CAFile: caFile, ServerName: tc.serverName,
				OnVerifyFailure: func(name string, err error) { failed = name }})
			must(t, err)
			c, err := cryptotls.Dial("tcp", addr, cfg)
			if tc.ok {
				must(t, err)
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("handshake with an unverifiable server succeeded")
			}
			if failed != tc.serverName {
				t.Fatalf("OnVerifyFailure got %q", failed)
			}
			if Reason(err) != "certificate" {
				t.Fatalf("reason %q for %v", Reason(err), err)
			}
		})
	}
}

func TestClientProfileMutualTLS(t *testing.T) {
	dir := t.TempDir()
	a := newCA(t, "ca")
	caFile := filepath.Join(dir, "ca.pem")
	must(t, os.WriteFile(caFile, a.pem, 0o600))
	scf, skf := a.leaf(t, dir, "srv", "sip.trunk.example", 1)
	ccf, ckf := a.leaf(t, dir, "cli", "esbc.example", 2)
	store := NewStore()
	must(t, store.Load(scf, skf))
	pool := x509.NewCertPool()
	pool.AddCert(a.cert)
	srvCfg := ServerConfig(store, cryptotls.VersionTLS12)
	srvCfg.ClientAuth = cryptotls.RequireAndVerifyClientCert
	srvCfg.ClientCAs = pool
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	ln := cryptotls.NewListener(inner, srvCfg)
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*cryptotls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- err.Error()
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	cfg, err := ClientConfig(ClientOptions{CAFile: caFile, ServerName: "sip.trunk.example", CertFile: ccf, KeyFile: ckf})
	must(t, err)
	c, err := cryptotls.Dial("tcp", inner.Addr().String(), cfg)
	must(t, err)
	defer c.Close()
	if cn := <-got; cn != "esbc.example" {
		t.Fatalf("server saw client %q", cn)
	}
}

func TestSelfSigned(t *testing.T) {
	c, err := SelfSigned([]string{"127.0.0.1", "localhost"}, time.Hour)
	must(t, err)
	if len(c.Leaf.IPAddresses) != 1 || len(c.Leaf.DNSNames) != 1 {
		t.Fatalf("SANs: %v %v", c.Leaf.IPAddresses, c.Leaf.DNSNames)
	}
	store := NewStore()
	if _, err := store.GetCertificate(nil); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("empty store: %v", err)
	}
	store.Set(c)
	addr := serve(t, store, cryptotls.VersionTLS13, nil)
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	conn, err := cryptotls.Dial("tcp", addr, &cryptotls.Config{RootCAs: pool, ServerName: "localhost"})
	must(t, err)
	conn.Close()
}

func TestParseMinVersion(t *testing.T) {
	for in, want := range map[string]uint16{"1.2": cryptotls.VersionTLS12, "1.3": cryptotls.VersionTLS13} {
		if got, err := ParseMinVersion(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	if _, err := ParseMinVersion("1.1"); err == nil {
		t.Error("1.1 accepted")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

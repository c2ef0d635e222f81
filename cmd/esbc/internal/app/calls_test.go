package app

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esbc/esbc/b2bua"
	"github.com/esbc/esbc/media"
	"github.com/esbc/esbc/media/capture"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf is a server certificate carrying only DNS names (as real trunks'
// certificates do: no IP address).
func (ca *testCA) leaf(t *testing.T, names ...string) cryptotls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: names,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return cryptotls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// tlsTrunk is a TLS server standing for a trunk: it reports each
// handshake's outcome and the first SIP request line read after it.
type tlsTrunk struct {
	ln      net.Listener
	results chan string // "request: OPTIONS sip:..." or "handshake: <error>"
	wg      sync.WaitGroup
}

func newTLSTrunk(t *testing.T, cert cryptotls.Certificate) *tlsTrunk {
	t.Helper()
	ln, err := cryptotls.Listen("tcp", "127.0.0.1:0", &cryptotls.Config{Certificates: []cryptotls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	tt := &tlsTrunk{ln: ln, results: make(chan string, 64)}
	tt.wg.Add(1)
	go func() {
		defer tt.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tt.wg.Add(1)
			go func() {
				defer tt.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				report := func(s string) {
					select {
					case tt.results <- s:
					default:
					}
				}
				if err := c.(*cryptotls.Conn).Handshake(); err != nil {
					report("handshake: " + err.Error())
					return
				}
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					report("read: " + err.Error())
					return
				}
				report("request: " + strings.TrimSpace(line))
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); tt.wg.Wait() })
	return tt
}

func (tt *tlsTrunk) port() int { return tt.ln.Addr().(*net.TCPAddr).Port }

// next waits (bounded) for the next handshake outcome.
func (tt *tlsTrunk) next(t *testing.T) string {
	t.Helper()
	select {
	case s := <-tt.results:
		return s
	case <-time.After(15 * time.Second):
		t.Fatal("the trunk saw no TLS connection from esbc")
		return ""
	}
}

// TestTrunkCertificateVerification: esbc's WAN UserAgent dials the trunk
// server by IP (trunk OPTIONS over TLS) and verifies its certificate
// against wan.tls.ca_file and the trunk's domain: a certificate with only
// DNS names from the trusted CA is accepted (OPTIONS reaches the trunk);
// one from another CA, or for another name, is refused in the handshake,
// logged and counted in esbc_tls_handshake_failures_total{side="wan"}.
func TestTrunkCertificateVerification(t *testing.T) {
	trusted, other := newTestCA(t, "trunk CA"), newTestCA(t, "another CA")
	cases := []struct {
		name   string
		ca     *testCA
		names  []string
		accept bool
	}{
		{"names only, trusted CA", trusted, []string{"trunk.example.test"}, true},
		{"server_name of the profile, wildcard", trusted, []string{"*.example.test"}, true},
		{"another CA", other, []string{"trunk.example.test"}, false},
		{"trusted CA, another name", trusted, []string{"evil.example.test"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			trunk := newTLSTrunk(t, tc.ca.leaf(t, tc.names...))
			dir := t.TempDir()
			caFile := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(caFile, trusted.pem, 0o600); err != nil {
				t.Fatal(err)
			}
			leaf := writeCert(t, filepath.Join(dir, "wan.crt"), filepath.Join(dir, "wan.key"))
			extra := fmt.Sprintf(`wan: { listen: ["tls://127.0.0.1:0"], advertise: 127.0.0.1, tls: { cert_file: "%s/wan.crt", key_file: "%s/wan.key", ca_file: %q } }
trunks:
  - name: itsp
    domain: trunk.example.test
    transport: tls
    servers: ["127.0.0.1:%d"]
    auth: { method: ip }
    options_interval: 1h
routes:
  outbound:
    - { match: '^9(\d+)$', number: '$1', trunk: itsp }
`, dir, dir, caFile, trunk.port())
			// testConfig's default wan line is replaced by this one.
			path := filepath.Join(dir, "esbc.yaml")
			if err := os.WriteFile(path, []byte(testConfig(dir, extra)), 0o600); err != nil {
				t.Fatal(err)
			}
			r := launch(t, dir, path, leaf)
			got := trunk.next(t)
			failures := counterValue(r.app.tlsM.Failures.WithLabelValues(string(SideWAN), "certificate"))
			if tc.accept {
				if !strings.HasPrefix(got, "request: OPTIONS sip:") {
					t.Fatalf("trunk certificate %v of the trusted CA: want OPTIONS over TLS, got %q\n%s", tc.names, got, r.logs.String())
				}
				if failures != 0 {
					t.Errorf("esbc_tls_handshake_failures_total{side=wan,reason=certificate} = %v, want 0", failures)
				}
				// Written on the connection sipgo dialled: counted by the
				// client-connection tracer (captrace.go).
				if n := counterReaches(t, r.app.m.sipMessages.WithLabelValues(string(SideWAN), "out", "OPTIONS"), 1); n != 1 {
					t.Errorf("esbc_sip_messages_total{side=wan,direction=out,method=OPTIONS} = %v, want 1", n)
				}
				return
			}
			if !strings.HasPrefix(got, "handshake: ") || !strings.Contains(got, "bad certificate") {
				t.Fatalf("certificate %v of %s: want the handshake refused, got %q", tc.names, tc.ca.cert.Subject.CommonName, got)
			}
			if failures < 1 {
				t.Errorf("esbc_tls_handshake_failures_total{side=wan,reason=certificate} = %v, want >= 1", failures)
			}
			logs := r.logs.String()
			if !strings.Contains(logs, "tls handshake failed") || !strings.Contains(logs, tc.names[0]) {
				t.Errorf("refusal not logged with the peer's certificate:\n%s", logs)
			}
		})
	}
}

// TestMediaTap: only the modes that capture RTP tap the media engine, and
// a missing capture never becomes a non-nil media.Tap.
func TestMediaTap(t *testing.T) {
	if mediaTap(nil) != nil {
		t.Error("nil capture func: want no tap")
	}
	if mediaTap(func() *capture.Capture { return nil }) != nil {
		t.Error("nil capture: want no tap (a typed nil would be a non-nil interface)")
	}
	for _, m := range []capture.Mode{capture.ModeOff, capture.ModeSIP, capture.ModeCall, capture.ModeAll} {
		c, err := capture.New(capture.Config{Dir: t.TempDir(), Mode: m}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		tap := mediaTap(func() *capture.Capture { return c })
		want := m == capture.ModeCall || m == capture.ModeAll
		if (tap != nil) != want {
			t.Errorf("mode %s: tap %v, want tap: %v", m, tap, want)
		}
		var _ media.Tap = c
		_ = c.Close()
	}
}

// TestEndCaptureClosesCallFiles: in call mode, the end of a call closes
// the files of both legs' Call-IDs and of the call id (media packets of a
// leg without a Call-ID).
func TestEndCaptureClosesCallFiles(t *testing.T) {
	dir := t.TempDir()
	c, err := capture.New(capture.Config{Dir: dir, Mode: capture.ModeCall}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, b := netip.MustParseAddrPort("127.0.0.1:1000"), netip.MustParseAddrPort("127.0.0.1:2000")
	now := time.Now()
	for _, id := range []string{"lan-call-id", "wan-call-id", "call-1"} {
		c.WriteSIP(id, a, b, []byte("OPTIONS sip:x SIP/2.0\r\n\r\n"), now)
	}
	endCapture(func() *capture.Capture { return c }, b2bua.CallInfo{ID: "call-1",
		Legs: []b2bua.LegInfo{{CallID: "lan-call-id"}, {CallID: "wan-call-id"}}})
	// A packet written after EndCall opens a new file for its Call-ID: each
	// ended id then has two files, proving its first one was closed.
	for _, id := range []string{"lan-call-id", "wan-call-id", "call-1"} {
		c.WriteSIP(id, a, b, []byte("OPTIONS sip:x SIP/2.0\r\n\r\n"), now)
	}
	_ = c.Close()
	for _, id := range []string{"lan-call-id", "wan-call-id", "call-1"} {
		m, _ := filepath.Glob(filepath.Join(dir, "esbc-call-"+id+"-*.pcapng"))
		if len(m) != 2 {
			t.Errorf("%s: %d files, want 2 (closed at the call's end, reopened after): %v", id, len(m), m)
		}
	}
}

func TestPBXName(t *testing.T) {
	for _, tc := range []struct {
		uri, hostPort, transport string
		ok                       bool
	}{
		{"sip:10.0.0.10:5060;transport=udp", "", "", false}, // IP: the edge's static policy
		{"sip:[2001:db8::1]:5060", "", "", false},
		{"sip:pbx.corp.example", "pbx.corp.example:5060", "udp", true},
		{"sip:pbx.corp.example:5070;transport=TCP", "pbx.corp.example:5070", "tcp", true},
		{"sips:100@pbx.corp.example", "pbx.corp.example:5061", "tls", true},
		{"", "", "", false},
		{"http://pbx", "", "", false},
	} {
		hp, tr, ok := pbxName(tc.uri)
		if hp != tc.hostPort || tr != tc.transport || ok != tc.ok {
			t.Errorf("pbxName(%q) = %q, %q, %v; want %q, %q, %v", tc.uri, hp, tr, ok, tc.hostPort, tc.transport, tc.ok)
		}
	}
}

// Black-box tests of the edge protection (package acl) over real loopback
// sockets: a sipgo server is served on sockets wrapped exactly as app
// wraps them (UDP filter, TCP framing, accept-time ACL below TLS and
// framing above it), and real peers (sipgo clients, raw sockets bound to
// other 127/8 addresses) talk to it.
package test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/esbc/esbc/acl"
)

// secEdge is a sipgo SIP server behind the acl edge on UDP, TCP and TLS.
type secEdge struct {
	g        *acl.Guard
	reg      *prometheus.Registry
	udp      string
	tcp      string
	tls      string
	roots    *x509.CertPool
	handled  atomic.Int64 // requests that reached the SIP handlers
	closeAll func()
}

// secCert makes a self-signed certificate for 127.0.0.1.
func secCert(t *testing.T) (cryptotls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "esbc-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return cryptotls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// secStartEdge serves a sipgo server on the given side's wrapped sockets.
// OPTIONS and INVITE are answered 200 / 486 and counted.
func secStartEdge(t *testing.T, side acl.Side, cfg acl.Config) *secEdge {
	t.Helper()
	e := &secEdge{reg: prometheus.NewRegistry()}
	g, err := acl.New(cfg, acl.Options{Registerer: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	e.g = g
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("esbc-under-test"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(code int, reason string) sipgo.RequestHandler {
		return func(req *sip.Request, tx sip.ServerTransaction) {
			e.handled.Add(1)
			_ = tx.Respond(sip.NewResponseFromRequest(req, code, reason, nil))
		}
	}
	srv.OnOptions(answer(200, "OK"))
	srv.OnInvite(answer(486, "Busy Here"))

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsRaw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, roots := secCert(t)
	e.roots = roots
	e.udp, e.tcp, e.tls = pc.LocalAddr().String(), tcpLn.Addr().String(), tlsRaw.Addr().String()
	// TLS exactly as app stacks it: edge below the handshake, edge above it.
	tlsLn := cryptotls.NewListener(g.WrapListener(side, tlsRaw), &cryptotls.Config{Certificates: []cryptotls.Certificate{cert}, MinVersion: cryptotls.VersionTLS12})
	var wg sync.WaitGroup
	serve := func(f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); _ = f() }()
	}
	serve(func() error { return srv.ServeUDP(g.WrapPacketConn(side, pc)) })
	serve(func() error { return srv.ServeTCP(g.WrapListener(side, tcpLn)) })
	serve(func() error { return srv.ServeTLS(g.WrapListener(side, tlsLn)) })
	e.closeAll = func() {
		pc.Close()
		tcpLn.Close()
		tlsRaw.Close()
		srv.Close()
		ua.Close()
		wg.Wait()
	}
	t.Cleanup(e.closeAll)
	return e
}

func (e *secEdge) dropped(side acl.Side, reason acl.Reason) float64 {
	return secMetric(e.reg, "esbc_acl_dropped_total", map[string]string{"side": side.String(), "reason": reason.String()})
}

// secMetric reads one sample of a counter or gauge from reg.
func secMetric(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// secClient is a sipgo UA bound to local IP src (a 127/8 address).
func secClient(t *testing.T, src string, roots *x509.CertPool, userAgent string) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(userAgent),
		sipgo.WithUserAgenTLSConfig(&cryptotls.Config{RootCAs: roots, ServerName: "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname(src), sipgo.WithClientConnectionAddr(src+":0"))
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// secOptions sends OPTIONS and returns the final response.
func secOptions(t *testing.T, cli *sipgo.Client, addr, transport string) (*sip.Response, error) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Host: ap.Addr().String(), Port: int(ap.Port())})
	req.SetTransport(transport)
	req.SetDestination(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cli.Do(ctx, req)
}

func secMustOK(t *testing.T, cli *sipgo.Client, addr, transport string) {
	t.Helper()
	res, err := secOptions(t, cli, addr, transport)
	if err != nil {
		t.Fatalf("OPTIONS over %s: %v", transport, err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("OPTIONS over %s: %d %s", transport, res.StatusCode, res.Reason)
	}
}

// secRawOptions is an OPTIONS request as raw bytes from src.
func secRawOptions(src string, extra ...string) []byte {
	b := &strings.Builder{}
	fmt.Fprintf(b, "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%d\r\n", src, time.Now().UnixNano())
	fmt.Fprintf(b, "From: <sip:probe@%s>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: %d@%s\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n", src, time.Now().UnixNano(), src)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// secAnswered sends an OPTIONS from c to addr (UDP: up to five times, a
// second apart) and reports whether a 200 came back.
func secAnswered(t *testing.T, c *net.UDPConn, addr string) bool {
	t.Helper()
	buf := make([]byte, 4096)
	for range 5 {
		secSend(t, c, addr)
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if n, _, err := c.ReadFrom(buf); err == nil && strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
			return true
		}
	}
	return false
}

// secUDP is a raw UDP socket on local IP src.
func secUDP(t *testing.T, src string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		t.Skipf("cannot bind %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// secNoDatagram asserts nothing is waiting on c. It is called after a
// later request of an allowed peer was answered: the edge handles
// datagrams in arrival order, so an answer to the earlier one would be
// there already.
func secNoDatagram(t *testing.T, c *net.UDPConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 4096)
	if n, _, err := c.ReadFrom(buf); err == nil {
		t.Fatalf("got a datagram: %q", buf[:n])
	}
}

// secLeakCheck checks for leaked goroutines after every cleanup of t has
// run (it is registered first, so it runs last).
func secLeakCheck(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent()}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

func TestSecurityDeniedSourceGetsNothing(t *testing.T) {
	secLeakCheck(t)
	e := secStartEdge(t, acl.LAN, acl.Config{LAN: acl.Rules{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}})
	good := secClient(t, "127.0.0.1", e.roots, "pbx")

	// UDP: the denied datagram is dropped before parsing; the listener
	// keeps serving the allowed peer.
	bad := secUDP(t, "127.0.0.2")
	secSend(t, bad, e.udp)
	secMustOK(t, good, e.udp, "UDP")
	secNoDatagram(t, bad)
	if v := e.dropped(acl.LAN, acl.ReasonDenied); v != 1 {
		t.Fatalf("dropped{denied} = %v", v)
	}

	// TCP and TLS: closed at accept, nothing read, no handshake.
	for _, addr := range []string{e.tcp, e.tls} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if addr == e.tls {
			tc := cryptotls.Client(c, &cryptotls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"})
			if err := tc.Handshake(); err == nil {
				t.Fatal("TLS handshake from a denied source succeeded")
			}
		} else {
			c.Write(secRawOptions(c.LocalAddr().String()))
			if n, err := c.Read(make([]byte, 100)); n != 0 || secTimeout(err) {
				t.Fatalf("denied TCP read %d %v", n, err)
			}
		}
		c.Close()
	}
	secMustOK(t, good, e.tcp, "TCP")
	secMustOK(t, good, e.tls, "TLS")
	if v := e.dropped(acl.LAN, acl.ReasonDenied); v != 3 {
		t.Fatalf("dropped{denied} = %v", v)
	}
	if n := e.handled.Load(); n != 3 {
		t.Fatalf("handlers ran %d times, want 3 (allowed peer only)", n)
	}
}

// secTimeout reports a read that timed out: nothing closed the connection.
func secTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestSecurityScannerAndMalformed(t *testing.T) {
	secLeakCheck(t)
	e := secStartEdge(t, acl.LAN, acl.Config{
		UserAgentDeny:   []string{"friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent"},
		MaxMessageBytes: 2000,
		LAN:             acl.Rules{Methods: []string{"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"}},
	})
	good := secClient(t, "127.0.0.1", e.roots, "pbx")
	peer := secUDP(t, "127.0.0.3")
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(e.udp))
	src := peer.LocalAddr().String()
	send := func(b []byte) {
		t.Helper()
		if _, err := peer.WriteTo(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(prefix string) string {
		t.Helper()
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		n, _, err := peer.ReadFrom(buf)
		if err != nil {
			t.Fatalf("waiting for %q: %v", prefix, err)
		}
		if !strings.HasPrefix(string(buf[:n]), prefix) {
			t.Fatalf("got %q, want %q", buf[:n], prefix)
		}
		return string(buf[:n])
	}
	// scanners: silently dropped (SIPVicious and sipcli style)
	send(secRawOptions(src, "User-Agent: friendly-scanner"))
	send(secRawOptions(src, "User-Agent: SIPcli/v1.8"))
	// garbage and an unroutable request: dropped, listener alive
	send([]byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not sip"))
	send([]byte("INVITE sip:x SIP/2.0\r\nFrom: <sip:a@b>\r\n\r\n"))
	secMustOK(t, good, e.udp, "UDP")
	secNoDatagram(t, peer)
	// answered by the edge itself
	send([]byte(strings.Replace(string(secRawOptions(src)), "OPTIONS sip:127.0.0.1 SIP/2.0", "OPTIONS sip:127.0.0.1 SIP/7.0", 1)))
	expect("SIP/2.0 505 ")
	send([]byte(strings.Replace(string(secRawOptions(src)), "Call-ID:", "X-Call-ID:", 1)))
	expect("SIP/2.0 400 Missing Call-ID")
	send([]byte(strings.Replace(string(secRawOptions(src, "X-Pad: "+strings.Repeat("a", 1500))), "Content-Length: 0", "Content-Length: 0\r\nl: 0", 1)))
	expect("SIP/2.0 400 ")
	send(secRawOptions(src, "X-Pad: "+strings.Repeat("a", 3000)))
	expect("SIP/2.0 400 Message Too Large")
	send([]byte(strings.ReplaceAll(string(secRawOptions(src)), "OPTIONS", "REGISTER")))
	if r := expect("SIP/2.0 405 "); !strings.Contains(r, "\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n") {
		t.Fatalf("405 without Allow: %q", r)
	}
	send([]byte(strings.Replace(string(secRawOptions(src)), "Max-Forwards: 70", "Max-Forwards: 0", 1)))
	secMustOK(t, good, e.udp, "UDP") // OPTIONS with Max-Forwards 0 is answered by the UAS itself
	secMustOK(t, good, e.udp, "UDP")

	// TCP: a scanner message is dropped, the stream goes on; a duplicate
	// Content-Length closes the connection; the listener serves the next one.
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}).Dial("tcp", e.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tsrc := c.LocalAddr().String()
	msg := strings.ReplaceAll(string(secRawOptions(tsrc, "User-Agent: VaxSIPUserAgent/3.1")), "SIP/2.0/UDP", "SIP/2.0/TCP")
	ok := strings.ReplaceAll(string(secRawOptions(tsrc)), "SIP/2.0/UDP", "SIP/2.0/TCP")
	io.WriteString(c, msg+ok)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != "SIP/2.0 200 OK\r\n" {
		t.Fatalf("TCP after a scanner message: %q %v", line, err)
	}
	io.WriteString(c, strings.Replace(ok, "Content-Length: 0", "Content-Length: 0\r\nContent-Length: 12", 1)+"OPTIONS sip:")
	if _, err := io.ReadAll(br); err != nil && !isReset(err) {
		t.Fatalf("connection not closed after a framing error: %v", err)
	}
	secMustOK(t, good, e.tcp, "TCP")

	// TLS: the same per-message policy applies to the decrypted stream.
	tc, err := cryptotls.DialWithDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}, Timeout: 10 * time.Second},
		"tcp", e.tls, &cryptotls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	tsrc = tc.LocalAddr().String()
	scan := strings.ReplaceAll(string(secRawOptions(tsrc, "User-Agent: sipvicious")), "SIP/2.0/UDP", "SIP/2.0/TLS")
	ok = strings.ReplaceAll(string(secRawOptions(tsrc)), "SIP/2.0/UDP", "SIP/2.0/TLS")
	bad := strings.Replace(ok, "SIP/2.0\r\n", "SIP/3.0\r\n", 1)
	io.WriteString(tc, scan+bad+ok)
	tr := bufio.NewReader(tc)
	for _, want := range []string{"SIP/2.0 505 Version Not Supported\r\n", "SIP/2.0 200 OK\r\n"} {
		for {
			line, err := tr.ReadString('\n')
			if err != nil {
				t.Fatalf("TLS: waiting for %q: %v", want, err)
			}
			if strings.HasPrefix(line, "SIP/2.0 ") {
				if line != want {
					t.Fatalf("TLS: got %q, want %q", line, want)
				}
				break
			}
		}
	}

	for _, r := range []struct {
		reason acl.Reason
		min    float64
	}{{acl.ReasonUserAgent, 4}, {acl.ReasonMalformed, 3}, {acl.ReasonVersion, 2}, {acl.ReasonOversize, 1}, {acl.ReasonMethod, 1}, {acl.ReasonFraming, 1}} {
		if v := e.dropped(acl.LAN, r.reason); v < r.min {
			t.Errorf("dropped{%v} = %v, want >= %v", r.reason, v, r.min)
		}
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset by peer") }

func TestSecurityACLChangeOnReload(t *testing.T) {
	secLeakCheck(t)
	only1 := acl.Config{LAN: acl.Rules{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}
	e := secStartEdge(t, acl.LAN, only1)
	good := secClient(t, "127.0.0.1", e.roots, "pbx")
	other := secUDP(t, "127.0.0.4")
	ask := func() {
		t.Helper()
		secSend(t, other, e.udp)
	}
	ask()
	secMustOK(t, good, e.udp, "UDP")
	secNoDatagram(t, other)

	// reload: 127.0.0.0/8 allowed, 127.0.0.1 keeps working
	if err := e.g.SetConfig(acl.Config{LAN: acl.Rules{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}); err != nil {
		t.Fatal(err)
	}
	ask()
	other.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := other.ReadFrom(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ") {
		t.Fatalf("after reload: %q %v", buf[:n], err)
	}
	// and back
	if err := e.g.SetConfig(only1); err != nil {
		t.Fatal(err)
	}
	ask()
	secMustOK(t, good, e.udp, "UDP")
	secNoDatagram(t, other)
	if v := e.dropped(acl.LAN, acl.ReasonDenied); v != 2 {
		t.Fatalf("dropped{denied} = %v", v)
	}
	// an invalid policy is refused and the old one stays
	if err := e.g.SetConfig(acl.Config{RateLimit: acl.RateLimit{PerIP: -1}}); err == nil {
		t.Fatal("invalid policy accepted")
	}
	ask()
	secMustOK(t, good, e.udp, "UDP")
	secNoDatagram(t, other)
}

package acl

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// listenUDP opens a loopback UDP socket on an ephemeral port.
func listenUDP(t *testing.T, addr string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Skipf("loopback %s unavailable: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// serveUDP reads from pc on its own goroutine and forwards what it gets.
func serveUDP(t *testing.T, pc net.PacketConn) <-chan string {
	ch := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return ch
}

func TestPacketConnFilters(t *testing.T) {
	// 127.0.0.2 is denied, 127.0.0.1 allowed: both on loopback.
	g, _ := newGuard(t, Config{LAN: Rules{Deny: pfx("127.0.0.2/32")}, UserAgentDeny: []string{"friendly-scanner"}}, nil)
	srv := listenUDP(t, "127.0.0.1:0")
	got := serveUDP(t, g.WrapPacketConn(LAN, srv))
	denied := listenUDP(t, "127.0.0.2:0")
	client := listenUDP(t, "127.0.0.1:0")

	send := func(pc net.PacketConn, b []byte) {
		t.Helper()
		if _, err := pc.WriteTo(b, srv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// denied source, scanner, garbage, keep-alive: none reaches the reader;
	// the marker after them proves they were consumed and the loop runs.
	send(denied, invite())
	send(client, invite("User-Agent: friendly-scanner"))
	send(client, []byte("\x00\x01garbage"))
	send(client, []byte("\r\n\r\n"))
	marker := invite("Subject: marker")
	send(client, marker)
	if m := <-got; m != string(marker) {
		t.Fatalf("reader got %q", m)
	}
	// a SIP/7.0 request is answered 505 by the edge to the source
	send(client, bytes.Replace(invite(), []byte("SIP/2.0\r\n"), []byte("SIP/7.0\r\n"), 1))
	buf := make([]byte, 2048)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := client.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 505 ") || !strings.Contains(string(buf[:n]), "branch=z9hG4bK776asdhds") {
		t.Fatalf("response %q", buf[:n])
	}
	send(client, marker)
	if m := <-got; m != string(marker) {
		t.Fatalf("reader got %q", m)
	}
	for _, r := range []Reason{ReasonDenied, ReasonUserAgent, ReasonMalformed, ReasonVersion} {
		if v := testutil.ToFloat64(g.m.dropped[LAN][r]); v != 1 {
			t.Errorf("dropped{%v} = %v", r, v)
		}
	}
}

// tcpPair serves one accepted, wrapped connection and returns the client
// end plus a channel of everything the reader (the SIP stack's place) got.
func tcpPair(t *testing.T, g *Guard, laddr string) (net.Conn, <-chan []byte, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := g.WrapListener(LAN, ln)
	got := make(chan []byte, 64)
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := wl.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 32768)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				got <- bytes.Clone(buf[:n])
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(laddr)}}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); ln.Close(); <-done })
	return c, got, errc
}

func TestConnFraming(t *testing.T) {
	g, _ := newGuard(t, Config{UserAgentDeny: []string{"sipcli"}, MaxMessageBytes: 4000}, nil)
	c, got, _ := tcpPair(t, g, "127.0.0.1")
	body := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
	m1 := string(invite("Content-Length: "+strconv.Itoa(len(body)))) + body
	scanner := string(invite("User-Agent: SIPcli/v1.8", "Content-Length: 0"))
	m2 := string(invite("Subject: two", "Content-Length: 0"))
	// everything in one write, split at odd places, with a ping in between
	all := m1 + "\r\n\r\n" + scanner + m2
	for i := 0; i < len(all); i += 7 {
		if _, err := io.WriteString(c, all[i:min(i+7, len(all))]); err != nil {
			t.Fatal(err)
		}
	}
	var rx []byte
	for len(rx) < len(m1)+len(m2) {
		rx = append(rx, <-got...)
	}
	if string(rx) != m1+m2 {
		t.Fatalf("reader got %q", rx)
	}
	// the ping was answered with a pong
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	pong := make([]byte, 2)
	if _, err := io.ReadFull(br, pong); err != nil || string(pong) != "\r\n" {
		t.Fatalf("pong %q %v", pong, err)
	}
	// a bad version request is answered 505 on the stream
	io.WriteString(c, strings.Replace(m2, "SIP/2.0\r\n", "SIP/7.0\r\n", 1))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SIP/2.0 505 ") {
		t.Fatalf("505: %q %v", line, err)
	}
	if v := testutil.ToFloat64(g.m.dropped[LAN][ReasonUserAgent]); v != 1 {
		t.Errorf("dropped{user_agent} = %v", v)
	}
}

func TestConnFramingErrorsClose(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{"duplicate Content-Length", string(invite("Content-Length: 0", "Content-Length: 10"))},
		{"negative Content-Length", string(invite("Content-Length: -1"))},
		{"missing Content-Length", string(invite())},
		{"body over max", string(invite("Content-Length: 100000"))},
		{"endless header", "INVITE sip:a@b SIP/2.0\r\n" + strings.Repeat("X-A: b\r\n", 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newGuard(t, Config{MaxMessageBytes: 4000}, nil)
			c, got, errc := tcpPair(t, g, "127.0.0.1")
			io.WriteString(c, tt.data)
			err := <-errc
			if !errors.Is(err, ErrFraming) {
				t.Fatalf("reader error %v", err)
			}
			select {
			case b := <-got:
				t.Fatalf("reader got %q", b)
			default:
			}
			// the edge closed the connection
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("peer side not closed: %v", err)
			}
		})
	}
}

func TestListenerClosesDeniedAtAccept(t *testing.T) {
	g, _ := newGuard(t, Config{LAN: Rules{Allow: pfx("127.0.0.1/32")}}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wl := g.WrapListener(LAN, ln)
	accepted := make(chan netip.Addr, 2)
	go func() {
		for {
			c, err := wl.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- addrOf(c.RemoteAddr())
			c.Close()
		}
	}()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	bad, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := bad.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("denied connection not closed: %d %v", n, err)
	}
	bad.Close()
	good, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if a := <-accepted; a != ip("127.0.0.1") {
		t.Fatalf("accepted %v", a)
	}
	good.Close()
	ln.Close()
	for range accepted {
	}
	if v := testutil.ToFloat64(g.m.dropped[LAN][ReasonDenied]); v != 1 {
		t.Errorf("dropped{denied} = %v", v)
	}
}

func TestWriteTapSeesEdgeResponsesAndWrites(t *testing.T) {
	g, _ := newGuard(t, Config{WAN: Rules{Allow: pfx("127.0.0.0/8")}}, nil)
	type seen struct {
		side     Side
		from, to string
		msg      string
	}
	got := make(chan seen, 4)
	g.SetWriteTap(func(s Side, from, to net.Addr, msg []byte) {
		got <- seen{s, from.String(), to.String(), string(msg)}
	})
	srv := listenUDP(t, "127.0.0.1:0")
	wpc := g.WrapPacketConn(WAN, srv)
	rx := serveUDP(t, wpc)
	client := listenUDP(t, "127.0.0.1:0")
	client.WriteTo(bytes.Replace(invite(), []byte("SIP/2.0\r\n"), []byte("SIP/3.0\r\n"), 1), srv.LocalAddr())
	s := <-got
	if s.side != WAN || s.from != srv.LocalAddr().String() || s.to != client.LocalAddr().String() || !strings.HasPrefix(s.msg, "SIP/2.0 505 ") {
		t.Fatalf("tap saw %+v", s)
	}
	// what the SIP stack writes through the wrapper is shown too
	if _, err := wpc.WriteTo([]byte("SIP/2.0 200 OK\r\n\r\n"), client.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s.msg != "SIP/2.0 200 OK\r\n\r\n" {
		t.Fatalf("tap saw %+v", s)
	}
	g.SetWriteTap(nil)
	wpc.WriteTo([]byte("x"), client.LocalAddr())
	select {
	case s := <-got:
		t.Fatalf("removed tap saw %+v", s)
	default:
	}
	_ = rx
}

func TestConnLimitPerSource(t *testing.T) {
	g, _ := newGuard(t, Config{MaxConnsPerSource: 2, Trusted: pfx("127.0.0.9/32")}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := g.WrapListener(LAN, ln)
	accepted := make(chan net.Conn)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := wl.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a1, a2 := dial("127.0.0.1"), dial("127.0.0.1")
	s1, s2 := <-accepted, <-accepted
	// the third from the same source is closed at accept...
	c3 := dial("127.0.0.1")
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("third connection not closed: %v", err)
	}
	// ...while another source and a trusted one are accepted
	keep := func(c net.Conn) { t.Cleanup(func() { c.Close() }) }
	dial("127.0.0.2")
	keep(<-accepted)
	for range 3 {
		dial("127.0.0.9")
		keep(<-accepted)
	}
	// closing one frees a place
	s1.Close()
	a1.Close()
	dial("127.0.0.1")
	s4 := <-accepted
	if v := testutil.ToFloat64(g.m.dropped[LAN][ReasonConnLimit]); v != 1 {
		t.Errorf("dropped{conn_limit} = %v", v)
	}
	s2.Close()
	s4.Close()
	_ = a2
	ln.Close()
	<-done
}

// TestTLSStackedCountsOnce stacks the edge as app does for TLS: below the
// handshake (accept-time checks, raw pass-through) and above it (framing
// of the decrypted stream). The connection is admitted and counted once.
func TestTLSStackedCountsOnce(t *testing.T) {
	g, _ := newGuard(t, Config{MaxConnsPerSource: 1}, nil)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tl := tls.NewListener(g.WrapListener(LAN, raw), &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	top := g.WrapListener(LAN, tl)
	got := make(chan string, 1)
	go func() {
		c, err := top.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(der)
	pool.AddCert(leaf)
	c, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := string(invite("User-Agent: sipvicious", "Content-Length: 0")) // not denied here
	io.WriteString(c, "\r\n\r\n"+msg)
	if s := <-got; s != msg {
		t.Fatalf("server read %q", s)
	}
	if v := testutil.ToFloat64(g.m.dropped[LAN][ReasonConnLimit]); v != 0 {
		t.Fatalf("the TLS connection was counted twice: dropped{conn_limit} = %v", v)
	}
}

func TestPacketConnIPv6(t *testing.T) {
	g, _ := newGuard(t, Config{LAN: Rules{Allow: pfx("2001:db8::/32")}}, nil)
	srv := listenUDP(t, "[::1]:0")
	got := serveUDP(t, g.WrapPacketConn(LAN, srv))
	client := listenUDP(t, "[::1]:0")
	client.WriteTo(invite(), srv.LocalAddr()) // ::1 is not in 2001:db8::/32
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(g.m.dropped[LAN][ReasonDenied]) != 1; {
		if time.Now().After(deadline) {
			t.Fatal("the denied IPv6 datagram was not counted")
		}
		time.Sleep(time.Millisecond)
	}
	if err := g.SetConfig(Config{LAN: Rules{Allow: pfx("::1/128")}}); err != nil {
		t.Fatal(err)
	}
	marker := invite("Subject: v6")
	client.WriteTo(marker, srv.LocalAddr())
	if m := <-got; m != string(marker) {
		t.Fatalf("reader got %q", m)
	}
	if v := testutil.ToFloat64(g.m.dropped[LAN][ReasonDenied]); v != 1 {
		t.Errorf("dropped{denied} = %v", v)
	}
}

func TestConnSlowMessageClosed(t *testing.T) {
	g, _ := newGuard(t, Config{MessageTimeout: 300 * time.Millisecond}, nil)
	// an idle connection between messages is not closed by the message
	// timeout; one that stalls inside a message is
	c, got, errc := tcpPair(t, g, "127.0.0.1")
	m1 := string(invite("Content-Length: 0"))
	io.WriteString(c, m1)
	if b := <-got; string(b) != m1 {
		t.Fatalf("got %q", b)
	}
	time.Sleep(600 * time.Millisecond) // idle for twice the message timeout
	io.WriteString(c, m1)
	if b := <-got; string(b) != m1 {
		t.Fatalf("after idle: got %q", b)
	}
	io.WriteString(c, "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n") // and nothing more
	if err := <-errc; !errors.Is(err, ErrFraming) {
		t.Fatalf("reader error %v", err)
	}
	if v := testutil.ToFloat64(g.m.dropped[LAN][ReasonSlow]); v != 1 {
		t.Errorf("dropped{slow_message} = %v", v)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer side not closed: %v", err)
	}
}

func TestConnReaderDeadlineKept(t *testing.T) {
	g, _ := newGuard(t, Config{MessageTimeout: time.Hour}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := g.WrapConn(LAN, raw)
	defer c.Close()
	full := string(invite("Content-Length: 0"))
	io.WriteString(cl, full[:30]) // a partial message
	// the reader's own (earlier) deadline wins over the message timeout
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = c.Read(make([]byte, 100))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read = %v, want the reader's timeout", err)
	}
	// a timeout is not fatal: the message completes on the next Read
	c.SetReadDeadline(time.Time{})
	io.WriteString(cl, full[30:])
	buf := make([]byte, 2000)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != full {
		t.Fatalf("after a timeout: %q %v", buf[:n], err)
	}
}

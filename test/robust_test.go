package test

// SPEC §5 "Bad input", black-box against the esbc binary: garbage at every
// SIP entry point (LAN UDP/TCP, WAN UDP/TCP/TLS), half-open and idle TCP
// connections, broken TLS handshakes, oversize and incomplete messages, bad
// admin API requests, and the call failures a PBX must get a clean answer
// to (dead trunk, no route, emergency number, no common codec). After each
// case the same process is alive, answers OPTIONS, carries a good call, and
// its goroutines and resident memory come back near the baseline.

import (
	"bytes"
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

const (
	robustMaxMessage = 4096 // security.max_message_bytes in the tests
	robustLive       = "916502530000"
	robustDead       = "816502530000" // routed to a trunk with nothing listening
	robustEmergency  = "9911"         // 9 + 911 toward an emergency:false trunk
	robustNoRoute    = "5551234"
)

// robustConfig: LAN udp+tcp, WAN udp+tcp+tls, a live trunk (sipgo UA on
// 127.0.0.1:live) and a dead one (nothing on 127.0.0.1:dead), both
// emergency:false and srtp off.
func robustConfig(dir string, pbxPort, live, dead int, rtp string) []byte {
	return []byte(fmt.Sprintf(`
log: { level: info, format: json }
admin: { listen: "127.0.0.1:0" }
shutdown_grace: 5s
lan:
  listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]
  advertise: 127.0.0.1
  pbx: { uri: "sip:127.0.0.1:%[2]d;transport=udp", trusted: true }
  acl: { allow: ["127.0.0.0/8"] }
wan:
  listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0", "tls://127.0.0.1:0"]
  advertise: 127.0.0.1
  tls: { cert_file: %[1]s/wan.crt, key_file: %[1]s/wan.key, min_version: "1.2" }
  acl: { allow: ["127.0.0.0/8"] }
trunks:
  - name: live
    domain: live.test
    transport: udp
    servers: ["127.0.0.1:%[3]d"]
    auth: { method: ip }
    srtp: "off"
    codecs: [PCMU, telephone-event]
    emergency: false
    options_interval: 1s
    failover_timeout: 1s
  - name: dead
    domain: dead.test
    transport: udp
    servers: ["127.0.0.1:%[4]d"]
    auth: { method: ip }
    srtp: "off"
    codecs: [PCMU, telephone-event]
    options_interval: 1s
    failover_timeout: 1s
numbering: { country_code: "1", national_prefix: "1", international_prefix: "011" }
routes:
  outbound:
    - { match: '^9(\d+)$', number: '$1', trunk: live }
    - { match: '^8(\d+)$', number: '$1', trunk: dead }
security:
  rate_limit: { per_ip: 100000, burst: 200000, ban: 1s }
  max_message_bytes: %[6]d
media:
  rtp_ports: "%[5]s"
  inactivity_timeout: 30s
cdr: { file: "" }
`, dir, pbxPort, live, dead, rtp, robustMaxMessage))
}

// robustRTPRange is a media port range apart from the other tests' ranges
// (see reloadRTPRange).
func robustRTPRange() string {
	lo := 14000 + 2*(os.Getpid()%1000)
	return fmt.Sprintf("%d-%d", lo, lo+399)
}

// robustEnv is one esbc process between a PBX and a live trunk.
type robustEnv struct {
	p     *serviceProc
	pbx   *failoverPBX
	trunk *failoverTrunk
	roots *x509.CertPool
	base  struct{ goroutines, rss float64 }
}

func newRobustEnv(t *testing.T) *robustEnv {
	t.Helper()
	e := &robustEnv{}
	e.trunk = newFailoverTrunk(t, "live", "udp", "127.0.0.1", reloadFreeUDPPort(t, "127.0.0.1"))
	e.trunk.start()
	dead := reloadFreeUDPPort(t, "127.0.0.1")
	e.pbx = newFailoverPBX(t)
	dir := t.TempDir()
	bin := serviceBuild(t, dir)
	serviceCert(t, dir, 1)
	certPEM, err := os.ReadFile(filepath.Join(dir, "wan.crt"))
	if err != nil {
		t.Fatal(err)
	}
	e.roots = x509.NewCertPool()
	e.roots.AppendCertsFromPEM(certPEM)
	cfg := filepath.Join(dir, "esbc.yaml")
	serviceWrite(t, cfg, robustConfig(dir, e.pbx.port(), e.trunk.port, dead, robustRTPRange()))
	e.p = (&reloadRig{bin: bin, cfg: cfg}).start(t)
	e.pbx.dialTo(e.p.addr("lan/udp"))
	reloadWaitTrunkUp(t, e.p, e.trunk.target("127.0.0.1"), "lan/udp", "wan/udp")
	return e
}

// metric is a sample of /metrics; -1 when absent.
func (e *robustEnv) metric(t *testing.T, series string) float64 {
	t.Helper()
	return reloadMetric(t, e.p, series)
}

// healthy checks that esbc still runs, answers OPTIONS on the LAN over UDP
// and TCP and on the WAN over TLS, and carries a good call with media.
func (e *robustEnv) healthy(t *testing.T, after string) {
	t.Helper()
	select {
	case err := <-e.p.exit:
		e.p.exit <- err
		t.Fatalf("after %s: esbc exited: %v\n%s", after, err, failoverTail(e.p.logs(), 40))
	default:
	}
	for _, tc := range []struct{ key, transport string }{{"lan/udp", "UDP"}, {"lan/tcp", "TCP"}, {"wan/tls", "TLS"}} {
		if res := serviceOptions(t, e.p.addr(tc.key), tc.transport, e.roots); res.StatusCode != 200 {
			t.Fatalf("after %s: OPTIONS over %s: %s", after, tc.transport, res.StartLine())
		}
	}
	c, err := e.pbx.call(robustLive)
	if err != nil {
		t.Fatalf("after %s: good call failed: %v\n%s", after, err, failoverTail(e.p.logs(), 30))
	}
	mediaOK(t, "good call after "+after, c)
	if err := c.hangup(); err != nil {
		t.Fatalf("after %s: good call's BYE: %v", after, err)
	}
}

// settle waits (bounded) until esbc's goroutines are back near the
// baseline, and checks that resident memory did not grow without bound.
// Tolerances: 15 goroutines (timers and transactions of the last call
// still ending), 48 MiB of RSS (Go returns memory to the OS lazily).
func (e *robustEnv) settle(t *testing.T, after string) {
	t.Helper()
	var g float64
	ok := failoverPoll(40*time.Second, func() bool {
		g = e.metric(t, "go_goroutines")
		return g <= e.base.goroutines+15
	})
	rss := e.metric(t, "process_resident_memory_bytes")
	t.Logf("after %s: %v goroutines (baseline %v), RSS %.1f MiB (baseline %.1f MiB)",
		after, g, e.base.goroutines, rss/(1<<20), e.base.rss/(1<<20))
	if !ok {
		t.Errorf("after %s: %v goroutines 40 s later, baseline %v: leak", after, g, e.base.goroutines)
	}
	if rss > e.base.rss+48<<20 {
		t.Errorf("after %s: RSS %.1f MiB, baseline %.1f MiB", after, rss/(1<<20), e.base.rss/(1<<20))
	}
}

// robustSDP is an audio offer from the PBX with the given payload types.
func robustSDP(port int, rtpmaps ...string) []byte {
	pts := make([]string, 0, len(rtpmaps))
	lines := ""
	for _, m := range rtpmaps {
		pt, _, _ := strings.Cut(m, " ")
		pts = append(pts, pt)
		lines += "a=rtpmap:" + m + "\r\n"
	}
	return []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/AVP " + strings.Join(pts, " ") + "\r\n" + lines + "a=sendrecv\r\n")
}

// invite places a call from the PBX with body as the offer and returns the
// final status code it got (a 2xx is acknowledged and hung up), bounded
// by 40 s: a hang is a failure the caller reports.
func (e *robustEnv) invite(t *testing.T, number string, body []byte) (int, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	uri := e.pbx.esbc
	uri.User = number
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "200", Host: "127.0.0.1"},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}}
	start := time.Now()
	s, err := e.pbx.dcc.Invite(ctx, uri, body, from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatalf("INVITE %s: %v", number, err)
	}
	defer s.Close()
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{})
	took := time.Since(start)
	if err == nil {
		_ = s.Ack(ctx)
		_ = s.Bye(ctx)
		return s.InviteResponse.StatusCode, took
	}
	if code := robustStatus(err); code != 0 {
		return code, took
	}
	t.Fatalf("INVITE %s: no final answer after %s: %v\n%s", number, took.Round(time.Millisecond), err, failoverTail(e.p.logs(), 30))
	return 0, took
}

// robustStatus is the status code of the final non-2xx response in a
// sipgo dialog error, or 0 when err carries none (timeout, transport).
func robustStatus(err error) int {
	var de *sipgo.ErrDialogResponse
	var dv sipgo.ErrDialogResponse
	switch {
	case errors.As(err, &de):
		return de.Res.StatusCode
	case errors.As(err, &dv):
		return dv.Res.StatusCode
	}
	return 0
}

// robustDial opens a TCP connection from local IP src (bounded dial).
func robustDial(t *testing.T, src, dst string) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", dst)
}

// robustDrain reads what esbc sends back on c until it closes the
// connection or d passes; it returns the bytes and whether esbc closed.
func robustDrain(c net.Conn, d time.Duration) ([]byte, bool) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(io.LimitReader(c, 1<<16))
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	return b, !timeout
}

// robustWithout removes the header lines named h (case-insensitive) from
// a raw SIP message.
func robustWithout(msg []byte, h string) []byte {
	var out []string
	for _, l := range strings.Split(string(msg), "\r\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), h) {
			continue
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\r\n"))
}

// robustGarbage is n pseudo-random inputs: random bytes, and SIP-shaped
// garbage that gets further into the parser.
func robustGarbage(r *rand.Rand, n int) [][]byte {
	shaped := []string{
		"\r\n\r\n",
		"INVITE\r\n\r\n",
		"INVITE sip: SIP/2.0\r\n\r\n",
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.7:9;branch=z9hG4bKstray\r\nCSeq: 1 INVITE\r\nCall-ID: stray\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nContent-Length: 0\r\n\r\n",
		"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: -1\r\n\r\n",
		"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"OPTIONS sip:127.0.0.1 SIP/7.0\r\nVia: SIP/2.0/UDP 127.0.0.7:9;branch=z9hG4bK1\r\n\r\n",
		"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: \x00\x01\x02\r\nCSeq: x\r\n\r\n",
		"INVITE sip:1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.7:9;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: g\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 20\r\n\r\nv=0\r\nm=audio x\r\n",
		"OPTIONS sip:127.0.0.1 SIP/2.0\r\n" + strings.Repeat("X-H: v\r\n", 300) + "\r\n",
		"OPTIONS sip:" + strings.Repeat("a", 3000) + " SIP/2.0\r\n\r\n",
	}
	var out [][]byte
	for i := range n {
		if i%3 == 0 {
			out = append(out, []byte(shaped[(i/3)%len(shaped)]))
			continue
		}
		b := make([]byte, 1+r.IntN(1400))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		out = append(out, b)
	}
	return out
}

// robustAsk sends msg over UDP from c to addr and returns the status line
// of the answer, or "" when none came within d.
func robustAsk(t *testing.T, c *net.UDPConn, addr string, msg []byte, d time.Duration) string {
	t.Helper()
	dst, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteTo(msg, dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line
}

func TestRobustBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	e := newRobustEnv(t)
	e.healthy(t, "start") // warm-up: the first call allocates pools and caches
	if !failoverPoll(10*time.Second, func() bool { return len(e.p.get(t, "/api/v1/calls")) > 0 && e.metric(t, "go_goroutines") > 0 }) {
		t.Fatal("no metrics")
	}
	e.base.goroutines = e.metric(t, "go_goroutines")
	e.base.rss = e.metric(t, "process_resident_memory_bytes")
	r := rand.New(rand.NewPCG(1, 2))

	t.Run("garbage over UDP", func(t *testing.T) {
		c := secUDP(t, "127.0.0.7")
		inputs := robustGarbage(r, 300)
		for _, key := range []string{"lan/udp", "wan/udp"} {
			dst, _ := net.ResolveUDPAddr("udp", e.p.addr(key))
			for _, b := range inputs {
				if _, err := c.WriteTo(b, dst); err != nil {
					t.Fatal(err)
				}
			}
		}
		e.healthy(t, "600 garbage datagrams")
		e.settle(t, "garbage over UDP")
	})

	t.Run("garbage over TCP", func(t *testing.T) {
		inputs := robustGarbage(r, 40)
		for _, key := range []string{"lan/tcp", "wan/tcp"} {
			for i, b := range inputs {
				c, err := robustDial(t, "127.0.0.7", e.p.addr(key))
				if err != nil {
					t.Fatalf("%s: connection %d: %v", key, i, err)
				}
				_, _ = c.Write(b)
				_, _ = c.Write([]byte("\r\n\r\n"))
				// esbc may close the connection or wait for more: both are
				// fine; what it sends must be SIP or the CRLF keep-alive
				// pong (RFC 5626 §4.4.1) to the CRLFCRLF above.
				out, _ := robustDrain(c, 300*time.Millisecond)
				c.Close()
				if out = bytes.TrimLeft(out, "\r\n"); len(out) > 0 && !bytes.HasPrefix(out, []byte("SIP/2.0 ")) {
					t.Errorf("%s: answer to garbage is not SIP: %q", key, out)
				}
			}
		}
		e.healthy(t, "80 TCP connections of garbage")
		e.settle(t, "garbage over TCP")
	})

	t.Run("half-open and idle TCP", func(t *testing.T) {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		limitBefore := e.metric(t, `esbc_acl_dropped_total{reason="conn_limit",side="lan"}`) +
			e.metric(t, `esbc_acl_dropped_total{reason="conn_limit",side="wan"}`)
		half := []byte("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.8:9;branch=z9hG4bKhalf\r\nContent-Length: 100\r\n")
		for _, key := range []string{"lan/tcp", "wan/tcp"} {
			for range 20 { // half a message, then silence
				c, err := robustDial(t, "127.0.0.8", e.p.addr(key))
				if err != nil {
					t.Fatal(err)
				}
				_, _ = c.Write(half)
				conns = append(conns, c)
			}
			for range 40 { // nothing at all; the per-source limit (32) closes some at accept
				c, err := robustDial(t, "127.0.0.9", e.p.addr(key))
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
		}
		// Others are served while those connections hang; the idle source
		// over its connection limit (32, both sides together) is refused
		// at accept.
		e.healthy(t, fmt.Sprintf("%d half-open and idle TCP connections (still open)", len(conns)))
		limited := func() float64 {
			return e.metric(t, `esbc_acl_dropped_total{reason="conn_limit",side="lan"}`) +
				e.metric(t, `esbc_acl_dropped_total{reason="conn_limit",side="wan"}`)
		}
		if !failoverPoll(10*time.Second, func() bool { return limited() >= limitBefore+80-32 }) {
			t.Errorf("conn_limit drops %v → %v, want at least +%d (80 connections from one source, limit 32)",
				limitBefore, limited(), 80-32)
		}
		for _, c := range conns {
			c.Close()
		}
		conns = nil
		e.settle(t, "half-open and idle TCP closed")
	})

	t.Run("broken TLS handshakes", func(t *testing.T) {
		addr := e.p.addr("wan/tls")
		before := e.metric(t, `esbc_tls_handshake_failures_total{reason="version",side="wan"}`)
		for i, b := range robustGarbage(r, 30) {
			c, err := robustDial(t, "127.0.0.7", addr)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			_, _ = c.Write(b)
			robustDrain(c, 300*time.Millisecond)
			c.Close()
		}
		for _, v := range []uint16{cryptotls.VersionTLS10, cryptotls.VersionTLS11} {
			d := &cryptotls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
				Config: &cryptotls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v}}
			if c, err := d.Dial("tcp", addr); err == nil {
				c.Close()
				t.Errorf("TLS version %#x accepted (min_version 1.2)", v)
			}
		}
		// A ClientHello cut in half, then silence; bounded count.
		var hangs []net.Conn
		for range 10 {
			c, err := robustDial(t, "127.0.0.10", addr)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03})
			hangs = append(hangs, c)
		}
		// Handshake completed, then garbage inside TLS.
		for i, b := range robustGarbage(r, 12) {
			d := &cryptotls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 13)}},
				Config: &cryptotls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"}}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("TLS connection %d: %v", i, err)
			}
			_, _ = c.Write(b)
			_, _ = c.Write([]byte("\r\n\r\n"))
			out, _ := robustDrain(c, 300*time.Millisecond)
			c.Close()
			if out = bytes.TrimLeft(out, "\r\n"); len(out) > 0 && !bytes.HasPrefix(out, []byte("SIP/2.0 ")) {
				t.Errorf("answer to garbage over TLS is not SIP: %q", out)
			}
		}
		e.healthy(t, "TLS garbage, old versions, 10 stalled handshakes, garbage inside TLS")
		for _, c := range hangs {
			c.Close()
		}
		if v := e.metric(t, `esbc_tls_handshake_failures_total{reason="version",side="wan"}`); v < before+2 {
			t.Errorf("handshake failures (version) %v → %v, want +2", before, v)
		}
		e.settle(t, "broken TLS handshakes")
	})

	t.Run("oversize message", func(t *testing.T) {
		c := secUDP(t, "127.0.0.1")
		big := secRawOptions(c.LocalAddr().String(), "X-Pad: "+strings.Repeat("p", 2*robustMaxMessage))
		got := robustAsk(t, c, e.p.addr("lan/udp"), big, 2*time.Second)
		t.Logf("oversize UDP OPTIONS (%d bytes): %q", len(big), got)
		if got != "SIP/2.0 513 Message Too Large" && !strings.HasPrefix(got, "SIP/2.0 400 ") {
			t.Errorf("oversize UDP OPTIONS: answered %q, want 513 Message Too Large (RFC 3261 §21.5.13) or 400", got)
		}
		// Over TCP: a request whose body is larger than the limit, and a
		// header section that never ends.
		for _, msg := range [][]byte{
			append(robustWithout(secRawOptions("127.0.0.1:9"), "Content-Length"),
				[]byte(fmt.Sprintf("Content-Length: %d\r\n\r\n%s", 3*robustMaxMessage, strings.Repeat("b", 3*robustMaxMessage)))...),
			[]byte("OPTIONS sip:127.0.0.1 SIP/2.0\r\n" + strings.Repeat("X-Never-Ends: "+strings.Repeat("n", 100)+"\r\n", 700)),
		} {
			tc, err := robustDial(t, "127.0.0.1", e.p.addr("lan/tcp"))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = tc.Write(msg)
			out, closed := robustDrain(tc, 3*time.Second)
			tc.Close()
			line, _, _ := strings.Cut(string(out), "\r\n")
			t.Logf("oversize over TCP (%d bytes): answer %q, closed %v", len(msg), line, closed)
			if strings.HasPrefix(line, "SIP/2.0 2") {
				t.Errorf("oversize message over TCP answered %q", line)
			}
		}
		e.healthy(t, "oversize messages")
		e.settle(t, "oversize messages")
	})

	t.Run("missing mandatory header", func(t *testing.T) {
		// Routable (Via and CSeq present): 400 naming the header.
		c := secUDP(t, "127.0.0.1")
		for _, h := range []string{"Call-ID", "From", "To"} {
			msg := robustWithout(secRawOptions(c.LocalAddr().String()), h)
			if got := robustAsk(t, c, e.p.addr("lan/udp"), msg, 2*time.Second); got != "SIP/2.0 400 Missing "+h {
				t.Errorf("OPTIONS without %s: answered %q, want 400 Missing %s", h, got, h)
			}
		}
		// Without Via or CSeq the client could not match a response to its
		// transaction (acl/message.go routable): dropped and counted.
		before := e.metric(t, `esbc_acl_dropped_total{reason="malformed",side="lan"}`)
		for _, h := range []string{"Via", "CSeq"} {
			msg := robustWithout(secRawOptions(c.LocalAddr().String()), h)
			if got := robustAsk(t, c, e.p.addr("lan/udp"), msg, 300*time.Millisecond); got != "" {
				t.Errorf("OPTIONS without %s (no response can be routed): answered %q", h, got)
			}
		}
		if v := e.metric(t, `esbc_acl_dropped_total{reason="malformed",side="lan"}`); v < before+2 {
			t.Errorf("dropped malformed requests: %v → %v, want +2", before, v)
		}
		e.healthy(t, "requests missing mandatory headers")
	})

	t.Run("stray in-dialog requests", func(t *testing.T) {
		c := secUDP(t, "127.0.0.1")
		for _, m := range []string{"BYE", "INFO", "UPDATE", "CANCEL"} {
			msg := strings.Replace(string(secRawOptions(c.LocalAddr().String())), "OPTIONS", m, 2)
			if m != "CANCEL" {
				msg = strings.Replace(msg, "To: <sip:127.0.0.1>", "To: <sip:127.0.0.1>;tag=nosuchdialog", 1)
			}
			if got := robustAsk(t, c, e.p.addr("lan/udp"), []byte(msg), 2*time.Second); !strings.HasPrefix(got, "SIP/2.0 481") {
				t.Errorf("%s for no dialog: answered %q, want 481", m, got)
			}
		}
		ack := strings.Replace(string(secRawOptions(c.LocalAddr().String())), "OPTIONS", "ACK", 2)
		if got := robustAsk(t, c, e.p.addr("lan/udp"), []byte(ack), 300*time.Millisecond); got != "" {
			t.Errorf("stray ACK answered %q", got)
		}
		e.healthy(t, "stray in-dialog requests")
	})

	t.Run("admin API bad input", func(t *testing.T) {
		base := "http://" + e.p.addr("admin")
		for _, tc := range []struct {
			method, path, body string
			want               int
		}{
			{"POST", "/api/v1/config", `{"log":`, http.StatusMethodNotAllowed},
			{"PUT", "/api/v1/config", "\x00\xff", http.StatusMethodNotAllowed},
			{"DELETE", "/metrics", "", http.StatusMethodNotAllowed},
			{"GET", "/api/v1/nope", "", http.StatusNotFound},
			{"GET", "/api/v2/config", "", http.StatusNotFound},
			{"POST", "/api/v1/calls", `{"kill":"all"}`, http.StatusMethodNotAllowed},
			{"POST", "/api/v1/registrations", `[`, http.StatusMethodNotAllowed},
			{"DELETE", "/api/v1/bans/not-an-address", "", http.StatusBadRequest},
			{"POST", "/api/v1/bans/127.0.0.66?for=soon", "", http.StatusBadRequest},
			{"POST", "/api/v1/bans/127.0.0.66?for=-1s", "", http.StatusBadRequest},
			{"DELETE", "/api/v1/bans/127.0.0.66", "", http.StatusNotFound},
			{"PATCH", "/api/v1/bans/127.0.0.66", `{}`, http.StatusMethodNotAllowed},
		} {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.path, err)
			}
			res.Body.Close()
			if res.StatusCode != tc.want {
				t.Errorf("%s %s: %d, want %d", tc.method, tc.path, res.StatusCode, tc.want)
			}
		}
		// A header section that never ends (slowloris), bounded: the
		// server must not wait for it forever.
		c, err := robustDial(t, "127.0.0.1", e.p.addr("admin"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n"))
		_, closed := robustDrain(c, 15*time.Second)
		c.Close()
		if !closed {
			t.Errorf("admin API kept a stalled request open 15 s")
		}
		if got := e.p.get(t, "/healthz"); got != "ok\n" {
			t.Errorf("/healthz = %q", got)
		}
		e.healthy(t, "bad admin requests")
	})

	t.Run("call failures", func(t *testing.T) {
		for _, tc := range []struct {
			name, number string
			body         []byte
			want         []int
		}{
			{"no route", robustNoRoute, failoverSDP("127.0.0.1", 40000), []int{404}},
			{"emergency toward emergency:false", robustEmergency, failoverSDP("127.0.0.1", 40000), []int{403}},
			{"no common codec", robustLive, robustSDP(40000, "9 G722/8000", "3 GSM/8000"), []int{488}},
			{"unparseable SDP", robustLive, []byte("v=0\r\nm=audio notaport RTP/AVP\r\nc=IN IP4\r\n\x00\xff"), []int{400, 488}},
			{"SDP without audio", robustLive, []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"), []int{488}},
		} {
			code, took := e.invite(t, tc.number, tc.body)
			t.Logf("%s (%s): %d after %s", tc.name, tc.number, code, took.Round(time.Millisecond))
			ok := false
			for _, w := range tc.want {
				ok = ok || code == w
			}
			if !ok {
				t.Errorf("%s: PBX got %d, want one of %v", tc.name, code, tc.want)
			}
		}
		_, answered, _ := e.trunk.counts()
		e.healthy(t, "rejected calls")
		if _, a, _ := e.trunk.counts(); a != answered+1 {
			t.Errorf("the live trunk answered %d calls for one good call", a-answered)
		}
		e.settle(t, "call failures")
	})

	// A trunk with nothing listening: the PBX gets a clean failure. It
	// should come within about failover_timeout (1 s here) – the target is
	// known down from its OPTIONS by then – and well before the PBX's own
	// INVITE Timer B (32 s) would fire.
	//
	// The last (here: only) target keeps its failover_timeout, so the
	// PBX gets 503 within failover_timeout plus a margin, not after the
	// 32 s of Timer B (fixed in b2bua setup(); asserted).
	//
	// Meanwhile 20 half-open TCP connections per SIP listener (half a
	// message, then silence) must be closed by esbc itself after the
	// acl's message timeout (30 s), counted as slow_message.
	t.Run("dead trunk and slow half-open TCP", func(t *testing.T) {
		if !failoverPoll(15*time.Second, func() bool {
			return strings.Contains(e.p.logs(), `"msg":"trunk target down","trunk":"dead"`)
		}) {
			t.Logf("the dead trunk's target was not reported down by its OPTIONS")
		}
		half := []byte("INVITE sip:1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.11:9;branch=z9hG4bKslow\r\nFrom: <sip:")
		slowBefore := e.metric(t, `esbc_acl_dropped_total{reason="slow_message",side="lan"}`) +
			e.metric(t, `esbc_acl_dropped_total{reason="slow_message",side="wan"}`)
		opened := time.Now()
		var slow []net.Conn
		defer func() {
			for _, c := range slow {
				c.Close()
			}
		}()
		// One source per listener: the per-source connection limit (32)
		// spans both sides.
		for key, src := range map[string]string{"lan/tcp": "127.0.0.11", "wan/tcp": "127.0.0.12"} {
			for range 20 {
				c, err := robustDial(t, src, e.p.addr(key))
				if err != nil {
					t.Fatal(err)
				}
				_, _ = c.Write(half)
				slow = append(slow, c)
			}
		}

		code, took := e.invite(t, robustDead, failoverSDP("127.0.0.1", 40000))
		t.Logf("dead trunk (%s): %d after %s", robustDead, code, took.Round(time.Millisecond))
		if code != 503 && code != 408 && code != 480 {
			t.Errorf("dead trunk: PBX got %d, want 503, 408 or 480", code)
		}
		if bound := time.Second + 5*time.Second; took > bound {
			t.Errorf("dead trunk answered after %s, want within failover_timeout + 5 s (%s)", took.Round(time.Millisecond), bound)
		}

		open := 0
		for _, c := range slow {
			if _, closed := robustDrain(c, time.Until(opened.Add(45*time.Second))); !closed {
				open++
			}
		}
		slowAfter := e.metric(t, `esbc_acl_dropped_total{reason="slow_message",side="lan"}`) +
			e.metric(t, `esbc_acl_dropped_total{reason="slow_message",side="wan"}`)
		t.Logf("half-open TCP: %d of %d still open 45 s after their first byte; slow_message drops %v → %v",
			open, len(slow), slowBefore, slowAfter)
		if open > 0 {
			t.Errorf("%d half-open TCP connections still open 45 s after their first byte (message timeout 30 s)", open)
		}
		if slowAfter < slowBefore+float64(len(slow)) {
			t.Errorf("slow_message drops %v → %v, want +%d", slowBefore, slowAfter, len(slow))
		}
		e.healthy(t, "a call to a dead trunk and slow TCP peers")
	})

	e.settle(t, "every case")
	if strings.Contains(e.p.logs(), `"level":"panic"`) || strings.Contains(e.p.logs(), "panic:") {
		t.Errorf("esbc logged a panic:\n%s", failoverTail(e.p.logs(), 40))
	}
}

// robustLocalIP is an IPv4 address of this machine that is not loopback,
// or "" when there is none.
func robustLocalIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// robustAdminConfig: the admin API on a non-loopback address of this
// machine with a bearer token file ("" = none).
func robustAdminConfig(ip, tokenFile string) []byte {
	return []byte(fmt.Sprintf(`
log: { level: info, format: json }
admin: { listen: "%s:0", token_file: "%s" }
shutdown_grace: 2s
lan: { listen: ["udp://127.0.0.1:0"], advertise: 127.0.0.1 }
wan: { listen: ["udp://127.0.0.1:0"], advertise: 127.0.0.1 }
cdr: { file: "" }
`, ip, tokenFile))
}

// TestRobustAdminToken: /api/ from a client that is not on loopback needs
// the bearer token of admin.token_file (read per request), and is refused
// outright with no token file; /healthz and /metrics stay open.
func TestRobustAdminToken(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	ip := robustLocalIP()
	if ip == "" {
		t.Skip("no non-loopback IPv4 address on this machine: the admin token cannot be tested from off loopback")
	}
	failoverLeakCheck(t)
	dir := t.TempDir()
	bin := serviceBuild(t, dir)
	token := filepath.Join(dir, "token")
	serviceWrite(t, token, []byte("s3cr3t-token\n"))
	cfg := filepath.Join(dir, "esbc.yaml")
	serviceWrite(t, cfg, robustAdminConfig(ip, token))
	p := serviceStart(t, bin, cfg)
	defer func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exit:
		case <-time.After(20 * time.Second):
			t.Errorf("esbc did not stop 20 s after SIGTERM")
		}
	}()
	base := "http://" + p.addr("admin")
	if !strings.HasPrefix(p.addr("admin"), ip+":") {
		t.Fatalf("admin bound at %s, want %s", p.addr("admin"), ip)
	}
	do := func(method, path, auth string) (int, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, res.Header
	}
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 200},
		{"GET", "/api/v1/config", "", 401},
		{"GET", "/api/v1/config", "Bearer wrong", 401},
		{"GET", "/api/v1/config", "Bearer ", 401},
		{"GET", "/api/v1/config", "Basic czNjcjN0LXRva2VuOg==", 401},
		{"GET", "/api/v1/config", "Bearer s3cr3t-token-and-more", 401},
		{"GET", "/api/v1/config", "Bearer s3cr3t-toke", 401},
		{"GET", "/api/v1/config", "Bearer " + strings.Repeat("x", 64<<10), 401},
		{"DELETE", "/api/v1/bans/192.0.2.99", "", 401},
		{"POST", "/api/v1/bans/192.0.2.99", "Bearer wrong", 401},
		{"GET", "/api/v1/config", "Bearer s3cr3t-token", 200},
		{"GET", "/api/v1/status", "Bearer s3cr3t-token", 200},
	} {
		code, h := do(tc.method, tc.path, tc.auth)
		if code != tc.want {
			t.Errorf("%s %s (Authorization %.30q): %d, want %d", tc.method, tc.path, tc.auth, code, tc.want)
		}
		if code == 401 && h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", tc.method, tc.path)
		}
	}

	// The token is read per request: a rotated token takes effect at once.
	serviceWrite(t, token, []byte("rotated\n"))
	if !failoverPoll(10*time.Second, func() bool { c, _ := do("GET", "/api/v1/config", "Bearer rotated"); return c == 200 }) {
		t.Errorf("rotated token not accepted")
	}
	if c, _ := do("GET", "/api/v1/config", "Bearer s3cr3t-token"); c != 401 {
		t.Errorf("old token after rotation: %d, want 401", c)
	}

	// No token file (a hot key): /api/ is loopback-only, 403 from here.
	reloadApply(t, p, "reload without token_file", func() { serviceWrite(t, cfg, robustAdminConfig(ip, "")) })
	for _, auth := range []string{"", "Bearer rotated"} {
		if c, _ := do("GET", "/api/v1/config", auth); c != 403 {
			t.Errorf("no token file, Authorization %q: %d, want 403", auth, c)
		}
	}
	if c, _ := do("GET", "/healthz", ""); c != 200 {
		t.Errorf("/healthz: %d", c)
	}
}

// TestRobustCallAtReady: once esbc says "esbc ready" (and sends READY=1 to
// systemd) a call must go through. esbc is started several times and the
// PBX calls at once.
//
// Was a gap: app.serveSide (cmd/esbc/internal/app/run.go) handed
// the sockets to sipgo in goroutines and "esbc ready" follows at once; until
// sipgo's transport layer has registered the UDP listener, a client
// transaction with WithClientConnectionAddr(listener) (calls.go udpClient:
// the trunk's OPTIONS probe, leg B's INVITE) tries to bind a new socket on
// the listener's address and fails ("listen udp 127.0.0.1:P: bind: address
// already in use"): the target is marked down and the call gets 503. About
// every other start here. Fixed: app waits until sipgo holds the UDP
// listeners before it says ready and starts the trunks (asserted).
func TestRobustCallAtReady(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	r := newReloadRig(t)
	pbx, bin, cfg, rn := r.pbx, r.bin, r.cfg, r.rn
	serviceWrite(t, cfg, reloadConfig(reloadVariant{k: 0, level: "info"}, rn))
	const starts = 6
	var failed []string
	for i := range starts {
		p := serviceStart(t, bin, cfg)
		pbx.dialTo(p.addr("lan/udp"))
		c, err := pbx.call(reloadDialled)
		if err != nil {
			code := robustStatus(err)
			if code != 503 {
				t.Errorf("start %d: call at ready failed without a clean 503: %v", i, err)
			}
			reason := ""
			for _, l := range strings.Split(p.logs(), "\n") {
				if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"msg":"call failed"`) {
					reason = l
					break
				}
			}
			failed = append(failed, fmt.Sprintf("start %d: %d; esbc: %s", i, code, reason))
		} else if err := c.hangup(); err != nil {
			t.Errorf("start %d: BYE: %v", i, err)
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.exit:
			if err != nil {
				t.Errorf("start %d: esbc exit after SIGTERM: %v", i, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("start %d: esbc did not stop 20 s after SIGTERM", i)
		}
	}
	t.Logf("%d of %d calls placed at \"esbc ready\" failed", len(failed), starts)
	if len(failed) > 0 {
		t.Error("calls placed at \"esbc ready\" failed:\n" + strings.Join(failed, "\n"))
	}
}

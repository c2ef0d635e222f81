package acl

import (
	"bytes"
	"net/netip"
	"testing"
)

func benchGuard(b *testing.B) *Guard {
	b.Helper()
	g, err := New(Config{
		LAN:           Rules{Allow: pfx("10.0.0.0/8", "127.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"), Deny: pfx("10.66.0.0/16")},
		RateLimit:     RateLimit{PerIP: 1e9, Burst: 1 << 30},
		UserAgentDeny: []string{"friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent"},
	}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkAdmit: ACL + ban + token bucket for one source.
func BenchmarkAdmit(b *testing.B) {
	g := benchGuard(b)
	a := netip.MustParseAddr("10.0.0.10")
	b.ReportAllocs()
	for b.Loop() {
		if g.Admit(LAN, a) != ReasonNone {
			b.Fatal("refused")
		}
	}
}

// BenchmarkAdmitParallel: many sources from all cores (sharded table).
func BenchmarkAdmitParallel(b *testing.B) {
	g := benchGuard(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var i uint32
		for pb.Next() {
			i++
			g.Admit(LAN, netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
		}
	})
}

// BenchmarkAdmitBanned: the cost of a flood datagram from a banned source.
func BenchmarkAdmitBanned(b *testing.B) {
	g := benchGuard(b)
	a := netip.MustParseAddr("10.0.0.66")
	g.Ban(a, 1<<40)
	b.ReportAllocs()
	for b.Loop() {
		if g.Admit(LAN, a) != ReasonBanned {
			b.Fatal("not banned")
		}
	}
}

// BenchmarkCheckDatagram: the message checks on a typical INVITE with SDP.
func BenchmarkCheckDatagram(b *testing.B) {
	g := benchGuard(b)
	p := g.pol.Load()
	body := "v=0\r\no=- 1 1 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
	msg := invite("Contact: <sip:200@10.0.0.10:5060>", "User-Agent: Asterisk PBX 20.5.0", "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY",
		"Supported: replaces, timer", "Content-Type: application/sdp", "Content-Length: 167")
	msg = append(msg, body...)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if act, r, _, _ := p.checkDatagram(LAN, msg, false); act != actPass {
			b.Fatal(r)
		}
	}
}

// BenchmarkConnFraming: framing and checks of a pipelined TCP stream.
func BenchmarkConnFraming(b *testing.B) {
	g := benchGuard(b)
	one := invite("Content-Length: 0")
	stream := make([]byte, 0, len(one)*64)
	for range 64 {
		stream = append(stream, one...)
	}
	buf := make([]byte, 32768)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		mc := &memConn{r: bytes.NewReader(stream), step: 4096}
		c := g.WrapConn(LAN, mc)
		got := 0
		for {
			n, err := c.Read(buf)
			got += n
			if err != nil {
				break
			}
		}
		if got != len(stream) {
			b.Fatalf("framed %d of %d bytes", got, len(stream))
		}
	}
}

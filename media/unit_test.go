package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esbc/esbc/media/sdp"
)

func TestRxStatsLossJitter(t *testing.T) {
	var r rxStats
	// 100 packets, every 10th lost, perfectly timed: loss 10, jitter 0.
	for i := 0; i < 100; i++ {
		if i%10 == 5 {
			continue
		}
		r.update(uint16(65500+i), uint32(i*160), 1, int64(i*160)+1000)
	}
	if got := r.totalLost(); got != 10 {
		t.Fatalf("lost %d, want 10", got)
	}
	if r.jitter != 0 {
		t.Fatalf("jitter %v", r.jitter)
	}
	// A packet 80 units late moves jitter by 80/16 (RFC 3550 A.8).
	r.update(uint16(65500+100-65536), 100*160, 1, 100*160+1000+80)
	if r.jitter != 5 {
		t.Fatalf("jitter %v, want 5", r.jitter)
	}
	// SSRC change: a new source; losses of the old one are kept.
	r.update(7, 0, 2, 0)
	r.update(9, 320, 2, 320)
	if got := r.totalLost(); got != 11 {
		t.Fatalf("lost after SSRC change %d, want 11", got)
	}
	// A sequence jump is confirmed by a second packet, then counted afresh.
	r.update(30000, 640, 2, 640)
	r.update(30001, 800, 2, 800)
	r.update(30002, 960, 2, 960)
	if got := r.totalLost(); got != 11 {
		t.Fatalf("lost after a jump %d, want 11", got)
	}
}

func TestRTCPRoundTrip(t *testing.T) {
	var toward, from endpointStats
	t0 := time.Unix(1_700_000_000, 0)
	sr := make([]byte, 28)
	sr[0], sr[1] = 0x80, 200
	binary.BigEndian.PutUint16(sr[2:], 6)
	binary.BigEndian.PutUint32(sr[10:], 0xCAFEBABE) // NTP middle 32 bits
	rtcpScan(sr, t0, &from, &toward)
	// 150 ms later the peer reports it, having held the SR for 50 ms.
	rr := make([]byte, 32)
	rr[0], rr[1] = 0x81, 201
	binary.BigEndian.PutUint16(rr[2:], 7)
	binary.BigEndian.PutUint32(rr[8+16:], 0xCAFEBABE)
	binary.BigEndian.PutUint32(rr[8+20:], 65536*50/1000)
	rtcpScan(rr, t0.Add(150*time.Millisecond), &toward, nil)
	got := usToMs(toward.rttUs.Load())
	if got < 99 || got > 101 {
		t.Fatalf("rtt %v ms, want 100", got)
	}
	// Garbage never panics.
	rtcpScan([]byte{0x80, 200, 0xff, 0xff}, t0, &from, &toward)
	rtcpScan([]byte{0x81, 201, 0, 1, 0, 0, 0, 0}, t0, &from, &toward)
}

func TestG711Tables(t *testing.T) {
	// Silence and the extremes map onto each other (G.711 Tables 1a/1b).
	if ulawToAlaw[0xFF] != 0xD5 || alawToUlaw[0xD5] != 0xFE { // A-law has no zero code: +8 → µ 0xFE (Sun g711.c)
		t.Fatalf("zero: %#x %#x", ulawToAlaw[0xFF], alawToUlaw[0xD5])
	}
	if ulawToAlaw[0x80] != 0xAA || ulawToAlaw[0x00] != 0x2A {
		t.Fatalf("extremes: %#x %#x", ulawToAlaw[0x80], ulawToAlaw[0x00])
	}
	// Monotonic with the linear value, sign kept.
	for i := 0; i < 256; i++ {
		u := ulawToLinear(byte(i))
		a := alawToLinear(ulawToAlaw[i])
		if (u > 0 && a < 0) || (u < 0 && a > 0) {
			t.Fatalf("sign flip at %#x: %d → %d", i, u, a)
		}
		if d := int(u) - int(a); d > 1100 || d < -1100 {
			t.Fatalf("µ %#x (%d) → A %#x (%d)", i, u, ulawToAlaw[i], a)
		}
	}
}

func TestPoolQuarantineOrder(t *testing.T) {
	p, err := newPool(20000, 20005)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a, _ := p.get(now)
	b, _ := p.get(now)
	c, _ := p.get(now)
	if a != 20000 || b != 20002 || c != 20004 {
		t.Fatalf("%d %d %d", a, b, c)
	}
	if _, err := p.get(now); !errors.Is(err, ErrPortsExhausted) {
		t.Fatal(err)
	}
	p.put(b, now, time.Second)
	if _, err := p.get(now.Add(999 * time.Millisecond)); !errors.Is(err, ErrPortsExhausted) {
		t.Fatal("port reused during quarantine")
	}
	if got, _ := p.get(now.Add(time.Second)); got != b {
		t.Fatalf("got %d", got)
	}
	for _, bad := range [][2]int{{80, 2000}, {3000, 2000}, {30001, 30001}} {
		if _, err := newPool(bad[0], bad[1]); err == nil {
			t.Errorf("range %v accepted", bad)
		}
	}
}

func TestDSCPMarked(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.DSCP = 46 })
	c := setupCall(t, e, 1, false)
	tos := func() int {
		rc, _ := c.s.streams[0].ep[1].rtp.SyscallConn()
		var v int
		_ = rc.Control(func(fd uintptr) { v, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS) })
		return v
	}
	if got := tos(); got != 46<<2 {
		t.Fatalf("IP_TOS %#x, want %#x", got, 46<<2)
	}
	cfg := *e.config()
	cfg.DSCP = 34
	e.SetConfig(cfg) // hot
	if got := tos(); got != 34<<2 {
		t.Fatalf("after SetConfig IP_TOS %#x, want %#x", got, 34<<2)
	}
}

func TestFarEndNATLatch(t *testing.T) {
	// The trunk's SDP names a private address; media comes from the SIP
	// source IP (LatchAddr), here 127.0.0.1 from another port.
	e, _ := newEngine(t, nil)
	wan := wanLeg
	wan.LatchAddr = lo
	s, _ := e.NewSession("nat", lanLeg, wan, nil)
	defer s.Close()
	pbx, trunk := newPeer(t), newPeer(t)
	out, err := s.Offer(0, offerSDP(pbx.port(), 0, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	ours := cryptoByTag(t, mustParse(t, out).Media[0], 1)
	theirs, _ := sdp.NewCrypto(1, ours.Suite)
	ans := strings.ReplaceAll(string(offerSDP(4000, 0, "RTP/SAVP", "a=crypto:"+theirs.String())), "127.0.0.1", "192.168.1.20")
	back, err := s.Answer(1, []byte(ans))
	if err != nil {
		t.Fatal(err)
	}
	pbx.remote, trunk.remote = esbcAddr(t, back), esbcAddr(t, out)
	trunk.enc, trunk.dec = ctxFor(t, theirs), ctxFor(t, ours)
	trunk.sendRTP([]byte("from behind NAT"), 0)
	if got := pbx.recvRTP(pbx.rtp); string(got.Payload) != "from behind NAT" {
		t.Fatalf("got %q", got.Payload)
	}
	// esbc answers to the latched address, not to 192.168.1.20:4000.
	pbx.sendRTP([]byte("back through NAT"), 0)
	if got := trunk.recvRTP(trunk.rtp); string(got.Payload) != "back through NAT" {
		t.Fatalf("got %q", got.Payload)
	}
	st := s.State().Legs[1].Streams[0]
	if int(st.Latched.Port()) != trunk.port() {
		t.Fatalf("latched %v", st.Latched)
	}
	if st.Remote.String() != "127.0.0.1:4000" {
		t.Fatalf("before latching esbc would send to %v, want the SIP source IP with the SDP port", st.Remote)
	}
}

func TestOptionalAndInsecureSDES(t *testing.T) {
	e, _ := newEngine(t, nil)
	opt := LegConfig{Name: "wan", BindAddr: lo, SRTP: SRTPOptional, SignalingSecure: true}
	insecure := LegConfig{Name: "wan", BindAddr: lo, SRTP: SRTPOptional} // UDP signalling
	for _, tc := range []struct {
		name       string
		b          LegConfig
		wantCrypto int
	}{{"optional over TLS: best-effort SDES in RTP/AVP", opt, 4}, {"optional over UDP: no keys in clear text", insecure, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := e.NewSession("o", lanLeg, tc.b, nil)
			defer s.Close()
			p := newPeer(t)
			out, err := s.Offer(0, offerSDP(p.port(), 0, "RTP/AVP"))
			if err != nil {
				t.Fatal(err)
			}
			m := mustParse(t, out).Media[0]
			if m.Proto != "RTP/AVP" || len(m.Attrs("crypto")) != tc.wantCrypto {
				t.Fatalf("offer: %s", out)
			}
			// The peer declines SRTP: plain RTP both ways.
			back, err := s.Answer(1, offerSDP(p.port()+2, 0, "RTP/AVP"))
			if err != nil {
				t.Fatal(err)
			}
			if len(mustParse(t, back).Media[0].Attrs("crypto")) != 0 {
				t.Fatalf("answer: %s", back)
			}
			if st := s.Stats(); st.Legs[1].Suite != "" {
				t.Fatalf("suite %q", st.Legs[1].Suite)
			}
		})
	}
	if _, err := e.NewSession("m", lanLeg, LegConfig{Name: "wan", BindAddr: lo, SRTP: SRTPMandatory}, nil); !errors.Is(err, ErrNotAcceptable) {
		t.Fatalf("mandatory SRTP over insecure signalling: %v", err)
	}
}

func TestAnswerWithoutOffer(t *testing.T) {
	e, _ := newEngine(t, nil)
	s, _ := e.NewSession("x", lanLeg, wanLeg, nil)
	defer s.Close()
	if _, err := s.Answer(1, offerSDP(4000, 0, "RTP/AVP")); err == nil {
		t.Fatal("answer without an offer accepted")
	}
}

func TestIPv6PlainRelay(t *testing.T) {
	v6 := netip.MustParseAddr("::1")
	probe, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skip("no IPv6 loopback here")
	}
	probe.Close()
	e, _ := newEngine(t, func(c *Config) { c.DSCP = 46 })
	a := LegConfig{Name: "lan", BindAddr: v6}
	b := LegConfig{Name: "wan", BindAddr: v6}
	s, err := e.NewSession("v6", a, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var peers, rtcps [2]*net.UDPConn
	for i := range peers {
		for _, c := range []**net.UDPConn{&peers[i], &rtcps[i]} {
			conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			*c = conn
		}
	}
	port := func(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }
	body := func(i int) []byte {
		return []byte(strings.ReplaceAll(string(offerSDP(port(peers[i]), port(rtcps[i]), "RTP/AVP")), "IN IP4 127.0.0.1", "IN IP6 ::1"))
	}
	out, err := s.Offer(0, body(0))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "c=IN IP6 ::1\r\n") || !strings.Contains(string(out), "o=- ") {
		t.Fatalf("offer: %s", out)
	}
	back, err := s.Answer(1, body(1))
	if err != nil {
		t.Fatal(err)
	}
	pkt := []byte{0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 'v', '6'}
	if _, err := peers[0].WriteToUDPAddrPort(pkt, esbcAddr(t, back)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = peers[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := peers[1].ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[12:n]) != "v6" {
		t.Fatalf("got %q %v", buf[:n], err)
	}
	// RTCP through the engine's RTCP poller, IPv6 source parsing included.
	rr := []byte{0x80, 201, 0, 1, 0, 0, 0, 7}
	lanRTCP := esbcAddr(t, back)
	lanRTCP = netip.AddrPortFrom(lanRTCP.Addr(), lanRTCP.Port()+1)
	tap := newRecordingTap()
	e.SetTap(tap)
	if _, err := rtcps[0].WriteToUDPAddrPort(rr, lanRTCP); err != nil {
		t.Fatal(err)
	}
	_ = rtcps[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err = rtcps[1].ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], rr) {
		t.Fatalf("RTCP got %x %v", buf[:n], err)
	}
	wanRTCP := esbcAddr(t, out)
	wanRTCP = netip.AddrPortFrom(wanRTCP.Addr(), wanRTCP.Port()+1)
	tap.expect(t, "lan rtcp in", "v6", addrOf(rtcps[0]), lanRTCP, rr)
	tap.expect(t, "wan rtcp out", "v6", wanRTCP, addrOf(rtcps[1]), rr)
}

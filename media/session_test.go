package media

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/esbc/esbc/media/sdp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// reoffer sends a new offer from the PBX (leg a) and has the trunk accept
// it with the key it already uses; returns the offer the trunk saw.
func (c *call) reofferFromPBX(t *testing.T, body []byte, answerDir string) *sdp.Session {
	t.Helper()
	out, err := c.s.Offer(0, body)
	if err != nil {
		t.Fatal(err)
	}
	off := mustParse(t, out)
	m := off.Media[0]
	cs := m.Attrs("crypto")
	if len(cs) != 1 {
		t.Fatalf("re-offer should keep the one key in use: %v", cs)
	}
	ours, _ := sdp.ParseCrypto(cs[0])
	theirs := c.trunk.encCrypto
	theirs.Tag = ours.Tag
	ans := offerSDP(c.trunk.port(), c.trunk.rtcpPort(), "RTP/SAVP", "a="+answerDir, "a=crypto:"+theirs.String())
	back, err := c.s.Answer(1, ans)
	if err != nil {
		t.Fatal(err)
	}
	c.answerToA = mustParse(t, back)
	return off
}

func TestHoldResume(t *testing.T) {
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, 1, false)
	exchange(t, c, "before hold")
	off := c.reofferFromPBX(t, offerSDP(c.pbx.port(), 0, "RTP/AVP", "a=sendonly"), "recvonly")
	if d := off.Media[0].Direction(); d != sdp.SendOnly {
		t.Fatalf("hold offer toward the trunk has %s", d)
	}
	if d := c.answerToA.Media[0].Direction(); d != sdp.RecvOnly {
		t.Fatalf("hold answer toward the PBX has %s", d)
	}
	if !c.s.hold.Load() {
		t.Fatal("session not on hold")
	}
	// music on hold still flows PBX → trunk under the same key
	c.pbx.sendRTP([]byte("moh"), 0)
	if got := c.trunk.recvRTP(c.trunk.rtp); string(got.Payload) != "moh" {
		t.Fatalf("got %q", got.Payload)
	}
	c.reofferFromPBX(t, offerSDP(c.pbx.port(), 0, "RTP/AVP", "a=sendrecv"), "sendrecv")
	if c.s.hold.Load() {
		t.Fatal("session still on hold")
	}
	exchange(t, c, "after resume")
}

func exchange(t *testing.T, c *call, tag string) {
	t.Helper()
	want := []byte(tag + " a->b")
	c.pbx.sendRTP(want, 0)
	if got := c.trunk.recvRTP(c.trunk.rtp); !bytes.Equal(got.Payload, want) {
		t.Fatalf("trunk got %q, want %q", got.Payload, want)
	}
	want = []byte(tag + " b->a")
	c.trunk.sendRTP(want, 0)
	if got := c.pbx.recvRTP(c.pbx.rtp); !bytes.Equal(got.Payload, want) {
		t.Fatalf("pbx got %q, want %q", got.Payload, want)
	}
}

func TestRekeyFromTrunk(t *testing.T) {
	for _, tag := range []int{1, 3} { // AES-CM and AEAD (a failed GCM open wipes its buffer)
		t.Run(sdp.Suites[tag-1].Name, func(t *testing.T) { testRekey(t, tag) })
	}
}

func testRekey(t *testing.T, tag int) {
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, tag, false)
	exchange(t, c, "key1")
	// The trunk re-INVITEs with a fresh key (RFC 4568 7.1.4).
	nk, _ := sdp.NewCrypto(tag, c.trunk.encCrypto.Suite)
	out, err := c.s.Offer(1, offerSDP(c.trunk.port(), 0, "RTP/SAVP", "a=crypto:"+nk.String()))
	if err != nil {
		t.Fatal(err)
	}
	if m := mustParse(t, out).Media[0]; m.Proto != "RTP/AVP" || len(m.Attrs("crypto")) != 0 {
		t.Fatalf("re-offer toward the PBX: %s", out)
	}
	back, err := c.s.Answer(0, offerSDP(c.pbx.port(), 0, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	am := mustParse(t, back).Media[0]
	ours := cryptoByTag(t, am, tag)
	if bytes.Equal(ours.Key, c.trunk.decCrypto.Key) {
		t.Fatal("esbc did not re-key its direction when the peer re-keyed")
	}
	// A packet still under the old key (in flight) is relayed: no gap.
	c.trunk.sendRTP([]byte("old key in flight"), 0)
	if got := c.pbx.recvRTP(c.pbx.rtp); string(got.Payload) != "old key in flight" {
		t.Fatalf("got %q", got.Payload)
	}
	c.trunk.enc = ctxFor(t, nk)
	c.trunk.encCrypto = nk
	c.trunk.sendRTP([]byte("new key"), 0)
	if got := c.pbx.recvRTP(c.pbx.rtp); string(got.Payload) != "new key" {
		t.Fatalf("got %q", got.Payload)
	}
	// ROC/sequence continue in the new context toward the trunk.
	c.trunk.dec = ctxFor(t, ours)
	c.pbx.sendRTP([]byte("to trunk under the new key"), 0)
	if got := c.trunk.recvRTP(c.trunk.rtp); string(got.Payload) != "to trunk under the new key" {
		t.Fatalf("got %q", got.Payload)
	}
}

func TestPeerAddressChange(t *testing.T) {
	// Outside the latch window only the exact signalled address is the peer.
	e, _ := newEngine(t, func(c *Config) { c.LatchWindow = time.Nanosecond })
	c := setupCall(t, e, 1, false)
	exchange(t, c, "first address")
	moved := newPeer(t)
	moved.remote, moved.ssrc, moved.seq = c.pbx.remote, c.pbx.ssrc, c.pbx.seq
	c.reofferFromPBX(t, offerSDP(moved.port(), 0, "RTP/AVP"), "sendrecv")
	// The old address is not the peer any more: dropped.
	c.pbx.sendRTP([]byte("stale"), 0)
	moved.seq = c.pbx.seq
	moved.sendRTP([]byte("from the new address"), 0)
	if got := c.trunk.recvRTP(c.trunk.rtp); string(got.Payload) != "from the new address" {
		t.Fatalf("got %q", got.Payload)
	}
	c.trunk.sendRTP([]byte("to the new address"), 0)
	if got := moved.recvRTP(moved.rtp); string(got.Payload) != "to the new address" {
		t.Fatalf("got %q", got.Payload)
	}
	st := c.s.State()
	if st.Legs[0].Streams[0].Remote.Port() != uint16(moved.port()) {
		t.Fatalf("state %+v", st.Legs[0].Streams[0])
	}
}

func TestInactivityFires(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.InactivityTimeout = 300 * time.Millisecond })
	fired := make(chan struct{})
	s, err := e.NewSession("idle", lanLeg, wanLeg, func() { close(fired) })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := newPeer(t)
	out, err := s.Offer(0, offerSDP(p.port(), 0, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	ours := cryptoByTag(t, mustParse(t, out).Media[0], 1)
	theirs, _ := sdp.NewCrypto(1, ours.Suite)
	if _, err := s.Answer(1, offerSDP(p.port()+2, 0, "RTP/SAVP", "a=crypto:"+theirs.String())); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		t.Fatal("onInactive was not called")
	}
}

func TestSpoofedSweepGetsNothing(t *testing.T) {
	e, reg := newEngine(t, func(c *Config) { c.LatchWindow = time.Nanosecond })
	c := setupCall(t, e, 1, false)
	exchange(t, c, "latched")
	spoof := newPeer(t)
	cfg := e.config()
	payload := []byte{0x80, 0, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 'b', 'l', 'e', 'e', 'd'}
	for port := cfg.PortMin; port <= cfg.PortMax; port++ {
		switch port {
		case c.pbx.port(), c.pbx.rtcpPort(), c.trunk.port(), c.trunk.rtcpPort(), spoof.port(), spoof.rtcpPort():
			continue // the test's own peers may hold ephemeral ports inside the range
		}
		if _, err := spoof.rtp.WriteToUDPAddrPort(payload, netip.AddrPortFrom(lo, uint16(port))); err != nil {
			t.Fatal(err)
		}
	}
	// A marker from the real peers: it must be the first thing each side sees.
	exchange(t, c, "marker")
	_ = spoof.rtp.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := spoof.rtp.ReadFromUDPAddrPort(make([]byte, 1500)); err == nil {
		t.Fatalf("the spoofer received %d bytes", n)
	}
	got := testutil.ToFloat64(e.dropped.WithLabelValues("lan", "source")) + testutil.ToFloat64(e.dropped.WithLabelValues("wan", "source"))
	if got < 4 {
		t.Fatalf("dropped{reason=source} = %v, want >= 4 (two RTP + two RTCP sockets)", got)
	}
	if n, err := testutil.GatherAndCount(reg, "esbc_media_dropped_total"); err != nil || n == 0 {
		t.Fatalf("metric not registered: %v %d", err, n)
	}
	if st := c.s.Stats(); st.Legs[0].Dropped+st.Legs[1].Dropped < 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPortsExhausted(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.PortMax = c.PortMin + 3; c.Quarantine = time.Hour })
	p := newPeer(t)
	s1, _ := e.NewSession("one", lanLeg, wanLeg, nil)
	defer s1.Close()
	if _, err := s1.Offer(0, offerSDP(p.port(), 0, "RTP/AVP")); err != nil {
		t.Fatal(err)
	}
	s2, _ := e.NewSession("two", lanLeg, wanLeg, nil)
	defer s2.Close()
	if _, err := s2.Offer(0, offerSDP(p.port(), 0, "RTP/AVP")); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("err = %v, want ErrPortsExhausted", err)
	}
	// Quarantine: closing s1 does not free the ports for an hour.
	s1.Close()
	if _, err := s2.Offer(0, offerSDP(p.port(), 0, "RTP/AVP")); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("err = %v, want ErrPortsExhausted while quarantined", err)
	}
	if e.pool.used() != 0 {
		t.Fatalf("ports in use %d", e.pool.used())
	}
}

func TestNotAcceptable(t *testing.T) {
	kdr := "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 KDR=1"
	g729 := strings.Replace(string(offerSDP(30000, 0, "RTP/AVP")), " 0 8 101", " 18", 1)
	t38 := "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=image 30000 udptl t38\r\na=T38FaxVersion:0\r\n"
	tests := []struct {
		name string
		from int
		body string
		a, b LegConfig
		want string
	}{
		{"srtp mandatory without crypto", 1, string(offerSDP(30000, 0, "RTP/SAVP")), lanLeg, wanLeg, "no a=crypto"},
		{"KDR", 1, string(offerSDP(30000, 0, "RTP/SAVP", kdr)), lanLeg, wanLeg, "key derivation rate"},
		{"no common codec", 1, g729, lanLeg, LegConfig{Name: "wan", BindAddr: lo, Codecs: []string{"PCMU", "PCMA"}}, "no common codec"},
		{"T.38 toward a leg without it", 0, t38, lanLeg, wanLeg, "T.38"},
		{"garbage", 0, "not sdp", lanLeg, wanLeg, "no v= line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newEngine(t, nil)
			s, err := e.NewSession("x", tc.a, tc.b, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Offer(tc.from, []byte(tc.body))
			if !errors.Is(err, ErrNotAcceptable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrNotAcceptable containing %q", err, tc.want)
			}
			if e.pool.used() != 0 {
				t.Fatalf("a refused offer kept %d ports", e.pool.used())
			}
		})
	}
}

func TestVideoAndT38Disabled(t *testing.T) {
	e, _ := newEngine(t, nil)
	s, _ := e.NewSession("v", LegConfig{Name: "lan", BindAddr: lo, Video: true, T38: true}, wanLeg, nil)
	defer s.Close()
	body := string(offerSDP(30000, 0, "RTP/AVP")) + "m=video 30002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=image 30004 udptl t38\r\na=T38FaxVersion:0\r\n"
	out, err := s.Offer(0, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	off := mustParse(t, out)
	if len(off.Media) != 3 || off.Media[0].Port == 0 || off.Media[1].Port != 0 || off.Media[2].Port != 0 {
		t.Fatalf("offer toward the trunk:\n%s", out)
	}
	ours := cryptoByTag(t, off.Media[0], 1)
	theirs, _ := sdp.NewCrypto(1, ours.Suite)
	ans := string(offerSDP(30010, 0, "RTP/SAVP", "a=crypto:"+theirs.String())) + "m=video 0 RTP/AVP 96\r\nm=image 0 udptl t38\r\n"
	back, err := s.Answer(1, []byte(ans))
	if err != nil {
		t.Fatal(err)
	}
	am := mustParse(t, back)
	if len(am.Media) != 3 || am.Media[0].Port == 0 || am.Media[1].Port != 0 || am.Media[2].Port != 0 {
		t.Fatalf("answer toward the PBX:\n%s", back)
	}
}

func TestTranscodeULawToALaw(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.Transcode = true })
	wan := wanLeg
	wan.Codecs = []string{"PCMA", "telephone-event"}
	s, _ := e.NewSession("x", lanLeg, wan, nil)
	defer s.Close()
	pbx, trunk := newPeer(t), newPeer(t)
	body := bytes.Replace(offerSDP(pbx.port(), 0, "RTP/AVP"), []byte(" 0 8 101"), []byte(" 0 101"), 1)
	out, err := s.Offer(0, body)
	if err != nil {
		t.Fatal(err)
	}
	m := mustParse(t, out).Media[0]
	if strings.Join(m.Formats, " ") != "8 101" {
		t.Fatalf("offer formats toward the trunk: %v", m.Formats)
	}
	ours := cryptoByTag(t, m, 1)
	theirs, _ := sdp.NewCrypto(1, ours.Suite)
	ans := bytes.Replace(offerSDP(trunk.port(), 0, "RTP/SAVP", "a=crypto:"+theirs.String()), []byte(" 0 8 101"), []byte(" 8 101"), 1)
	back, err := s.Answer(1, ans)
	if err != nil {
		t.Fatal(err)
	}
	am := mustParse(t, back).Media[0]
	if am.Formats[0] != "0" {
		t.Fatalf("answer toward the PBX formats %v", am.Formats)
	}
	pbx.remote, trunk.remote = esbcAddr(t, back), esbcAddr(t, out)
	trunk.dec, trunk.enc = ctxFor(t, ours), ctxFor(t, theirs)
	ulaw := []byte{0xff, 0x7f, 0x00, 0x80, 0x10}
	pbx.sendRTP(ulaw, 0)
	got := trunk.recvRTP(trunk.rtp)
	if got.PayloadType != 8 {
		t.Fatalf("PT %d", got.PayloadType)
	}
	for i, u := range ulaw {
		if got.Payload[i] != ulawToAlaw[u] {
			t.Fatalf("byte %d: %#x want %#x", i, got.Payload[i], ulawToAlaw[u])
		}
	}
	trunk.sendRTP(got.Payload, 8)
	back2 := pbx.recvRTP(pbx.rtp)
	if back2.PayloadType != 0 {
		t.Fatalf("PT %d", back2.PayloadType)
	}
	// µ→A→µ is the identity for most codes (G.711 tables are near inverse).
	same := 0
	for i := range ulaw {
		if back2.Payload[i] == ulaw[i] {
			same++
		}
	}
	if same < 3 {
		t.Fatalf("round trip %x → %x", ulaw, back2.Payload)
	}
}

func TestEarlyMediaThenFinalAnswer(t *testing.T) {
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, 1, false)
	stBefore := c.s.State()
	ans := offerSDP(c.trunk.port(), c.trunk.rtcpPort(), "RTP/SAVP", "a=crypto:"+c.trunk.encCrypto.String())
	if _, err := c.s.Answer(1, ans); err != nil {
		t.Fatal(err)
	}
	stAfter := c.s.State()
	if !bytes.Equal(stBefore.Legs[1].Streams[0].SendKey, stAfter.Legs[1].Streams[0].SendKey) {
		t.Fatal("the final answer changed esbc's key")
	}
	exchange(t, c, "after 200")
}

func TestCloseIdempotentAndReleasesPorts(t *testing.T) {
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, 1, false)
	if e.pool.used() != 2 {
		t.Fatalf("in use %d", e.pool.used())
	}
	if err := c.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.s.Offer(0, offerSDP(1, 0, "RTP/AVP")); !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v", err)
	}
	if e.pool.used() != 0 || e.Sessions() != 0 {
		t.Fatalf("in use %d sessions %d", e.pool.used(), e.Sessions())
	}
}

func TestSequenceJumpTowardSRTP(t *testing.T) {
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, 1, false)
	exchange(t, c, "before the jump")
	// The PBX restarts its sequence (same SSRC), e.g. after a transfer:
	// forward, then backward (which a far-end replay window would drop).
	for _, seq := range []uint16{40000, 10, 60000} {
		c.pbx.seq = seq
		for i := 0; i < 3; i++ {
			c.pbx.sendRTP([]byte("after the jump"), 0)
			got := c.trunk.recvRTP(c.trunk.rtp) // decrypts with an independent context
			if string(got.Payload) != "after the jump" {
				t.Fatalf("jump to %d: got %q", seq, got.Payload)
			}
		}
	}
}

func TestHoldSuspendsInactivity(t *testing.T) {
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, 1, false)
	later := time.Now().Add(time.Hour)
	c.reofferFromPBX(t, offerSDP(c.pbx.port(), 0, "RTP/AVP", "a=inactive"), "inactive")
	if c.s.inactive(later, time.Second) {
		t.Fatal("inactivity fired during hold")
	}
	c.reofferFromPBX(t, offerSDP(c.pbx.port(), 0, "RTP/AVP"), "sendrecv")
	if !c.s.inactive(later, time.Second) {
		t.Fatal("inactivity did not fire after resume")
	}
	if c.s.inactive(later, time.Second) {
		t.Fatal("inactivity fired twice")
	}
}

func TestOriginVersion(t *testing.T) {
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, 1, false)
	ver := func(s *sdp.Session) string { f, _ := s.Origin(); return f[1] + " " + f[2] }
	first := ver(c.answerToA)
	// The same final answer again (183 then 200): identical SDP, same version.
	ans := offerSDP(c.trunk.port(), c.trunk.rtcpPort(), "RTP/SAVP", "a=crypto:"+c.trunk.encCrypto.String())
	ans = bytes.Replace(ans, []byte(" 0 8 101"), []byte(" 0 101"), 1)
	back, err := c.s.Answer(1, ans)
	if err != nil {
		t.Fatal(err)
	}
	if got := ver(mustParse(t, back)); got != first {
		t.Fatalf("unchanged answer got o= %s, want %s", got, first)
	}
	// A change (hold) bumps the version toward the PBX.
	c.reofferFromPBX(t, offerSDP(c.pbx.port(), 0, "RTP/AVP", "a=sendonly"), "recvonly")
	if got := ver(c.answerToA); got == first {
		t.Fatalf("changed answer kept o= %s", got)
	}
	if f, _ := c.answerToA.Origin(); f[0] != "-" || f[5] != "127.0.0.1" {
		t.Fatalf("origin %v leaks or is wrong", f)
	}
}

func TestSpoofInLatchWindowCannotMoveSRTPLatch(t *testing.T) {
	// Same IP as the trunk, inside the latch window, but not authenticated.
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, 1, false)
	exchange(t, c, "latched")
	spoof := newPeer(t)
	fake := []byte{0x80, 0, 0, 9, 0, 0, 0, 9, 0x11, 0x22, 0x33, 0x44, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if _, err := spoof.rtp.WriteToUDPAddrPort(fake, c.trunk.remote); err != nil {
		t.Fatal(err)
	}
	exchange(t, c, "still to the trunk")
	if l := c.s.State().Legs[1].Streams[0].Latched; int(l.Port()) != c.trunk.port() {
		t.Fatalf("latch moved to %v", l)
	}
	_ = spoof.rtp.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := spoof.rtp.ReadFromUDPAddrPort(make([]byte, 1500)); err == nil {
		t.Fatalf("spoofer got %d bytes", n)
	}
}

func TestT38Relay(t *testing.T) {
	e, _ := newEngine(t, nil)
	lan, wan := lanLeg, wanLeg
	lan.T38, wan.T38 = true, true
	s, _ := e.NewSession("fax", lan, wan, nil)
	defer s.Close()
	pbx, trunk := newPeer(t), newPeer(t)
	img := func(p int) []byte {
		return []byte(fmt.Sprintf("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=image %d udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n", p))
	}
	out, err := s.Offer(0, img(pbx.port()))
	if err != nil {
		t.Fatal(err)
	}
	m := mustParse(t, out).Media[0]
	if m.Proto != "udptl" || len(m.Attrs("crypto")) != 0 || !strings.Contains(string(out), "a=T38FaxUdpEC:t38UDPRedundancy\r\n") {
		t.Fatalf("T.38 offer: %s", out)
	}
	back, err := s.Answer(1, img(trunk.port()))
	if err != nil {
		t.Fatal(err)
	}
	pbx.remote, trunk.remote = esbcAddr(t, back), esbcAddr(t, out)
	tap := newRecordingTap()
	e.SetTap(tap)
	udptl := []byte{0x00, 0x01, 0x80, 0x02, 'f', 'a', 'x'} // not RTP: relayed as is
	if _, err := pbx.rtp.WriteToUDPAddrPort(udptl, pbx.remote); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = trunk.rtp.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := trunk.rtp.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], udptl) {
		t.Fatalf("trunk got %x, %v", buf[:n], err)
	}
	// Shown to the tap on both legs too, under the session id (no CallID).
	tap.expect(t, "lan in", "fax", addrOf(pbx.rtp), pbx.remote, udptl)
	tap.expect(t, "wan out", "fax", trunk.remote, addrOf(trunk.rtp), udptl)
	if st := s.State(); st.Legs[0].Streams[0].Media != "image" {
		t.Fatalf("state %+v", st.Legs[0].Streams[0])
	}
}

func TestPeerKeyWithMKIAndLifetime(t *testing.T) {
	e, _ := newEngine(t, nil)
	s, _ := e.NewSession("mki", lanLeg, wanLeg, nil)
	defer s.Close()
	pbx, trunk := newPeer(t), newPeer(t)
	out, err := s.Offer(0, offerSDP(pbx.port(), 0, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	ours := cryptoByTag(t, mustParse(t, out).Media[0], 1)
	theirs, _ := sdp.NewCrypto(1, ours.Suite)
	theirs.Lifetime, theirs.MKI, theirs.MKILen = "2^31", 1, 4
	back, err := s.Answer(1, offerSDP(trunk.port(), 0, "RTP/SAVP", "a=crypto:"+theirs.String()))
	if err != nil {
		t.Fatal(err)
	}
	pbx.remote, trunk.remote = esbcAddr(t, back), esbcAddr(t, out)
	trunk.enc = ctxFor(t, theirs) // packets carry the 4-byte MKI
	trunk.sendRTP([]byte("with MKI"), 0)
	if got := pbx.recvRTP(pbx.rtp); string(got.Payload) != "with MKI" {
		t.Fatalf("got %q", got.Payload)
	}
}

func TestCodecChangeAndSuiteChangeMidCall(t *testing.T) {
	e, _ := newEngine(t, nil)
	c := setupCall(t, e, 3, false) // AEAD_AES_128_GCM
	exchange(t, c, "gcm pcmu")
	before := c.s.State().Legs[1].Streams[0].SendKey
	// The trunk re-INVITEs: PCMA only, and AES_CM_128_HMAC_SHA1_80 now.
	nk, _ := sdp.NewCrypto(7, "AES_CM_128_HMAC_SHA1_80")
	body := bytes.Replace(offerSDP(c.trunk.port(), 0, "RTP/SAVP", "a=crypto:"+nk.String()), []byte(" 0 8 101"), []byte(" 8 101"), 1)
	out, err := c.s.Offer(1, body)
	if err != nil {
		t.Fatal(err)
	}
	if f := mustParse(t, out).Media[0].Formats; strings.Join(f, " ") != "8 101" {
		t.Fatalf("re-offer toward the PBX formats %v", f)
	}
	back, err := c.s.Answer(0, bytes.Replace(offerSDP(c.pbx.port(), 0, "RTP/AVP"), []byte(" 0 8 101"), []byte(" 8 101"), 1))
	if err != nil {
		t.Fatal(err)
	}
	am := mustParse(t, back).Media[0]
	ours := cryptoByTag(t, am, 7)
	if ours.Suite != "AES_CM_128_HMAC_SHA1_80" || bytes.Equal(ours.Key, before) {
		t.Fatalf("answer crypto %+v", ours)
	}
	c.trunk.enc, c.trunk.dec = ctxFor(t, nk), ctxFor(t, ours)
	c.trunk.ssrc++ // a new context on the far end: a fresh stream
	c.pbx.ssrc++
	for i := 0; i < 3; i++ {
		c.pbx.sendRTP([]byte("pcma to trunk"), 8)
		if got := c.trunk.recvRTP(c.trunk.rtp); string(got.Payload) != "pcma to trunk" || got.PayloadType != 8 {
			t.Fatalf("got %q PT %d", got.Payload, got.PayloadType)
		}
		c.trunk.sendRTP([]byte("pcma to pbx"), 8)
		if got := c.pbx.recvRTP(c.pbx.rtp); string(got.Payload) != "pcma to pbx" {
			t.Fatalf("got %q", got.Payload)
		}
	}
	if st := c.s.Stats(); st.Legs[1].Suite != "AES_CM_128_HMAC_SHA1_80" || st.Legs[1].Codec != "PCMA" {
		t.Fatalf("stats %+v", st.Legs[1])
	}
}

func TestLateOffer(t *testing.T) {
	// INVITE without SDP: the callee (leg b) offers in its 200, leg a answers in the ACK.
	e, _ := newEngine(t, nil)
	s, _ := e.NewSession("late", lanLeg, wanLeg, nil)
	defer s.Close()
	pbx, trunk := newPeer(t), newPeer(t)
	tk, _ := sdp.NewCrypto(1, "AES_CM_128_HMAC_SHA1_32")
	out, err := s.Offer(1, offerSDP(trunk.port(), 0, "RTP/SAVP", "a=crypto:"+tk.String()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := s.Answer(0, offerSDP(pbx.port(), 0, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	ours := cryptoByTag(t, mustParse(t, back).Media[0], 1)
	pbx.remote, trunk.remote = esbcAddr(t, out), esbcAddr(t, back)
	trunk.enc, trunk.dec = ctxFor(t, tk), ctxFor(t, ours)
	c := &call{s: s, pbx: pbx, trunk: trunk}
	exchange(t, c, "late offer")
}

package media

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/esbc/esbc/media/sdp"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var lo = netip.MustParseAddr("127.0.0.1")

// testPorts gives each test its own slice of the range so parallel runs of
// other packages on the shared machine rarely collide (bind retries cover
// the rest).
var nextBase = 12000 // below the ephemeral range (32768-60999) and away from b2bua's 43000+

func newEngine(t testing.TB, mod func(*Config)) (*Engine, *prometheus.Registry) {
	t.Helper()
	cfg := Config{PortMin: nextBase, PortMax: nextBase + 199, Quarantine: time.Millisecond, LatchWindow: 5 * time.Second}
	if nextBase += 200; nextBase > 18800 { // earlier engines are closed by now: reuse
		nextBase = 12000
	}
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	e, err := NewEngine(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, reg
}

var (
	lanLeg = LegConfig{Name: "lan", BindAddr: lo, SRTP: SRTPOff}
	wanLeg = LegConfig{Name: "wan", BindAddr: lo, SRTP: SRTPMandatory, SignalingSecure: true,
		Codecs: []string{"PCMU", "PCMA", "G729", "telephone-event"}}
)

// peer is a far end: a real UDP socket pair and (for SRTP) pion contexts
// built independently from the keys in the SDP.
type peer struct {
	t         testing.TB
	rtp, rtcp *net.UDPConn
	enc, dec  *srtp.Context  // nil for plain RTP
	remote    netip.AddrPort // esbc's address for this peer
	encCrypto sdp.Crypto     // the key this peer encrypts with
	decCrypto sdp.Crypto     // esbc's key toward this peer
	ssrc      uint32
	seq       uint16
	ts        uint32
}

func newPeer(t testing.TB) *peer {
	t.Helper()
	c1, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close(); c2.Close() })
	return &peer{t: t, rtp: c1, rtcp: c2, ssrc: 0x11223344, seq: 1000, ts: 160}
}

func (p *peer) port() int     { return p.rtp.LocalAddr().(*net.UDPAddr).Port }
func (p *peer) rtcpPort() int { return p.rtcp.LocalAddr().(*net.UDPAddr).Port }

func offerSDP(port, rtcpPort int, proto string, extra ...string) []byte {
	lines := []string{"v=0", "o=pbx 123 1 IN IP4 127.0.0.1", "s=call", "c=IN IP4 127.0.0.1", "t=0 0",
		fmt.Sprintf("m=audio %d %s 0 8 101", port, proto),
		"a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16",
		"a=x-vendor:keep me  exactly", "a=ptime:20"}
	if rtcpPort > 0 {
		lines = append(lines, fmt.Sprintf("a=rtcp:%d", rtcpPort))
	}
	lines = append(lines, extra...)
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

func mustParse(t testing.TB, b []byte) *sdp.Session {
	t.Helper()
	s, err := sdp.Parse(b)
	if err != nil {
		t.Fatalf("parse %q: %v", b, err)
	}
	return s
}

func esbcAddr(t testing.TB, b []byte) netip.AddrPort {
	t.Helper()
	s := mustParse(t, b)
	ip, ok := s.Media[0].Conn()
	if !ok {
		t.Fatalf("no c= in %s", b)
	}
	return netip.AddrPortFrom(ip, uint16(s.Media[0].Port))
}

func ctxFor(t testing.TB, c sdp.Crypto) *srtp.Context {
	t.Helper()
	k, err := keysFrom(c)
	if err != nil {
		t.Fatal(err)
	}
	opts := []srtp.ContextOption{srtp.SRTPReplayProtection(64)}
	if len(k.mki) > 0 {
		opts = append(opts, srtp.MasterKeyIndicator(k.mki))
	}
	ctx, err := srtp.CreateContext(k.key[:k.keyLen], k.key[k.keyLen:], k.profile, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

func cryptoByTag(t testing.TB, m *sdp.Media, tag int) sdp.Crypto {
	t.Helper()
	for _, v := range m.Attrs("crypto") {
		c, err := sdp.ParseCrypto(v)
		if err != nil {
			t.Fatal(err)
		}
		if c.Tag == tag {
			return c
		}
	}
	t.Fatalf("no crypto tag %d in %v", tag, m.Attrs("crypto"))
	return sdp.Crypto{}
}

func (p *peer) sendRTP(payload []byte, pt uint8) {
	p.t.Helper()
	p.seq++
	p.ts += 160
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: p.seq, Timestamp: p.ts, SSRC: p.ssrc}, Payload: payload}
	raw, err := pkt.Marshal()
	if err != nil {
		p.t.Fatal(err)
	}
	if p.enc != nil {
		if raw, err = p.enc.EncryptRTP(nil, raw, nil); err != nil {
			p.t.Fatal(err)
		}
	}
	if _, err := p.rtp.WriteToUDPAddrPort(raw, p.remote); err != nil {
		p.t.Fatal(err)
	}
}

// recvRTP waits for the next RTP packet (the deadline only avoids a hang).
func (p *peer) recvRTP(conn *net.UDPConn) *rtp.Packet {
	p.t.Helper()
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		p.t.Fatalf("recv: %v", err)
	}
	raw := buf[:n]
	if p.dec != nil {
		if raw, err = p.dec.DecryptRTP(nil, raw, nil); err != nil {
			p.t.Fatalf("decrypt: %v", err)
		}
	}
	var pkt rtp.Packet
	if err := pkt.Unmarshal(raw); err != nil {
		p.t.Fatal(err)
	}
	return &pkt
}

// call sets up PBX (leg a, plain) ↔ trunk (leg b, SRTP) and returns both peers.
type call struct {
	s          *Session
	pbx, trunk *peer
	offerToB   *sdp.Session
	answerToA  *sdp.Session
}

func setupCall(t testing.TB, e *Engine, suiteTag int, mux bool) *call {
	t.Helper()
	return setupCallLegs(t, e, lanLeg, wanLeg, suiteTag, mux)
}

// setupCallLegs is setupCall with the leg configurations given (a plain,
// b SRTP mandatory).
func setupCallLegs(t testing.TB, e *Engine, a, b LegConfig, suiteTag int, mux bool) *call {
	t.Helper()
	s, err := e.NewSession("c1", a, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c := &call{s: s, pbx: newPeer(t), trunk: newPeer(t)}
	var extra []string
	if mux {
		extra = append(extra, "a=rtcp-mux")
	}
	out, err := s.Offer(0, offerSDP(c.pbx.port(), c.pbx.rtcpPort(), "RTP/AVP", extra...))
	if err != nil {
		t.Fatal(err)
	}
	c.offerToB = mustParse(t, out)
	m := c.offerToB.Media[0]
	if m.Proto != "RTP/SAVP" || len(m.Attrs("crypto")) != 4 {
		t.Fatalf("offer toward the trunk: %s", out)
	}
	ours := cryptoByTag(t, m, suiteTag)
	theirs, err := sdp.NewCrypto(suiteTag, ours.Suite)
	if err != nil {
		t.Fatal(err)
	}
	c.trunk.dec = ctxFor(t, ours)
	c.trunk.enc = ctxFor(t, theirs)
	c.trunk.decCrypto, c.trunk.encCrypto = ours, theirs
	c.trunk.remote = esbcAddr(t, out)
	ans := offerSDP(c.trunk.port(), c.trunk.rtcpPort(), "RTP/SAVP", append(extra, "a=crypto:"+theirs.String())...)
	ans = bytes.Replace(ans, []byte(" 0 8 101"), []byte(" 0 101"), 1)
	back, err := s.Answer(1, ans)
	if err != nil {
		t.Fatal(err)
	}
	c.answerToA = mustParse(t, back)
	c.pbx.remote = esbcAddr(t, back)
	return c
}

func TestRelaySuitesBothDirections(t *testing.T) {
	for tag, su := range sdp.Suites[:4] {
		t.Run(su.Name, func(t *testing.T) {
			e, _ := newEngine(t, nil)
			c := setupCall(t, e, tag+1, false)
			if got := c.answerToA.Media[0]; got.Proto != "RTP/AVP" || len(got.Attrs("crypto")) != 0 {
				t.Fatalf("answer toward the PBX: %s", c.answerToA.Marshal())
			}
			for i := 0; i < 5; i++ {
				want := []byte(fmt.Sprintf("pbx->trunk %d %s", i, strings.Repeat("x", 150)))
				c.pbx.sendRTP(want, 0)
				got := c.trunk.recvRTP(c.trunk.rtp)
				if !bytes.Equal(got.Payload, want) || got.SSRC != c.pbx.ssrc {
					t.Fatalf("trunk got %q", got.Payload)
				}
				want = []byte(fmt.Sprintf("trunk->pbx %d", i))
				c.trunk.sendRTP(want, 0)
				got = c.pbx.recvRTP(c.pbx.rtp)
				if !bytes.Equal(got.Payload, want) || got.SequenceNumber != c.trunk.seq {
					t.Fatalf("pbx got %q", got.Payload)
				}
			}
			st := c.s.Stats()
			if st.Legs[1].Suite != su.Name || st.Legs[0].PacketsIn != 5 || st.Legs[1].PacketsOut != 5 || st.Legs[0].Codec != "PCMU" {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestSRTCPBothDirections(t *testing.T) {
	for _, mux := range []bool{false, true} {
		t.Run(fmt.Sprint("mux=", mux), func(t *testing.T) {
			e, _ := newEngine(t, nil)
			c := setupCall(t, e, 1, mux)
			if got := c.answerToA.Media[0].RTCPMux(); got != mux {
				t.Fatalf("rtcp-mux in answer = %v", got)
			}
			pbxRTCP := netip.AddrPortFrom(c.pbx.remote.Addr(), c.pbx.remote.Port()+1)
			trunkRTCP := netip.AddrPortFrom(c.trunk.remote.Addr(), c.trunk.remote.Port()+1)
			pbxSock, trunkSock := c.pbx.rtcp, c.trunk.rtcp
			if mux {
				pbxRTCP, trunkRTCP = c.pbx.remote, c.trunk.remote
				pbxSock, trunkSock = c.pbx.rtp, c.trunk.rtp
			}
			sr := &rtcp.SenderReport{SSRC: c.pbx.ssrc, NTPTime: 0xAABBCCDD11223344, RTPTime: 1, PacketCount: 7, OctetCount: 1000}
			raw, _ := sr.Marshal()
			if _, err := pbxSock.WriteToUDPAddrPort(raw, pbxRTCP); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			_ = trunkSock.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := trunkSock.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := c.trunk.dec.DecryptRTCP(nil, buf[:n], nil)
			if err != nil {
				t.Fatalf("SRTCP from esbc: %v", err)
			}
			if !bytes.Equal(plain, raw) {
				t.Fatalf("SR changed: %x vs %x", plain, raw)
			}
			// The trunk answers with an RR referencing that SR: esbc learns the RTT.
			rr := &rtcp.ReceiverReport{SSRC: c.trunk.ssrc, Reports: []rtcp.ReceptionReport{{SSRC: c.pbx.ssrc, LastSenderReport: uint32(sr.NTPTime >> 16), Delay: 0}}}
			rawRR, _ := rr.Marshal()
			enc, err := c.trunk.enc.EncryptRTCP(nil, rawRR, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := trunkSock.WriteToUDPAddrPort(enc, trunkRTCP); err != nil {
				t.Fatal(err)
			}
			_ = pbxSock.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err = pbxSock.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], rawRR) {
				t.Fatalf("RR toward the PBX: %x", buf[:n])
			}
			if st := c.s.Stats(); st.Legs[1].PacketsIn != 1 || st.Legs[0].PacketsIn != 1 {
				t.Fatalf("stats %+v", st)
			}
			// Clear RTCP on the SRTP leg, too short to be SRTCP (baresip's
			// APP "PING"): malformed, not an SRTP failure. A forged SRTCP
			// packet of a valid length (tag flipped): an SRTP failure.
			ping := []byte{0x80, 0xcc, 0x00, 0x03, 0, 0, 0, 0, 'P', 'I', 'N', 'G', 'P', 'O', 'N', 'G'}
			binary.BigEndian.PutUint32(ping[4:], c.trunk.ssrc)
			forged, err := c.trunk.enc.EncryptRTCP(nil, rawRR, nil)
			if err != nil {
				t.Fatal(err)
			}
			forged[len(forged)-1] ^= 0xff
			for _, p := range [][]byte{ping, forged} {
				if _, err := trunkSock.WriteToUDPAddrPort(p, trunkRTCP); err != nil {
					t.Fatal(err)
				}
			}
			malformed, failed := e.dropped.WithLabelValues("wan", "malformed"), e.dropped.WithLabelValues("wan", "srtp")
			for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(malformed)+testutil.ToFloat64(failed) < 2 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if m, f := testutil.ToFloat64(malformed), testutil.ToFloat64(failed); m != 1 || f != 1 {
				t.Errorf("dropped on the trunk leg: malformed %v, srtp %v; want 1 and 1", m, f)
			}
		})
	}
}

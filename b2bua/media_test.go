package b2bua_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/esbc/esbc/b2bua"
	"github.com/esbc/esbc/media"
)

var mediaBase = 43000

func newMedia(t testing.TB) (b2bua.MediaEngine, *media.Engine) {
	t.Helper()
	cfg := media.Config{PortMin: mediaBase, PortMax: mediaBase + 399, Quarantine: time.Millisecond, LatchWindow: 5 * time.Second}
	mediaBase += 400
	eng, err := media.NewEngine(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	return b2bua.MediaAdapter(eng), eng
}

func withMedia(t testing.TB, o envOpts) *env {
	me, _ := newMedia(t)
	o.media = me
	e := newEnv(t, o)
	cfg := *e.cfg
	cfg.LANMedia = media.LegConfig{Name: "lan", BindAddr: netip.MustParseAddr(lanIP), SRTP: media.SRTPOff}
	cfg.WANMedia = media.LegConfig{Name: "wan", BindAddr: netip.MustParseAddr(wanIP), SRTP: media.SRTPMandatory,
		Codecs: []string{"PCMU", "PCMA", "G729", "telephone-event"}}
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

var (
	reConn   = regexp.MustCompile(`(?m)^c=IN IP4 (\S+)`)
	reAudio  = regexp.MustCompile(`(?m)^m=audio (\d+) (\S+)`)
	reCrypto = regexp.MustCompile(`(?m)^a=crypto:(\d+) (AES_CM_128_HMAC_SHA1_80) inline:([A-Za-z0-9+/=]+)`)
)

func sdpAddr(t testing.TB, body []byte) netip.AddrPort {
	t.Helper()
	c := reConn.FindSubmatch(body)
	m := reAudio.FindSubmatch(body)
	if c == nil || m == nil {
		t.Fatalf("no address in SDP:\n%s", body)
	}
	return netip.MustParseAddrPort(string(c[1]) + ":" + string(m[1]))
}

// srtpPeer is the trunk's media: its own key, and a context built
// independently (pion/srtp) from the key esbc offered.
type srtpPeer struct {
	conn *net.UDPConn
	mu   sync.Mutex // guards key, enc, dec (set from SIP handler goroutines)
	key  []byte     // key||salt the trunk encrypts with
	enc  *srtp.Context
	dec  *srtp.Context
}

func (p *srtpPeer) contexts() (enc, dec *srtp.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.enc, p.dec
}

func (p *srtpPeer) setContexts(enc, dec *srtp.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enc, p.dec = enc, dec
}

func newSRTPPeer(t testing.TB, ip string) *srtpPeer {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 30)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	enc, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	return &srtpPeer{conn: conn, key: key, enc: enc}
}

// answer builds the trunk's SDES answer to esbc's offer and the decrypt
// context from esbc's key.
func (p *srtpPeer) answer(t testing.TB, offer []byte) []byte {
	m := reCrypto.FindSubmatch(offer)
	if m == nil {
		t.Errorf("no AES_CM_128_HMAC_SHA1_80 crypto offered toward the trunk:\n%s", offer)
		return nil
	}
	k, err := base64.StdEncoding.DecodeString(string(m[3]))
	if err != nil || len(k) != 30 {
		t.Errorf("bad inline key %q", m[3])
		return nil
	}
	dec, err := srtp.CreateContext(k[:16], k[16:], srtp.ProtectionProfileAes128CmHmacSha1_80, srtp.SRTPReplayProtection(64))
	if err != nil {
		t.Error(err)
		return nil
	}
	p.mu.Lock()
	p.dec = dec
	p.mu.Unlock()
	return p.sdp(string(m[1]))
}

// sdp is the trunk's SDES description with crypto tag tag.
func (p *srtpPeer) sdp(tag string) []byte {
	la := p.conn.LocalAddr().(*net.UDPAddr)
	p.mu.Lock()
	key := p.key
	p.mu.Unlock()
	return []byte(fmt.Sprintf("v=0\r\no=- 7 7 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"+
		"a=crypto:%s AES_CM_128_HMAC_SHA1_80 inline:%s\r\na=sendrecv\r\n",
		la.IP, la.IP, la.Port, tag, base64.StdEncoding.EncodeToString(key)))
}

func rtpPacket(seq uint16, payload []byte) []byte {
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 0x1234}, Payload: payload}
	b, _ := pkt.Marshal()
	return b
}

// exchange sends RTP both ways until each side has received one packet
// with the expected payload (bounded).
func exchange(t testing.TB, pbx *net.UDPConn, esbcLAN netip.AddrPort, trk *srtpPeer, esbcWAN netip.AddrPort) {
	t.Helper()
	fromPBX := bytes.Repeat([]byte{0xAA}, 160)
	fromTrunk := bytes.Repeat([]byte{0x55}, 160)
	gotAtTrunk, gotAtPBX := false, false
	buf := make([]byte, 1500)
	encCtx, decCtx := trk.contexts()
	for seq := uint16(1); seq < 200 && (!gotAtTrunk || !gotAtPBX); seq++ {
		if _, err := pbx.WriteToUDPAddrPort(rtpPacket(seq, fromPBX), esbcLAN); err != nil {
			t.Fatal(err)
		}
		enc, err := encCtx.EncryptRTP(nil, rtpPacket(seq, fromTrunk), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := trk.conn.WriteToUDPAddrPort(enc, esbcWAN); err != nil {
			t.Fatal(err)
		}
		_ = trk.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, _, err := trk.conn.ReadFromUDPAddrPort(buf); err == nil {
			dec, err := decCtx.DecryptRTP(nil, buf[:n], nil)
			if err == nil {
				var p rtp.Packet
				if p.Unmarshal(dec) == nil && bytes.Equal(p.Payload, fromPBX) {
					gotAtTrunk = true
				}
			}
		}
		_ = pbx.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, _, err := pbx.ReadFromUDPAddrPort(buf); err == nil {
			var p rtp.Packet
			if p.Unmarshal(buf[:n]) == nil && bytes.Equal(p.Payload, fromTrunk) {
				gotAtPBX = true
			}
		}
	}
	if !gotAtTrunk {
		t.Error("PBX RTP did not reach the trunk as SRTP esbc's offered key decrypts")
	}
	if !gotAtPBX {
		t.Error("trunk SRTP did not reach the PBX as plain RTP")
	}
}

// mediaCall is an outbound call with media anchored by esbc.
type mediaCall struct {
	s        *sipgo.DialogClientSession // the PBX's dialog
	trkSess  *sipgo.DialogServerSession // the trunk's dialog
	pbxRTP   *net.UDPConn
	trk      *srtpPeer
	lan, wan netip.AddrPort // esbc's media addresses toward PBX and trunk
}

func setupMediaCall(t *testing.T, ctx context.Context, e *env) *mediaCall {
	t.Helper()
	mc := &mediaCall{trk: newSRTPPeer(t, trunkIP)}
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = sess.Respond(200, "OK", mc.trk.answer(t, req.Body()), sip.NewHeader("Content-Type", "application/sdp"))
		u.sessions <- sess // after Respond: the test reads the session's InviteResponse
	})
	e.trkUAS.setAnswer(func(offer []byte) []byte { return mc.trk.answer(t, offer) })
	var err error
	mc.pbxRTP, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(pbxIP)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.pbxRTP.Close() })
	pbxPort := mc.pbxRTP.LocalAddr().(*net.UDPAddr).Port
	var ver atomic.Int32
	ver.Store(10)
	e.pbxUAS.setAnswer(func([]byte) []byte {
		return []byte(strings.Replace(string(sdpOffer(pbxIP, pbxPort)), "o=- 1 1", fmt.Sprintf("o=- 1 %d", ver.Add(1)), 1))
	})
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	mc.s, err = e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, mc.pbxRTP.LocalAddr().(*net.UDPAddr).Port),
		sip.NewHeader("Content-Type", "application/sdp"),
		&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+14155550100", Host: "pbx.corp.local"}, Params: sip.HeaderParams{{K: "tag", V: "pbxtag1"}}},
		sip.NewHeader("X-Internal-Secret", "lan-only"))
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := mc.s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	mc.trkSess = <-e.trkUAS.sessions
	mc.lan = sdpAddr(t, mc.s.InviteResponse.Body())
	mc.wan = sdpAddr(t, e.trkUAS.lastInvite().Body())
	return mc
}

// TestOutboundMediaEndToEnd: PBX (UDP, RTP) → esbc → trunk (TLS, SRTP); the
// payload is checked at both ends, SRTP by an independent pion context.
func TestOutboundMediaEndToEnd(t *testing.T) {
	e := withMedia(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mc := setupMediaCall(t, ctx, e)
	inv := e.trkUAS.lastInvite()
	assertHidden(t, inv.String(), mc.s.InviteRequest.CallID().Value(), e)
	if mc.lan.Addr().String() != lanIP || mc.wan.Addr().String() != wanIP {
		t.Fatalf("media anchored at %s / %s", mc.lan, mc.wan)
	}
	if !strings.Contains(string(inv.Body()), "RTP/SAVP") {
		t.Error("offer toward the trunk is not RTP/SAVP")
	}
	exchange(t, mc.pbxRTP, mc.lan, mc.trk, mc.wan)

	calls := e.b.Calls()
	if len(calls) != 1 || calls[0].Legs[1].Media == nil || calls[0].Legs[1].Media.Suite == "" {
		t.Errorf("admin view of the call: %+v", calls)
	}
	// The call's state in plain values (HA): both dialogs and the keys.
	// The PBX's ACK travels apart from the RTP above: wait for it.
	waitFor(t, func() bool { c := e.b.Calls(); return len(c) == 1 && c[0].State == "confirmed" }, "call not confirmed")
	snap := e.b.Snapshot()
	if len(snap) != 1 || snap[0].State != "confirmed" || snap[0].A.Dialog.RemoteTag != "pbxtag1" ||
		snap[0].B.Dialog.RemoteTag == "" || snap[0].B.Target.Addr.String() != e.trk.addr ||
		snap[0].Media == nil || len(snap[0].Media.Legs[1].Streams) == 0 || len(snap[0].Media.Legs[1].Streams[0].SendKey) == 0 {
		t.Errorf("snapshot: %+v", snap)
	}
	if err := hangUp(ctx, mc.s); err != nil {
		t.Fatal(err)
	}
	cdr := e.waitEnded(1)[0]
	if cdr.Legs[0].Media == nil || cdr.Legs[0].Media.PacketsIn == 0 {
		t.Errorf("CDR without media figures: %+v", cdr.Legs)
	}
}

// assertHidden checks that nothing of the LAN is in a message toward a trunk.
func assertHidden(t testing.TB, msg, pbxCallID string, e *env) {
	t.Helper()
	for _, bad := range []string{pbxIP, lanIP, "pbx.corp.local", pbxCallID, "X-Internal", "lan-only", fmt.Sprint(e.pbx.port()), "pbxtag1"} {
		if strings.Contains(msg, bad) {
			t.Errorf("message toward the trunk contains %q:\n%s", bad, msg)
		}
	}
}

// TestLateOffer: the PBX sends an INVITE without SDP (delayed offer, as
// some PBXs do); the trunk offers in its 2xx, the PBX answers in its ACK,
// esbc relays the answer in its ACK to the trunk, and media flows.
func TestLateOffer(t *testing.T) {
	e := withMedia(t, envOpts{})
	trk := newSRTPPeer(t, trunkIP)
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		if len(req.Body()) != 0 {
			t.Errorf("INVITE toward the trunk has a body in a delayed-offer call")
		}
		if hasTag(req, "Supported", "100rel") {
			// Its offer would come in a reliable 18x, answered in a PRACK.
			t.Errorf("delayed-offer INVITE toward the trunk offers 100rel:\n%s", headersOf(req))
		}
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = sess.Respond(200, "OK", trk.sdp("1"), sip.NewHeader("Content-Type", "application/sdp"))
		u.sessions <- sess // after Respond: the test reads the session's InviteResponse
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lc := placeLateOfferCall(t, ctx, e, trk)
	if strings.Contains(string(lc.offer), "crypto") || !strings.Contains(string(lc.offer), "RTP/AVP") {
		t.Fatalf("offer toward the PBX:\n%s", lc.offer)
	}
	lc.exchange(t, trk)
	if err := hangUp(ctx, lc.s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

// lateOfferCall is a delayed-offer call from the PBX, answered: the PBX's
// session, its RTP socket, esbc's offer to it and esbc's ACK to the trunk
// (with its SDES answer).
type lateOfferCall struct {
	s        *sipgo.DialogClientSession
	pbxRTP   *net.UDPConn
	offer    []byte
	trunkAck *sip.Request
}

// placeLateOfferCall places a call from the PBX with no SDP in its INVITE
// (the trunk's script must answer with an offer from trk), answers esbc's
// offer in the PBX's ACK and waits for esbc's ACK with SDP at the trunk,
// whose SDES answer it hands to trk.
func placeLateOfferCall(t *testing.T, ctx context.Context, e *env, trk *srtpPeer) *lateOfferCall {
	t.Helper()
	pbxRTP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(pbxIP)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pbxRTP.Close() })
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	ack := sip.NewRequest(sip.ACK, s.InviteResponse.Contact().Address)
	ack.Laddr = s.InviteRequest.Laddr
	ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	ack.SetBody(sdpOffer(pbxIP, pbxRTP.LocalAddr().(*net.UDPAddr).Port))
	if err := s.WriteAck(ctx, ack); err != nil {
		t.Fatal(err)
	}
	var trunkAck *sip.Request
	waitFor(t, func() bool {
		for _, r := range e.trkUAS.requests(sip.ACK) {
			if len(r.Body()) > 0 {
				trunkAck = r
				return true
			}
		}
		return false
	}, "no ACK with SDP at the trunk")
	if trk.answer(t, trunkAck.Body()) == nil {
		t.Fatalf("ACK toward the trunk carries no SDES answer:\n%s", trunkAck.Body())
	}
	return &lateOfferCall{s: s, pbxRTP: pbxRTP, offer: s.InviteResponse.Body(), trunkAck: trunkAck}
}

// exchange checks media both ways through the call.
func (lc *lateOfferCall) exchange(t *testing.T, trk *srtpPeer) {
	t.Helper()
	exchange(t, lc.pbxRTP, sdpAddr(t, lc.offer), trk, sdpAddr(t, lc.trunkAck.Body()))
}

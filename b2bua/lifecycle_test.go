package b2bua_test

import (
	"context"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/media"
)

// TestInboundMediaEndToEnd: trunk (TLS, SRTP) → esbc → PBX (UDP, RTP).
func TestInboundMediaEndToEnd(t *testing.T) {
	e := withMedia(t, envOpts{})
	trk := newSRTPPeer(t, trunkIP)
	pbxRTP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(pbxIP)})
	if err != nil {
		t.Fatal(err)
	}
	defer pbxRTP.Close()
	pbxPort := pbxRTP.LocalAddr().(*net.UDPAddr).Port
	e.pbxUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		if strings.Contains(string(req.Body()), "crypto") {
			t.Error("SDES keys sent toward the PBX")
		}
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = sess.Respond(200, "OK", sdpOffer(pbxIP, pbxPort), sip.NewHeader("Content-Type", "application/sdp"))
		u.sessions <- sess // after Respond: the test reads the session's InviteResponse
	})
	offer := trk.sdp("1") // SAVP with the trunk's own key
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", User: "+14155550100", Host: wanIP, Port: e.wan.port(), UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}
	s, err := e.trkUAC.dcc.Invite(ctx, uri, offer, sip.NewHeader("Content-Type", "application/sdp"),
		&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+442071234567", Host: "trunk.test"}, Params: sip.HeaderParams{{K: "tag", V: "trktag"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	// esbc's answer toward the trunk carries its key: the trunk decrypts with it.
	if trk.answer(t, s.InviteResponse.Body()) == nil {
		t.Fatal("no SDES answer from esbc")
	}
	exchange(t, pbxRTP, sdpAddr(t, e.pbxUAS.lastInvite().Body()), trk, sdpAddr(t, s.InviteResponse.Body()))
	// Nothing of the LAN in what the trunk received.
	assertHidden(t, s.InviteResponse.String(), e.pbxUAS.lastInvite().CallID().Value(), e)
	// The admin view lists the call with both legs and the SRTP suite.
	rec := httptest.NewRecorder()
	e.b.CallsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/calls", nil))
	if body := rec.Body.String(); rec.Code != 200 || !strings.Contains(body, `"direction": "inbound"`) ||
		!strings.Contains(body, "AES_CM_128_HMAC_SHA1_80") {
		t.Errorf("/api/v1/calls: %d %s", rec.Code, body)
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	if cdr := e.waitEnded(1)[0]; cdr.Direction != "inbound" || cdr.Disposition != "answered" {
		t.Errorf("CDR %+v", cdr)
	}
}

// TestDeadTargetMidCall: the trunk server dies while a call is up; media
// keeps flowing and the PBX's BYE ends the call cleanly.
func TestDeadTargetMidCall(t *testing.T) {
	e := withMedia(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	mc := setupMediaCall(t, ctx, e)
	exchange(t, mc.pbxRTP, mc.lan, mc.trk, mc.wan)
	e.trk.close() // the serving target is gone (its sockets closed)
	e.trk = nil
	exchange(t, mc.pbxRTP, mc.lan, mc.trk, mc.wan)
	if err := hangUp(ctx, mc.s); err != nil {
		t.Fatalf("PBX BYE with the trunk server dead: %v", err)
	}
	if cdr := e.waitEnded(1)[0]; cdr.Disposition != "answered" {
		t.Errorf("CDR %+v", cdr)
	}
}

// TestMaxDuration: a call longer than calls.max_duration is ended on both legs.
func TestMaxDuration(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := *e.cfg
	cfg.MaxDuration = 300 * time.Millisecond
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Context().Done():
	case <-ctx.Done():
		t.Fatal("PBX leg not ended at max duration")
	}
	select {
	case <-e.trkUAS.byes:
	case <-ctx.Done():
		t.Fatal("trunk leg not ended at max duration")
	}
	if cdr := e.waitEnded(1)[0]; !strings.Contains(cdr.Reason, "max duration") {
		t.Errorf("reason %q", cdr.Reason)
	}
}

// TestMediaInactivity: no RTP for media.inactivity_timeout ends both legs.
func TestMediaInactivity(t *testing.T) {
	me, eng := newMedia(t)
	e := newEnv(t, envOpts{media: me})
	eng.SetConfig(media.Config{Quarantine: time.Millisecond, LatchWindow: time.Second, InactivityTimeout: 300 * time.Millisecond})
	cfg := *e.cfg
	cfg.LANMedia = media.LegConfig{Name: "lan", BindAddr: netip.MustParseAddr(lanIP), SRTP: media.SRTPOff}
	cfg.WANMedia = media.LegConfig{Name: "wan", BindAddr: netip.MustParseAddr(wanIP), SRTP: media.SRTPMandatory}
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	mc := setupMediaCall(t, ctx, e)
	select {
	case <-mc.s.Context().Done():
	case <-ctx.Done():
		t.Fatal("PBX leg not ended on media inactivity")
	}
	if cdr := e.waitEnded(1)[0]; !strings.Contains(cdr.Reason, "media inactivity") {
		t.Errorf("reason %q", cdr.Reason)
	}
}

// TestAuthChallengeInDialog: the trunk challenges an in-dialog request;
// esbc answers with the trunk's credentials.
func TestAuthChallengeInDialog(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	challenged := make(chan struct{}, 1)
	e.trkUAS.setInDialogAuth("990500000231", "s3cret", challenged)
	info := sip.NewRequest(sip.INFO, s.InviteResponse.Contact().Address)
	info.AppendHeader(sip.NewHeader("Content-Type", "application/dtmf-relay"))
	info.SetBody([]byte("Signal=1\r\nDuration=100\r\n"))
	res, err := s.Do(ctx, info)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("challenged INFO: %v %v", res, err)
	}
	select {
	case <-challenged:
	default:
		t.Fatal("the trunk did not challenge")
	}
	_ = hangUp(ctx, s)
	e.waitEnded(1)
}

// TestInboundByeAfterTrunkConnectionClosed: the trunk's TLS connection that
// carried its INVITE is closed; the PBX's BYE still reaches the trunk (esbc
// falls back from the dialog's connection to the trunk's Contact).
func TestInboundByeAfterTrunkConnectionClosed(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.inbound(ctx, "+14155550100")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { c := e.b.Calls(); return len(c) == 1 && c[0].State == "confirmed" }, "call not confirmed")
	conn, err := e.trk.ua.TransportLayer().GetConnection("tls", e.wan.addr)
	if err != nil || conn == nil {
		t.Fatalf("trunk's connection to esbc: %v", err)
	}
	_ = conn.Close()
	sess := <-e.pbxUAS.sessions
	bye := sip.NewRequest(sip.BYE, sess.InviteRequest.Contact().Address)
	bye.SetTransport("UDP")
	bye.Laddr = sip.Addr{IP: net.ParseIP(pbxIP), Port: e.pbx.port()}
	if err := sess.WriteBye(ctx, bye); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Context().Done():
	case <-ctx.Done():
		t.Fatal("trunk leg not ended: BYE lost with the connection")
	}
	e.waitEnded(1)
}

package b2bua_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/srtp/v3"

	"github.com/esbc/esbc/b2bua"
)

// reinvite sends an in-dialog INVITE with body from the PBX's dialog.
func pbxReinvite(t *testing.T, ctx context.Context, mc *mediaCall, body []byte) *sip.Response {
	t.Helper()
	req := sip.NewRequest(sip.INVITE, mc.s.InviteResponse.Contact().Address)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(body)
	res, err := mc.s.Do(ctx, req)
	if err != nil {
		t.Fatalf("re-INVITE: %v", err)
	}
	if res.IsSuccess() {
		// ACK the 2xx (same CSeq number: the dialog does not increment it for ACK).
		ack := sip.NewRequest(sip.ACK, mc.s.InviteResponse.Contact().Address)
		ack.Laddr = mc.s.InviteRequest.Laddr // from the PBX's socket, as sipgo's own ACK does
		if err := mc.s.WriteRequest(ack); err != nil {
			t.Fatalf("ACK of re-INVITE: %v", err)
		}
	}
	return res
}

func TestReinviteHoldResumeRekey(t *testing.T) {
	e := withMedia(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	mc := setupMediaCall(t, ctx, e)
	exchange(t, mc.pbxRTP, mc.lan, mc.trk, mc.wan)
	port := mc.pbxRTP.LocalAddr().(*net.UDPAddr).Port

	// Hold from the PBX.
	hold := strings.Replace(string(sdpOffer(pbxIP, port)), "a=sendrecv", "a=sendonly", 1)
	hold = strings.Replace(hold, "o=- 1 1", "o=- 1 2", 1)
	if res := pbxReinvite(t, ctx, mc, []byte(hold)); res.StatusCode != 200 {
		t.Fatalf("hold: %d", res.StatusCode)
	}
	reinv := e.trkUAS.requests(sip.INVITE)
	if len(reinv) != 1 || !strings.Contains(string(reinv[0].Body()), "a=sendonly") {
		t.Fatalf("trunk did not get the hold re-INVITE: %v", reinv)
	}
	assertHidden(t, reinv[0].String(), mc.s.InviteRequest.CallID().Value(), e)
	// Resume.
	resume := strings.Replace(string(sdpOffer(pbxIP, port)), "o=- 1 1", "o=- 1 3", 1)
	if res := pbxReinvite(t, ctx, mc, []byte(resume)); res.StatusCode != 200 {
		t.Fatalf("resume: %d", res.StatusCode)
	}
	exchange(t, mc.pbxRTP, mc.lan, mc.trk, mc.wan)

	// Re-key from the trunk: a new a=crypto in a re-INVITE.
	newKey := make([]byte, 30)
	for i := range newKey {
		newKey[i] = byte(200 - i)
	}
	la := mc.trk.conn.LocalAddr().(*net.UDPAddr)
	offer := fmt.Sprintf("v=0\r\no=- 7 8 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"+
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\na=sendrecv\r\n",
		la.IP, la.IP, la.Port, base64.StdEncoding.EncodeToString(newKey))
	req := sip.NewRequest(sip.INVITE, e.trkUAS.lastInvite().Contact().Address)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(offer))
	res, err := mc.trkSess.Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("re-key re-INVITE: %v %v", res, err)
	}
	if err := mc.trkSess.WriteRequest(sip.NewRequest(sip.ACK, e.trkUAS.lastInvite().Contact().Address)); err != nil {
		t.Fatalf("ACK of re-key: %v", err)
	}
	m := reCrypto.FindSubmatch(res.Body())
	if m == nil {
		t.Fatalf("re-key answer without crypto:\n%s", res.Body())
	}
	k, _ := base64.StdEncoding.DecodeString(string(m[3]))
	dec, err := srtp.CreateContext(k[:16], k[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := srtp.CreateContext(newKey[:16], newKey[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	mc.trk.setContexts(enc, dec)
	if pbxSaw := e.pbxUAS.requests(sip.INVITE); len(pbxSaw) != 0 {
		// The PBX side is the caller's stack: its re-INVITEs land on the
		// caller's server, which the uas records.
		if strings.Contains(string(pbxSaw[0].Body()), "crypto") {
			t.Error("crypto leaked toward the PBX")
		}
	}
	exchange(t, mc.pbxRTP, mc.lan, mc.trk, sdpAddr(t, res.Body()))
	if err := hangUp(ctx, mc.s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

func TestInfoAndReferPolicy(t *testing.T) {
	for _, relay := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay=%v", relay), func(t *testing.T) {
			e := newEnv(t, envOpts{referRelay: relay})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := e.outbound(ctx, "94155550123")
			if err != nil {
				t.Fatal(err)
			}
			info := sip.NewRequest(sip.INFO, s.InviteResponse.Contact().Address)
			info.AppendHeader(sip.NewHeader("Content-Type", "application/dtmf-relay"))
			info.SetBody([]byte("Signal=5\r\nDuration=160\r\n"))
			if res, err := s.Do(ctx, info); err != nil || res.StatusCode != 200 {
				t.Fatalf("INFO: %v %v", res, err)
			}
			got := e.trkUAS.requests(sip.INFO)
			if len(got) != 1 || string(got[0].Body()) != "Signal=5\r\nDuration=160\r\n" ||
				got[0].GetHeader("Content-Type").Value() != "application/dtmf-relay" {
				t.Fatalf("INFO at the trunk: %v", got)
			}
			opts := sip.NewRequest(sip.OPTIONS, s.InviteResponse.Contact().Address)
			if res, err := s.Do(ctx, opts); err != nil || res.StatusCode != 200 {
				t.Fatalf("in-dialog OPTIONS: %v %v", res, err)
			}
			if n := len(e.trkUAS.requests(sip.OPTIONS)); n != 1 {
				t.Errorf("in-dialog OPTIONS reached the trunk %d times", n)
			}
			refer := sip.NewRequest(sip.REFER, s.InviteResponse.Contact().Address)
			refer.AppendHeader(sip.NewHeader("Refer-To", "<sip:+14155550199@"+pbxIP+";transport=udp?Replaces=abc%40pbx.corp.local>"))
			res, err := s.Do(ctx, refer)
			if err != nil {
				t.Fatal(err)
			}
			want := 403
			if relay {
				want = 200
			}
			if res.StatusCode != want {
				t.Fatalf("REFER: %d, want %d", res.StatusCode, want)
			}
			refers := e.trkUAS.requests(sip.REFER)
			if relay != (len(refers) == 1) {
				t.Fatalf("REFER relayed %d times with relay=%v", len(refers), relay)
			}
			if relay {
				if rt := refers[0].GetHeader("Refer-To"); rt == nil || rt.Value() != "<sip:+14155550199@trunk.test>" {
					t.Errorf("Refer-To at the trunk: %v", rt)
				}
				assertHidden(t, refers[0].String(), s.InviteRequest.CallID().Value(), e)
			}
			_ = hangUp(ctx, s)
			e.waitEnded(1)
		})
	}
}

// TestSessionTimerTowardPBX: the PBX asks for session timers, the trunk
// does not support them: the PBX is made the refresher, and its refresh
// (UPDATE) crosses esbc and keeps the call up.
func TestSessionTimerTowardPBX(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000), sip.NewHeader("Content-Type", "application/sdp"),
		sip.NewHeader("Supported", "timer"), sip.NewHeader("Session-Expires", "1800"), sip.NewHeader("Min-SE", "90"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	se := s.InviteResponse.GetHeader("Session-Expires")
	if se == nil || se.Value() != "1800;refresher=uac" {
		t.Fatalf("Session-Expires toward the PBX: %v", se)
	}
	if inv := e.trkUAS.lastInvite(); inv.GetHeader("Session-Expires") == nil {
		t.Error("Session-Expires not offered to the trunk")
	}
	upd := sip.NewRequest(sip.UPDATE, s.InviteResponse.Contact().Address)
	upd.AppendHeader(sip.NewHeader("Session-Expires", "1800;refresher=uac"))
	upd.AppendHeader(sip.NewHeader("Supported", "timer"))
	res, err := s.Do(ctx, upd)
	if err != nil || res.StatusCode != 200 || res.GetHeader("Session-Expires") == nil {
		t.Fatalf("refresh: %v %v", res, err)
	}
	if n := len(e.trkUAS.requests(sip.UPDATE)); n != 1 {
		t.Errorf("refresh reached the trunk %d times", n)
	}
	_ = hangUp(ctx, s)
	e.waitEnded(1)
}

// TestReloadKeepsCallSnapshot: a call keeps the configuration it started
// with; new calls take the new one.
func TestReloadKeepsCallSnapshot(t *testing.T) {
	e := newEnv(t, envOpts{referRelay: false})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refer := func(s *sipgo.DialogClientSession) int {
		req := sip.NewRequest(sip.REFER, s.InviteResponse.Contact().Address)
		req.AppendHeader(sip.NewHeader("Refer-To", "<sip:+14155550199@pbx.corp.local>"))
		res, err := s.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode
	}
	old, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	cfg := *e.cfg
	cfg.Trunks = map[string]b2bua.TrunkConfig{"itsp": e.cfg.Trunks["itsp"]}
	tc := cfg.Trunks["itsp"]
	tc.ReferRelay = true
	cfg.Trunks["itsp"] = tc
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	if code := refer(old); code != 403 {
		t.Errorf("REFER on the call started before the reload: %d, want 403", code)
	}
	nw, err := e.outbound(ctx, "94155550124")
	if err != nil {
		t.Fatal(err)
	}
	if code := refer(nw); code != 200 {
		t.Errorf("REFER on a call started after the reload: %d, want 200", code)
	}
	_ = hangUp(ctx, old)
	_ = hangUp(ctx, nw)
	e.waitEnded(2)
}

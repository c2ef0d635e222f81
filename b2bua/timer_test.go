package b2bua_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func headerValue(m interface{ GetHeader(string) sip.Header }, name string) string {
	if h := m.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// TestOwnSessionTimerTowardTrunk: the PBX supports no session timers, the
// trunk requires one. With calls.session_expires set, esbc offers its own
// timer to the trunk (retrying once after the trunk's 422 with the Min-SE
// it names), refreshes the trunk leg itself with UPDATE at half the
// interval — nothing of it reaches the PBX — and ends the call when a
// refresh gets 481 (RFC 4028 §10).
func TestOwnSessionTimerTowardTrunk(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := *e.cfg
	cfg.SessionExpires, cfg.MinSE = time.Second, time.Second
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	e.trkUAS.echoTimer.Store(true)
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		if se := headerValue(req, "Session-Expires"); !strings.HasPrefix(se, "2;") {
			res := sip.NewResponseFromRequest(req, 422, "Session Interval Too Small", nil)
			res.AppendHeader(sip.NewHeader("Min-SE", "2"))
			_ = tx.Respond(res)
			return
		}
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = sess.Respond(200, "OK", answerFor(req.Body()), sip.NewHeader("Content-Type", "application/sdp"),
			sip.NewHeader("Session-Expires", "2;refresher=uac"), sip.NewHeader("Require", "timer"),
			sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"))
		u.sessions <- sess // after Respond: the test reads the session's InviteResponse
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	e.trkUAS.mu.Lock()
	invites := append([]*sip.Request(nil), e.trkUAS.invites...)
	e.trkUAS.mu.Unlock()
	if len(invites) != 2 {
		t.Fatalf("trunk got %d INVITEs, want 2 (422, then the retry)", len(invites))
	}
	if se, min := headerValue(invites[0], "Session-Expires"), headerValue(invites[0], "Min-SE"); se != "1;refresher=uac" || min != "1" {
		t.Errorf("first INVITE: Session-Expires %q Min-SE %q", se, min)
	}
	if se, min := headerValue(invites[1], "Session-Expires"), headerValue(invites[1], "Min-SE"); se != "2;refresher=uac" || min != "2" {
		// §7.4: the retry carries the 422's Min-SE in both.
		t.Errorf("retry after 422: Session-Expires %q Min-SE %q", se, min)
	}
	if !strings.Contains(strings.Join(headerValues(invites[1], "Supported"), ","), "timer") {
		t.Errorf("INVITE toward the trunk without Supported: timer:\n%s", headersOf(invites[1]))
	}
	if se := s.InviteResponse.GetHeader("Session-Expires"); se != nil {
		t.Errorf("PBX (no timer support) got Session-Expires %q", se.Value())
	}
	for _, v := range headerValues(s.InviteResponse, "Require") {
		if strings.Contains(v, "timer") {
			t.Errorf("PBX (no timer support) got Require: %s", v)
		}
	}
	// esbc refreshes the trunk leg, twice (the second after the first 2xx
	// re-armed it).
	waitFor(t, func() bool { return len(e.trkUAS.requests(sip.UPDATE)) >= 2 }, "no session refresh toward the trunk")
	for _, u := range e.trkUAS.requests(sip.UPDATE) {
		if se, min := headerValue(u, "Session-Expires"), headerValue(u, "Min-SE"); se != "2;refresher=uac" || min != "2" {
			t.Errorf("refresh with Session-Expires %q Min-SE %q (the 422's Min-SE kept)", se, min)
		}
	}
	if n := len(e.pbxUAS.requests(sip.UPDATE)) + len(e.pbxUAS.requests(sip.INVITE)); n != 0 {
		t.Errorf("%d refreshes reached the PBX", n)
	}
	if e.b.ActiveCalls() != 1 {
		t.Fatal("call not up while refreshed")
	}
	// The trunk forgets the dialog: the next refresh gets 481, esbc ends
	// the call on both legs.
	e.trkUAS.updateCode.Store(481)
	select {
	case <-s.Context().Done():
	case <-ctx.Done():
		t.Fatal("PBX leg not ended after the failed refresh")
	}
	if ci := e.waitEnded(1)[0]; ci.Reason != "session refresh failed" {
		t.Errorf("call ended with %q", ci.Reason)
	}
}

func headerValues(m interface{ GetHeaders(string) []sip.Header }, name string) []string {
	var out []string
	for _, h := range m.GetHeaders(name) {
		out = append(out, h.Value())
	}
	return out
}

// TestSessionIntervalTooSmall: a PBX that supports timers and asks for an
// interval below calls.min_se gets 422 with Min-SE (RFC 4028 §9), and
// nothing is sent to the trunk.
func TestSessionIntervalTooSmall(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := *e.cfg
	cfg.SessionExpires, cfg.MinSE = 1800*time.Second, 90*time.Second
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000), sip.NewHeader("Content-Type", "application/sdp"),
		sip.NewHeader("Supported", "timer"), sip.NewHeader("Session-Expires", "30"))
	if err != nil {
		t.Fatal(err)
	}
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if !errorsAs(err, &de) || de.Res.StatusCode != 422 || headerValue(de.Res, "Min-SE") != "90" {
		t.Fatalf("want 422 with Min-SE: 90, got %v", err)
	}
	if inv := e.trkUAS.lastInvite(); inv != nil {
		t.Errorf("trunk got an INVITE:\n%s", headersOf(inv))
	}
	e.waitEnded(1)
}

// timerCall places an outbound call from a PBX without session-timer
// support, with calls.session_expires = se and min_se 1 s, toward a trunk
// whose 2xx carries sessionExpires (and allow as its Allow when not "").
// With media it anchors the media (SRTP toward trunk) and returns the
// trunk's SRTP peer and the PBX's RTP socket.
type timerCall struct {
	s       *sipgo.DialogClientSession
	trkSess *sipgo.DialogServerSession
	trk     *srtpPeer
	pbxRTP  *net.UDPConn
	lan     netip.AddrPort
	wan     netip.AddrPort
}

func placeTimerCall(t *testing.T, ctx context.Context, e *env, se time.Duration, sessionExpires, allow string, withRTP bool) *timerCall {
	t.Helper()
	cfg := *e.b.Config()
	cfg.SessionExpires, cfg.MinSE = se, time.Second
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	tc := &timerCall{}
	answer := answerFor
	if withRTP {
		tc.trk = newSRTPPeer(t, trunkIP)
		answer = func(offer []byte) []byte { return tc.trk.answer(t, offer) }
		e.trkUAS.setAnswer(answer)
		var err error
		tc.pbxRTP, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(pbxIP)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tc.pbxRTP.Close() })
	}
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		hdrs := []sip.Header{sip.NewHeader("Content-Type", "application/sdp"),
			sip.NewHeader("Session-Expires", sessionExpires), sip.NewHeader("Require", "timer")}
		if allow != "" {
			hdrs = append(hdrs, sip.NewHeader("Allow", allow))
		}
		_ = sess.Respond(200, "OK", answer(req.Body()), hdrs...)
		u.sessions <- sess // after Respond: the test uses the session's InviteResponse
	})
	port := 40000
	if tc.pbxRTP != nil {
		port = tc.pbxRTP.LocalAddr().(*net.UDPAddr).Port
	}
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	var err error
	tc.s, err = e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, port), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tc.s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case tc.trkSess = <-e.trkUAS.sessions:
	case <-ctx.Done():
		t.Fatal("no trunk session")
	}
	if withRTP {
		tc.lan = sdpAddr(t, tc.s.InviteResponse.Body())
		tc.wan = sdpAddr(t, e.trkUAS.lastInvite().Body())
	}
	waitFor(t, func() bool { c := e.b.Calls(); return len(c) == 1 && c[0].State == "confirmed" }, "call not confirmed")
	return tc
}

// assertReinviteRefreshes checks esbc's re-INVITE refreshes toward the
// trunk: the SDP esbc offered in its INVITE, byte for byte (the same o=
// version: no media change), esbc's timer, and an ACK for each.
func assertReinviteRefreshes(t *testing.T, e *env, n int) {
	t.Helper()
	waitFor(t, func() bool { return len(e.trkUAS.requests(sip.INVITE)) >= n }, "no re-INVITE refreshes toward the trunk")
	reinvites := e.trkUAS.requests(sip.INVITE)
	offer := e.trkUAS.lastInvite().Body()
	for _, r := range reinvites {
		if !bytes.Equal(r.Body(), offer) {
			t.Errorf("refresh re-INVITE SDP differs from esbc's offer:\n%s\nwant:\n%s", r.Body(), offer)
		}
		if se := headerValue(r, "Session-Expires"); se != "2;refresher=uac" {
			t.Errorf("refresh re-INVITE Session-Expires %q", se)
		}
		if min := headerValue(r, "Min-SE"); min != "1" {
			t.Errorf("refresh re-INVITE Min-SE %q", min)
		}
		if !strings.Contains(strings.Join(headerValues(r, "Supported"), ","), "timer") {
			t.Errorf("refresh re-INVITE without Supported: timer:\n%s", headersOf(r))
		}
	}
	last := reinvites[len(reinvites)-1].CSeq().SeqNo
	waitFor(t, func() bool {
		for _, a := range e.trkUAS.requests(sip.ACK) {
			if a.CSeq().SeqNo == last {
				return true
			}
		}
		return false
	}, "the 2xx of the last refresh re-INVITE was not ACKed")
	acked := map[uint32]bool{}
	for _, a := range e.trkUAS.requests(sip.ACK) {
		acked[a.CSeq().SeqNo] = true
	}
	for _, r := range reinvites[:len(reinvites)-1] {
		if !acked[r.CSeq().SeqNo] {
			t.Errorf("refresh re-INVITE CSeq %d not ACKed", r.CSeq().SeqNo)
		}
	}
}

// TestSessionRefreshByReinvite: the trunk makes esbc the refresher and its
// Allow lacks UPDATE: esbc refreshes with re-INVITEs carrying the SDP it
// offered (unchanged), ACKs each 2xx, and the call and its media survive
// several intervals with the media session untouched (same ports, same
// keys); nothing reaches the PBX.
func TestSessionRefreshByReinvite(t *testing.T) {
	e := withMedia(t, envOpts{})
	e.trkUAS.echoTimer.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc := placeTimerCall(t, ctx, e, 2*time.Second, "2;refresher=uac", "INVITE, ACK, BYE, CANCEL, OPTIONS", true)
	exchange(t, tc.pbxRTP, tc.lan, tc.trk, tc.wan)
	before := e.b.Snapshot()
	// Four refreshes at half of a 2 s interval: two intervals.
	assertReinviteRefreshes(t, e, 4)
	after := e.b.Snapshot()
	if n := len(e.trkUAS.requests(sip.UPDATE)); n != 0 {
		t.Errorf("%d UPDATEs toward a trunk whose Allow lacks UPDATE", n)
	}
	if n := len(e.pbxUAS.requests(sip.UPDATE)) + len(e.pbxUAS.requests(sip.INVITE)); n != 0 {
		t.Errorf("%d refreshes reached the PBX", n)
	}
	if len(before) != 1 || len(after) != 1 || before[0].Media == nil || after[0].Media == nil {
		t.Fatalf("snapshots: %+v / %+v", before, after)
	}
	// The timer state is in the snapshot (HA): leg B's interval, esbc the
	// refresher by re-INVITE, and the SDP that re-INVITE re-sends.
	if lt := after[0].Timers[1]; lt.Interval != 2 || lt.PeerRefreshes || !lt.NoUpdate || len(lt.SDP) == 0 {
		t.Errorf("leg B timer in the snapshot: %+v", lt)
	}
	mb, ma := before[0].Media, after[0].Media
	if mb.ID != ma.ID || mb.Offerer != ma.Offerer {
		t.Errorf("media session changed: %+v -> %+v", mb, ma)
	}
	for i := range mb.Legs {
		if len(mb.Legs[i].Streams) != len(ma.Legs[i].Streams) {
			t.Fatalf("leg %d streams: %d -> %d", i, len(mb.Legs[i].Streams), len(ma.Legs[i].Streams))
		}
		for j, sb := range mb.Legs[i].Streams {
			sa := ma.Legs[i].Streams[j]
			if sb.Local != sa.Local || sb.Remote != sa.Remote || sb.Codec != sa.Codec || sb.Suite != sa.Suite ||
				!bytes.Equal(sb.SendKey, sa.SendKey) || !bytes.Equal(sb.RecvKey, sa.RecvKey) {
				t.Errorf("leg %d stream %d changed by a refresh:\n%+v\n%+v", i, j, sb, sa)
			}
		}
	}
	exchange(t, tc.pbxRTP, tc.lan, tc.trk, tc.wan)
	if e.b.ActiveCalls() != 1 {
		t.Fatal("call not up after the refreshes")
	}
	if err := hangUp(ctx, tc.s); err != nil {
		t.Fatal(err)
	}
	if ci := e.waitEnded(1)[0]; ci.Reason != "bye from lan" {
		t.Errorf("call ended with %q", ci.Reason)
	}
}

// TestSessionRefreshUpdateRefused: the trunk's 2xx names no Allow; it
// answers esbc's first UPDATE refresh 501: esbc refreshes with re-INVITE
// at once and from then on (one UPDATE in all).
func TestSessionRefreshUpdateRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.trkUAS.echoTimer.Store(true)
	e.trkUAS.updateCode.Store(501)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc := placeTimerCall(t, ctx, e, 2*time.Second, "2;refresher=uac", "", false)
	assertReinviteRefreshes(t, e, 3)
	if n := len(e.trkUAS.requests(sip.UPDATE)); n != 1 {
		t.Errorf("%d UPDATEs toward the trunk, want 1 (then re-INVITE)", n)
	}
	if e.b.ActiveCalls() != 1 {
		t.Fatal("call not up after the refreshes")
	}
	if err := hangUp(ctx, tc.s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

// trunkRefresh sends a session refresh from the trunk in its dialog: a
// body-less UPDATE, or a re-INVITE with its SDP (ACKed).
func trunkRefresh(t *testing.T, ctx context.Context, e *env, tc *timerCall, method sip.RequestMethod, se string) *sip.Response {
	t.Helper()
	target := e.trkUAS.lastInvite().Contact().Address
	req := sip.NewRequest(method, target)
	req.AppendHeader(sip.NewHeader("Supported", "timer"))
	req.AppendHeader(sip.NewHeader("Session-Expires", se))
	if method == sip.INVITE {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(answerFor(e.trkUAS.lastInvite().Body()))
	}
	res, err := tc.trkSess.Do(ctx, req)
	if err != nil {
		t.Fatalf("trunk %s refresh: %v", method, err)
	}
	if method == sip.INVITE && res.IsSuccess() {
		ack := sip.NewRequest(sip.ACK, target)
		ack.AppendHeader(sip.NewHeader("CSeq", fmt.Sprintf("%d ACK", req.CSeq().SeqNo)))
		if err := tc.trkSess.WriteRequest(ack); err != nil {
			t.Fatalf("ACK: %v", err)
		}
	}
	return res
}

// TestSessionExpiresWithoutPeerRefresh: the trunk makes itself the
// refresher (refresher=uas). Its refreshes — body-less UPDATEs answered by
// esbc and re-INVITEs relayed to the PBX — keep the call up over several
// intervals; when they stop, esbc ends the call at the session expiry
// (RFC 4028 §10) with BYE on both legs, reason "session expired". esbc
// never refreshes itself.
func TestSessionExpiresWithoutPeerRefresh(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, envOpts{reg: reg})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc := placeTimerCall(t, ctx, e, 3*time.Second, "3;refresher=uas", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE", false)
	// Eight refreshes, one every half second (the watchdog: 2 s after
	// each): four seconds, beyond the 3 s interval.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 8; i++ {
		<-tick.C
		method := sip.UPDATE
		if i%4 == 3 {
			method = sip.INVITE
		}
		res := trunkRefresh(t, ctx, e, tc, method, "3;refresher=uac")
		if res.StatusCode != 200 {
			t.Fatalf("%s refresh answered %d", method, res.StatusCode)
		}
		if se := headerValue(res, "Session-Expires"); se != "3;refresher=uac" {
			t.Errorf("%s refresh 2xx Session-Expires %q", method, se)
		}
		if !strings.Contains(strings.Join(headerValues(res, "Require"), ","), "timer") {
			t.Errorf("%s refresh 2xx (refresher=uac) without Require: timer", method)
		}
	}
	if e.b.ActiveCalls() != 1 {
		t.Fatal("call ended while the trunk refreshed it")
	}
	select {
	case ci := <-e.ended:
		t.Fatalf("call ended while refreshed: %q", ci.Reason)
	default:
	}
	if n := len(e.pbxUAS.requests(sip.UPDATE)); n != 0 {
		t.Errorf("%d body-less UPDATE refreshes reached the PBX", n)
	}
	for _, r := range e.pbxUAS.requests(sip.INVITE) {
		if se := headerValue(r, "Session-Expires"); se != "" {
			t.Errorf("PBX (no timer support) got Session-Expires %q", se)
		}
	}
	// The trunk stops refreshing.
	select {
	case <-e.trkUAS.byes:
	case <-ctx.Done():
		t.Fatal("no BYE toward the trunk after the session expired")
	}
	select {
	case <-tc.s.Context().Done():
	case <-ctx.Done():
		t.Fatal("no BYE toward the PBX after the session expired")
	}
	if ci := e.waitEnded(1)[0]; ci.Reason != "session expired" {
		t.Errorf("call ended with %q", ci.Reason)
	}
	if n := len(e.trkUAS.requests(sip.UPDATE)) + len(e.trkUAS.requests(sip.INVITE)); n != 0 {
		t.Errorf("esbc sent %d refreshes although the trunk is the refresher", n)
	}
	// Counted before the CDR is written, so already there.
	want := `
# HELP esbc_calls_ended_total Answered calls ended, by who or what ended them.
# TYPE esbc_calls_ended_total counter
esbc_calls_ended_total{reason="session_expired"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "esbc_calls_ended_total"); err != nil {
		t.Error(err)
	}
}

// TestSessionExpiresRelayedTimer: the PBX asks for a session timer, the
// trunk supports none: esbc tells the PBX to refresh (refresher=uac). The
// PBX's UPDATE refreshes cross esbc and keep the call up; when they stop,
// esbc ends the call at the expiry with BYE on both legs.
func TestSessionExpiresRelayedTimer(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000), sip.NewHeader("Content-Type", "application/sdp"),
		sip.NewHeader("Supported", "timer"), sip.NewHeader("Session-Expires", "3"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if se := headerValue(s.InviteResponse, "Session-Expires"); se != "3;refresher=uac" {
		t.Fatalf("2xx to the PBX: Session-Expires %q", se)
	}
	waitFor(t, func() bool { c := e.b.Calls(); return len(c) == 1 && c[0].State == "confirmed" }, "call not confirmed")
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 6; i++ {
		<-tick.C
		req := sip.NewRequest(sip.UPDATE, s.InviteResponse.Contact().Address)
		req.AppendHeader(sip.NewHeader("Supported", "timer"))
		req.AppendHeader(sip.NewHeader("Session-Expires", "3;refresher=uac"))
		res, err := s.Do(ctx, req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("PBX refresh: %v %v", res, err)
		}
		if se := headerValue(res, "Session-Expires"); se != "3;refresher=uac" {
			t.Errorf("PBX refresh 2xx Session-Expires %q", se)
		}
	}
	if n := len(e.trkUAS.requests(sip.UPDATE)); n != 6 {
		t.Errorf("trunk got %d of the PBX's 6 refreshes", n)
	}
	select {
	case ci := <-e.ended:
		t.Fatalf("call ended while refreshed: %q", ci.Reason)
	default:
	}
	select {
	case <-e.trkUAS.byes:
	case <-ctx.Done():
		t.Fatal("no BYE toward the trunk after the session expired")
	}
	select {
	case <-s.Context().Done():
	case <-ctx.Done():
		t.Fatal("no BYE toward the PBX after the session expired")
	}
	if ci := e.waitEnded(1)[0]; ci.Reason != "session expired" {
		t.Errorf("call ended with %q", ci.Reason)
	}
}

// TestNoRequireTimerTowardPeerWithoutTimer: a refresh from a PBX that does
// not list timer in Supported never gets "Require: timer" back (RFC 4028
// §9), even when the trunk answers with one.
func TestNoRequireTimerTowardPeerWithoutTimer(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.trkUAS.echoTimer.Store(true) // the trunk answers Session-Expires + Require: timer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.UPDATE, s.InviteResponse.Contact().Address)
	req.AppendHeader(sip.NewHeader("Session-Expires", "90;refresher=uas"))
	res, err := s.Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("UPDATE: %v %v", res, err)
	}
	if n := len(e.trkUAS.requests(sip.UPDATE)); n != 1 {
		t.Fatalf("trunk got %d UPDATEs", n)
	}
	if v := headerValue(e.trkUAS.requests(sip.UPDATE)[0], "Session-Expires"); v != "90;refresher=uas" {
		t.Errorf("trunk got Session-Expires %q", v)
	}
	for _, v := range headerValues(res, "Require") {
		if strings.Contains(v, "timer") {
			t.Errorf("PBX without timer support got Require: %s", v)
		}
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

// TestRefreshFromPeerWithoutTimerSupport: on leg B, where esbc runs its
// own timer and the trunk was the refresher, a body-less UPDATE refresh
// that does not list timer in Supported is answered with
// refresher=uas and no "Require: timer" (RFC 4028 §9), and esbc takes the
// refresher role: it refreshes the trunk leg itself and the call stays up.
func TestRefreshFromPeerWithoutTimerSupport(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.trkUAS.echoTimer.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc := placeTimerCall(t, ctx, e, 2*time.Second, "2;refresher=uas", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE", false)
	req := sip.NewRequest(sip.UPDATE, e.trkUAS.lastInvite().Contact().Address)
	req.AppendHeader(sip.NewHeader("Session-Expires", "2"))
	res, err := tc.trkSess.Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("UPDATE: %v %v", res, err)
	}
	if se := headerValue(res, "Session-Expires"); se != "2;refresher=uas" {
		t.Errorf("2xx Session-Expires %q, want esbc (uas) the refresher", se)
	}
	if v := strings.Join(headerValues(res, "Require"), ","); strings.Contains(v, "timer") {
		t.Errorf("2xx to a UAC without timer support has Require: %s", v)
	}
	// esbc refreshes now, across more than one interval.
	waitFor(t, func() bool { return len(e.trkUAS.requests(sip.UPDATE)) >= 3 }, "esbc does not refresh after taking the refresher role")
	for _, u := range e.trkUAS.requests(sip.UPDATE) {
		if se := headerValue(u, "Session-Expires"); se != "2;refresher=uac" {
			t.Errorf("esbc refresh with Session-Expires %q", se)
		}
	}
	if n := len(e.pbxUAS.requests(sip.UPDATE)); n != 0 {
		t.Errorf("%d refreshes reached the PBX", n)
	}
	select {
	case ci := <-e.ended:
		t.Fatalf("call ended: %q", ci.Reason)
	default:
	}
	if err := hangUp(ctx, tc.s); err != nil {
		t.Fatal(err)
	}
	if ci := e.waitEnded(1)[0]; ci.Reason != "bye from lan" {
		t.Errorf("call ended with %q", ci.Reason)
	}
}

// TestLateOfferSessionRefreshByReinvite: a delayed-offer call (the PBX's
// INVITE has no SDP; esbc's answer toward the trunk travels in its ACK)
// toward a trunk that makes esbc the refresher and takes no UPDATE: the
// refresh re-INVITEs carry the SDP of esbc's ACK, unchanged.
func TestLateOfferSessionRefreshByReinvite(t *testing.T) {
	e := withMedia(t, envOpts{})
	cfg := *e.b.Config()
	cfg.SessionExpires, cfg.MinSE = 2*time.Second, time.Second
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	trk := newSRTPPeer(t, trunkIP)
	e.trkUAS.echoTimer.Store(true)
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = sess.Respond(200, "OK", trk.sdp("1"), sip.NewHeader("Content-Type", "application/sdp"),
			sip.NewHeader("Session-Expires", "2;refresher=uac"), sip.NewHeader("Require", "timer"),
			sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"))
		u.sessions <- sess
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lc := placeLateOfferCall(t, ctx, e, trk)
	trunkAck := lc.trunkAck
	waitFor(t, func() bool { return len(e.trkUAS.requests(sip.INVITE)) >= 2 }, "no re-INVITE refreshes toward the trunk")
	for _, r := range e.trkUAS.requests(sip.INVITE) {
		if !bytes.Equal(r.Body(), trunkAck.Body()) {
			t.Errorf("refresh re-INVITE SDP differs from esbc's answer in its ACK:\n%s\nwant:\n%s", r.Body(), trunkAck.Body())
		}
		if se := headerValue(r, "Session-Expires"); se != "2;refresher=uac" {
			t.Errorf("refresh re-INVITE Session-Expires %q", se)
		}
	}
	if n := len(e.trkUAS.requests(sip.UPDATE)); n != 0 {
		t.Errorf("%d UPDATEs toward a trunk whose Allow lacks UPDATE", n)
	}
	lc.exchange(t, trk)
	if e.b.ActiveCalls() != 1 {
		t.Fatal("call not up after the refreshes")
	}
	if err := hangUp(ctx, lc.s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

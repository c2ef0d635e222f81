package b2bua_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
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
		u.sessions <- sess
		_ = sess.Respond(200, "OK", answerFor(req.Body()), sip.NewHeader("Content-Type", "application/sdp"),
			sip.NewHeader("Session-Expires", "2;refresher=uac"), sip.NewHeader("Require", "timer"),
			sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"))
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
	if se := headerValue(invites[1], "Session-Expires"); se != "2;refresher=uac" {
		t.Errorf("retry after 422: Session-Expires %q", se)
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
		if se := headerValue(u, "Session-Expires"); se != "2;refresher=uac" {
			t.Errorf("refresh with Session-Expires %q", se)
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

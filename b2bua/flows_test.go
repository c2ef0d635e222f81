package b2bua_test

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestOutboundCancel(t *testing.T) {
	e := newEnv(t, envOpts{})
	cancelled := make(chan struct{})
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		tx.OnCancel(func(*sip.Request) { close(cancelled) })
		_ = tx.Respond(sip.NewResponseFromRequest(req, 180, "Ringing", nil))
		<-tx.Done()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	ringCtx, ringCancel := context.WithCancel(ctx)
	err = s.WaitAnswer(ringCtx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if r.StatusCode == 180 {
			ringCancel() // the caller hangs up while it rings
		}
		return nil
	}})
	if err == nil {
		t.Fatal("cancelled call answered")
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("trunk got no CANCEL")
	}
	if cdr := e.waitEnded(1)[0]; cdr.Disposition != "cancelled" {
		t.Errorf("disposition %q", cdr.Disposition)
	}
}

func TestEarlyMediaAndBusy(t *testing.T) {
	e := newEnv(t, envOpts{})
	sawEarly := make(chan struct{})
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, 183, "Session Progress", answerFor(req.Body()))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
		// sipgo handles each message on its own goroutine: let the PBX see
		// the 183 before the final response is sent.
		select {
		case <-sawEarly:
		case <-time.After(5 * time.Second):
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, 486, "Busy Here", nil))
		<-tx.Done()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	var early atomic.Bool
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if r.StatusCode == 183 && strings.Contains(string(r.Body()), "m=audio") {
			early.Store(true)
			close(sawEarly)
		}
		return nil
	}})
	if code := statusOf(err); code != 486 {
		t.Fatalf("final %d (%v), want 486", code, err)
	}
	if !early.Load() {
		t.Error("183 with SDP not relayed")
	}
	if cdr := e.waitEnded(1)[0]; cdr.Disposition != "busy" {
		t.Errorf("disposition %q", cdr.Disposition)
	}
}

func TestRoutingFailures(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, envOpts{reg: reg})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		number string
		code   int
	}{{"123", 404}, {"9911", 403}} {
		_, err := e.outbound(ctx, tc.number)
		if code := statusOf(err); code != tc.code {
			t.Errorf("%s: %d (%v), want %d", tc.number, code, err, tc.code)
		}
	}
	if inv := e.trkUAS.lastInvite(); inv != nil {
		t.Error("refused call reached the trunk")
	}
	// Counted before the refusal is sent, so already there.
	want := `
# HELP esbc_calls_refused_total INVITEs refused before a leg B was attempted, by side and reason.
# TYPE esbc_calls_refused_total counter
esbc_calls_refused_total{reason="emergency_blocked",side="lan"} 1
esbc_calls_refused_total{reason="no_route",side="lan"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "esbc_calls_refused_total"); err != nil {
		t.Error(err)
	}
}

func TestAuthChallengeOnInvite(t *testing.T) {
	e := newEnv(t, envOpts{auth: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatalf("call through a challenging trunk: %v", err)
	}
	if e.trkUAS.authed.Load() != 1 {
		t.Errorf("authenticated INVITEs: %d", e.trkUAS.authed.Load())
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

func TestFailoverDeadPrimary(t *testing.T) {
	e := newEnv(t, envOpts{deadPrimary: true, failoverTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatalf("call with a dead primary: %v", err)
	}
	if e.trkUAS.lastInvite() == nil {
		t.Fatal("secondary got no INVITE")
	}
	down := 0
	for _, st := range e.health.Snapshot() {
		if !st.Up {
			down++
		}
	}
	if down != 1 {
		t.Errorf("%d targets down, want the dead primary", down)
	}
	_ = hangUp(ctx, s)
	e.waitEnded(1)
}

func TestFailover503(t *testing.T) {
	e := newEnv(t, envOpts{secondServer: true})
	e.trk2UAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatalf("call with a 503 primary: %v", err)
	}
	if e.trk2UAS.lastInvite() == nil || e.trkUAS.lastInvite() == nil {
		t.Fatal("both servers should have seen the INVITE")
	}
	// In-dialog requests stay with the serving target: the BYE goes to the secondary.
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.trkUAS.byes:
	case <-ctx.Done():
		t.Fatal("no BYE at the serving target")
	}
	e.waitEnded(1)
}

func TestChannelLimit(t *testing.T) {
	e := newEnv(t, envOpts{channels: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.outbound(ctx, "94155550124")
	if code := statusOf(err); code != 503 {
		t.Fatalf("second call %d (%v), want 503", code, err)
	}
	_ = hangUp(ctx, s)
	e.waitEnded(2)
	s, err = e.outbound(ctx, "94155550125")
	if err != nil {
		t.Fatalf("channel not released: %v", err)
	}
	_ = hangUp(ctx, s)
	e.waitEnded(1)
}

func TestDrain(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() { drained <- e.b.Drain(ctx) }()
	for !e.b.Draining() {
		time.Sleep(time.Millisecond)
	}
	// New calls are refused with Retry-After.
	uri := sip.Uri{Scheme: "sip", User: "94155550124", Host: lanIP, Port: e.lan.port()}
	s2, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40002), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	err = s2.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if code := statusOf(err); code != 503 {
		t.Fatalf("INVITE while draining: %d (%v)", code, err)
	}
	if errorsAs(err, &de) && de.Res.GetHeader("Retry-After") == nil {
		t.Error("503 without Retry-After")
	}
	// In-dialog requests are still served.
	info := sip.NewRequest(sip.INFO, s.InviteResponse.Contact().Address)
	info.AppendHeader(sip.NewHeader("Content-Type", "application/dtmf-relay"))
	info.SetBody([]byte("Signal=5\r\nDuration=160\r\n"))
	res, err := s.Do(ctx, info)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("INFO while draining: %v %v", res, err)
	}
	select {
	case err := <-drained:
		t.Fatalf("drain ended with a call up: %v", err)
	default:
	}
	_ = hangUp(ctx, s)
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	e.waitEnded(2)
}

// TestFailoverSilentPrimary: the primary accepts the TLS connection but
// never answers the INVITE (not even 100): after failover_timeout the call
// goes to the secondary; the PBX sees only the delay.
func TestFailoverSilentPrimary(t *testing.T) {
	e := newEnv(t, envOpts{secondServer: true, failoverTimeout: 300 * time.Millisecond,
		primaryFilter: func(_ sip.TransportReadProps, data []byte) ([]byte, error) {
			if bytes.HasPrefix(data, []byte("INVITE ")) {
				return nil, nil
			}
			return data, nil
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatalf("call with a silent primary: %v", err)
	}
	if e.trkUAS.lastInvite() == nil {
		t.Fatal("secondary got no INVITE")
	}
	var downs []string
	for _, st := range e.health.Snapshot() {
		if !st.Up {
			downs = append(downs, st.Target+" "+st.Reason)
		}
	}
	if len(downs) != 1 || !strings.Contains(downs[0], trunk2IP) {
		t.Errorf("targets down: %v", downs)
	}
	_ = hangUp(ctx, s)
	e.waitEnded(1)
}

package b2bua_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// ok200 is a 2xx to an INVITE with a To tag and a Contact.
func ok200(u *uas, req *sip.Request, tag string) *sip.Response {
	res := sip.NewResponseFromRequest(req, 200, "OK", answerFor(req.Body()))
	res.To().Params.Add("tag", tag)
	res.AppendHeader(sip.HeaderClone(&u.contact))
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	return res
}

// byeFor is the callee's BYE in the dialog a 200 created.
func byeFor(u *uas, inv *sip.Request, tag string) *sip.Request {
	bye := sip.NewRequest(sip.BYE, inv.Contact().Address)
	from := inv.To().AsFrom()
	from.Params.Add("tag", tag)
	bye.AppendHeader(&from)
	to := inv.From().AsTo()
	bye.AppendHeader(&to)
	bye.AppendHeader(sip.HeaderClone(inv.CallID()))
	bye.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.BYE})
	bye.SetTransport("TLS")
	bye.SetDestination(inv.Source())
	return bye
}

// TestByeCrossing200: the trunk answers and hangs up at once; its BYE may
// be handled before its 200. The call must end on both legs, the trunk's
// 200 must be ACKed, and nothing may be left behind.
func TestByeCrossing200(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(ok200(u, req, "crosstag"))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = u.st.cli.Do(ctx, byeFor(u, req, "crosstag"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err == nil {
		// The PBX got the 200: then esbc must end its dialog with a BYE.
		select {
		case <-s.Context().Done():
		case <-ctx.Done():
			t.Fatal("PBX leg not ended after the trunk's BYE")
		}
	}
	e.waitEnded(1)
	if n := e.b.ActiveCalls(); n != 0 {
		t.Fatalf("%d calls left", n)
	}
	waitFor(t, func() bool { return len(e.trkUAS.requests(sip.ACK)) >= 1 }, "trunk's 200 not ACKed")
}

// TestLate200AfterCancel: the trunk answers 200 after esbc sent CANCEL (the
// trunk never saw the CANCEL: it is dropped on the way). esbc ACKs the 200
// and sends BYE; the PBX sees the call cancelled.
func TestLate200AfterCancel(t *testing.T) {
	cancelSeen := make(chan struct{}, 1)
	e := newEnv(t, envOpts{trunkFilter: func(_ sip.TransportReadProps, data []byte) ([]byte, error) {
		if bytes.HasPrefix(data, []byte("CANCEL ")) {
			select {
			case cancelSeen <- struct{}{}:
			default:
			}
			return nil, nil // lost on the way
		}
		return data, nil
	}})
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 180, "Ringing", nil))
		select {
		case <-cancelSeen:
		case <-tx.Done():
			return
		}
		_ = tx.Respond(ok200(u, req, "latetag"))
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
			ringCancel()
		}
		return nil
	}})
	if err == nil {
		t.Fatal("cancelled call answered toward the PBX")
	}
	waitFor(t, func() bool { return len(e.trkUAS.requests(sip.ACK)) >= 1 }, "late 200 not ACKed")
	select {
	case <-e.trkUAS.byes:
	case <-ctx.Done():
		t.Fatal("late 200 not followed by BYE")
	}
	if cdr := e.waitEnded(1)[0]; cdr.Disposition != "cancelled" {
		t.Errorf("disposition %q", cdr.Disposition)
	}
}

// TestCancelCrossing200: CANCEL from the PBX and 200 from the trunk at the
// same moment. Either the PBX gets the 200 (and the call is up, ended by a
// BYE), or it gets 487 and the trunk's dialog is ACKed and BYEd. Repeated.
func TestCancelCrossing200(t *testing.T) {
	e := newEnv(t, envOpts{})
	release := make(chan struct{}, 1)
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 180, "Ringing", nil))
		select {
		case <-release:
		case <-tx.Done():
			return
		}
		_ = tx.Respond(ok200(u, req, sip.GenerateTagN(8)))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 10
	for i := 0; i < n; i++ {
		uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
		s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000), sip.NewHeader("Content-Type", "application/sdp"))
		if err != nil {
			t.Fatal(err)
		}
		ringCtx, ringCancel := context.WithCancel(ctx)
		err = s.WaitAnswer(ringCtx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
			if r.StatusCode == 180 {
				release <- struct{}{}
				ringCancel()
			}
			return nil
		}})
		ringCancel()
		if err == nil || s.InviteResponse != nil && s.InviteResponse.IsSuccess() {
			_ = s.Ack(ctx)
			_ = hangUp(ctx, s)
		} else if !errors.Is(err, context.Canceled) && statusOf(err) != 487 {
			t.Logf("call %d: %v", i, err)
		}
	}
	e.waitEnded(n)
	waitFor(t, func() bool { return e.b.ActiveCalls() == 0 }, "calls left behind")
}

// waitFor polls cond (bounded) — a readiness wait, not a timed assertion.
func waitFor(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

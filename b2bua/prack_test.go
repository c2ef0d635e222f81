package b2bua_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// reliable is the pair of headers that makes a 18x reliable (RFC 3262 §3).
func reliable(rseq int) []sip.Header {
	return []sip.Header{sip.NewHeader("Require", "100rel"), sip.NewHeader("RSeq", fmt.Sprint(rseq))}
}

// awaitPrack waits (bounded) for a PRACK whose RAck is rack.
func awaitPrack(u *uas, rack string, done <-chan struct{}) *sip.Request {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case p := <-u.pracks:
			if h := p.GetHeader("RAck"); h != nil && h.Value() == rack {
				return p
			}
		case <-done:
			return nil
		case <-t.C:
			return nil
		}
	}
}

func hasTag(m interface{ GetHeaders(string) []sip.Header }, name, tag string) bool {
	for _, h := range m.GetHeaders(name) {
		for _, tok := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(tok), tag) {
				return true
			}
		}
	}
	return false
}

// TestPrackTowardTrunk: the trunk sends a reliable 183 with SDP, a
// retransmission of it, a reliable 180 out of order (RSeq +2), then the
// reliable 180 in order and 200. esbc PRACKs RSeq 1 and 2 once each, in
// the early dialog, with the right RAck (RFC 3262 §4); the PBX (which did
// not require 100rel) gets each 18x once, unreliably, the 183 with
// early-media SDP; the call completes with media both ways.
func TestPrackTowardTrunk(t *testing.T) {
	e := withMedia(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	trk := newSRTPPeer(t, trunkIP)
	sawMarker := make(chan struct{})
	saw180 := make(chan struct{})
	scriptErr := make(chan string, 4)
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		ans := trk.answer(t, req.Body())
		ct := sip.NewHeader("Content-Type", "application/sdp")
		cseq := req.CSeq().SeqNo
		_ = sess.Respond(183, "Session Progress", ans, append(reliable(1), ct)...)
		if awaitPrack(u, fmt.Sprintf("1 %d INVITE", cseq), tx.Done()) == nil {
			scriptErr <- "no PRACK for RSeq 1"
			return
		}
		_ = sess.Respond(183, "Session Progress", ans, append(reliable(1), ct)...) // retransmission
		_ = sess.Respond(180, "Ringing", nil, reliable(3)...)                      // out of order
		_ = sess.Respond(181, "Call Is Being Forwarded", nil)                      // unreliable marker
		select {
		case <-sawMarker: // the two above were read by esbc before it
		case <-time.After(5 * time.Second):
			scriptErr <- "PBX saw no 181"
			return
		}
		_ = sess.Respond(180, "Ringing", nil, reliable(2)...)
		if awaitPrack(u, fmt.Sprintf("2 %d INVITE", cseq), tx.Done()) == nil {
			scriptErr <- "no PRACK for RSeq 2"
			return
		}
		select {
		case <-saw180: // a 200 right behind it could overtake it at the PBX
		case <-time.After(5 * time.Second):
			scriptErr <- "PBX saw no 180"
			return
		}
		_ = sess.Respond(200, "OK", ans, ct)
		u.sessions <- sess // after Respond: the test reads the session's InviteResponse
	})
	e.trkUAS.setAnswer(func(offer []byte) []byte { return trk.answer(t, offer) })
	pbxRTP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(pbxIP)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pbxRTP.Close() })
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, pbxRTP.LocalAddr().(*net.UDPAddr).Port),
		sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[int]int{}
	var early []byte
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if !r.IsProvisional() || r.StatusCode == 100 {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		seen[r.StatusCode]++
		if r.GetHeader("RSeq") != nil || hasTag(r, "Require", "100rel") {
			t.Errorf("PBX that did not require 100rel got a reliable %d", r.StatusCode)
		}
		if r.StatusCode == 183 {
			early = r.Body()
		}
		if r.StatusCode == 181 {
			close(sawMarker)
		}
		if r.StatusCode == 180 && seen[180] == 1 {
			close(saw180)
		}
		return nil
	}})
	select {
	case m := <-scriptErr:
		t.Fatal(m)
	default:
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if seen[183] != 1 || seen[180] != 1 || seen[181] != 1 {
		t.Errorf("18x at the PBX: %v (want 183, 181, 180 once each)", seen)
	}
	if !strings.Contains(string(early), "m=audio") {
		t.Errorf("183 at the PBX without early-media SDP:\n%s", early)
	}
	mu.Unlock()

	inv := e.trkUAS.lastInvite()
	if !hasTag(inv, "Supported", "100rel") || hasTag(inv, "Require", "100rel") {
		t.Errorf("INVITE toward the trunk: want Supported: 100rel, no Require:\n%s", headersOf(inv))
	}
	exchange(t, pbxRTP, sdpAddr(t, s.InviteResponse.Body()), trk, sdpAddr(t, inv.Body()))
	trkSess := <-e.trkUAS.sessions
	trkTag, _ := trkSess.InviteResponse.To().Params.Get("tag")
	cseq := inv.CSeq().SeqNo
	// The RSeq PRACKed per early dialog is plain call state (HA).
	if snap := e.b.Snapshot(); len(snap) != 1 || snap[0].Prack.RSeqB[fmt.Sprintf("%d %s", cseq, trkTag)] != 2 {
		t.Errorf("snapshot's PRACK state: %+v", snap)
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
	// Close waits for every goroutine of esbc's (a PRACK sent late would
	// be on the wire and answered by now).
	if err := e.b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	pracks := e.trkUAS.requests(sip.PRACK)
	var racks []string
	for _, p := range pracks {
		racks = append(racks, p.GetHeader("RAck").Value())
		if tag, _ := p.To().Params.Get("tag"); tag == "" || tag != trkTag {
			t.Errorf("PRACK outside the early dialog (To tag %q):\n%s", tag, headersOf(p))
		}
		if p.Recipient.User != "uas" || p.CallID().Value() != inv.CallID().Value() {
			t.Errorf("PRACK Request-URI/Call-ID:\n%s", headersOf(p))
		}
	}
	want := []string{fmt.Sprintf("1 %d INVITE", cseq), fmt.Sprintf("2 %d INVITE", cseq)}
	if strings.Join(racks, "|") != strings.Join(want, "|") {
		t.Errorf("PRACKs' RAck %q, want %q", racks, want)
	}
}

// TestPrackFromPBX: a PBX that requires 100rel gets every 18x reliably
// (Require: 100rel, RSeq counting up by one), each retransmitted until its
// PRACK (RFC 3262 §3: this PBX PRACKs only the second copy), esbc answers
// the PRACKs 200 itself (the trunk sees none, and no 100rel), the second
// 18x waits for the first one's PRACK and the 2xx for the PRACK of the 183
// with SDP.
func TestPrackFromPBX(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// The trunk sends its next response once the PBX has seen the first
	// copy of the previous one (sipgo reads responses on goroutines of
	// their own: a 200 right behind a 18x may overtake it).
	seen := make(chan int, 8)
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		ans := answerFor(req.Body())
		ct := sip.NewHeader("Content-Type", "application/sdp")
		wait := func(code int) bool {
			for {
				select {
				case c := <-seen:
					if c == code {
						return true
					}
				case <-tx.Done():
					return false
				}
			}
		}
		_ = sess.Respond(180, "Ringing", nil)
		if !wait(180) {
			return
		}
		_ = sess.Respond(183, "Session Progress", ans, ct) // held by esbc until the 180's PRACK
		if !wait(183) {
			return
		}
		_ = sess.Respond(200, "OK", ans, ct) // held by esbc until the 183's PRACK
		u.sessions <- sess                   // after Respond: the test reads the session's InviteResponse
	})
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000),
		sip.NewHeader("Content-Type", "application/sdp"), sip.NewHeader("Require", "100rel"),
		sip.NewHeader("Supported", "100rel, timer"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	copies := map[string]int{}    // RSeq → copies received
	codeOf := map[string]int{}    // RSeq → status
	pracked := map[string]bool{}  // RSeq → PRACK answered 200
	var order []string            // RSeq in order of first arrival
	var prackedBefore2xx []string // RSeq PRACKed (200) when the 2xx came
	var prackErr []string
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		mu.Lock()
		defer mu.Unlock()
		if r.IsSuccess() {
			for k := range pracked {
				prackedBefore2xx = append(prackedBefore2xx, k)
			}
			return nil
		}
		if !r.IsProvisional() || r.StatusCode == 100 {
			return nil
		}
		rs := r.GetHeader("RSeq")
		if rs == nil || !hasTag(r, "Require", "100rel") {
			prackErr = append(prackErr, fmt.Sprintf("unreliable %d to a PBX that requires 100rel", r.StatusCode))
			return nil
		}
		k := rs.Value()
		if copies[k] == 0 {
			order = append(order, k)
			seen <- r.StatusCode
		}
		copies[k]++
		codeOf[k] = r.StatusCode
		if copies[k] != 2 || pracked[k] {
			return nil // PRACK only the retransmission: proves esbc retransmits
		}
		if len(pracked) == 0 {
			// Bad input first: PRACKs whose RAck matches nothing (a wrong
			// RSeq, garbage) get 481 and acknowledge nothing.
			for _, rack := range []string{fmt.Sprintf("%s9 %d INVITE", k, s.InviteRequest.CSeq().SeqNo), "garbage"} {
				bad := sip.NewRequest(sip.PRACK, r.Contact().Address)
				bad.Laddr = s.InviteRequest.Laddr
				bad.AppendHeader(sip.NewHeader("RAck", rack))
				mu.Unlock()
				res, err := s.Do(ctx, bad)
				mu.Lock()
				if err != nil || res.StatusCode != 481 {
					prackErr = append(prackErr, fmt.Sprintf("PRACK with RAck %q: %v %v, want 481", rack, res, err))
				}
			}
		}
		prack := sip.NewRequest(sip.PRACK, r.Contact().Address)
		prack.Laddr = s.InviteRequest.Laddr
		prack.AppendHeader(sip.NewHeader("RAck", fmt.Sprintf("%s %d INVITE", k, s.InviteRequest.CSeq().SeqNo)))
		pracked[k] = true // before the PRACK leaves: esbc's 2xx can only follow it
		mu.Unlock()
		res, err := s.Do(ctx, prack)
		mu.Lock()
		if err != nil || res.StatusCode != 200 {
			prackErr = append(prackErr, fmt.Sprintf("PRACK %s: %v %v", k, res, err))
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, m := range prackErr {
		t.Error(m)
	}
	if len(order) != 2 || codeOf[order[0]] != 180 || codeOf[order[1]] != 183 {
		t.Fatalf("reliable 18x at the PBX: order %v codes %v", order, codeOf)
	}
	var first, second uint64
	fmt.Sscan(order[0], &first)
	fmt.Sscan(order[1], &second)
	if first == 0 || second != first+1 {
		t.Errorf("RSeq %d then %d: want a start in 1..2^31-1, then +1", first, second)
	}
	if len(prackedBefore2xx) != 2 {
		t.Errorf("2xx before the PRACK of the 183 with SDP: PRACKed then %v", prackedBefore2xx)
	}
	mu.Unlock()
	inv := e.trkUAS.lastInvite()
	if hasTag(inv, "Require", "100rel") || !hasTag(inv, "Supported", "100rel") || !hasTag(inv, "Supported", "timer") {
		t.Errorf("INVITE toward the trunk:\n%s", headersOf(inv))
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	if cdr := e.waitEnded(1)[0]; cdr.Disposition != "answered" {
		t.Errorf("disposition %q", cdr.Disposition)
	}
	if n := len(e.trkUAS.requests(sip.PRACK)); n != 0 {
		t.Errorf("%d PRACKs relayed to the trunk", n)
	}
}

// TestRequireUnsupported: an INVITE that requires an option tag esbc does
// not support gets 420 with Unsupported (RFC 3261 §8.2.2.3), counted in
// esbc_calls_refused_total{reason="bad_extension"}; 100rel and timer are
// supported.
func TestRequireUnsupported(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, envOpts{reg: reg})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct{ require, unsupported string }{
		{"foo", "foo"},
		{"100rel, replaces, timer", "replaces"},
	} {
		uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
		s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000),
			sip.NewHeader("Content-Type", "application/sdp"), sip.NewHeader("Require", tc.require))
		if err != nil {
			t.Fatal(err)
		}
		err = s.WaitAnswer(ctx, sipgo.AnswerOptions{})
		var de *sipgo.ErrDialogResponse
		if !errorsAs(err, &de) || de.Res.StatusCode != 420 {
			t.Fatalf("Require: %s: %v, want 420", tc.require, err)
		}
		if h := de.Res.GetHeader("Unsupported"); h == nil || h.Value() != tc.unsupported {
			t.Errorf("Require: %s: 420 with Unsupported %v, want %q", tc.require, h, tc.unsupported)
		}
	}
	if inv := e.trkUAS.lastInvite(); inv != nil {
		t.Error("refused call reached the trunk")
	}
	want := `
# HELP esbc_calls_refused_total INVITEs refused before a leg B was attempted, by side and reason.
# TYPE esbc_calls_refused_total counter
esbc_calls_refused_total{reason="bad_extension",side="lan"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "esbc_calls_refused_total"); err != nil {
		t.Error(err)
	}
	e.waitEnded(2)
}

// TestPrackDigest: a trunk that challenges in-dialog requests challenges
// esbc's PRACK too; esbc answers with the trunk's credentials (a new CSeq,
// the same RAck) and the call completes.
func TestPrackDigest(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	challenged := make(chan struct{}, 4)
	e.trkUAS.setInDialogAuth("990500000231", "s3cret", challenged)
	authed := make(chan *sip.Request, 1)
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		rack := fmt.Sprintf("7 %d INVITE", req.CSeq().SeqNo)
		_ = sess.Respond(180, "Ringing", nil, reliable(7)...)
		for {
			p := awaitPrack(u, rack, tx.Done())
			if p == nil {
				return
			}
			if verifyDigest(p, "990500000231", "s3cret") {
				authed <- p
				break
			}
		}
		_ = sess.Respond(200, "OK", answerFor(req.Body()), sip.NewHeader("Content-Type", "application/sdp"))
		u.sessions <- sess // after Respond: the test reads the session's InviteResponse
	})
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-challenged:
	default:
		t.Fatal("the trunk did not challenge the PRACK")
	}
	select {
	case p := <-authed:
		if p.CSeq().MethodName != sip.PRACK {
			t.Errorf("PRACK CSeq %v", p.CSeq())
		}
	default:
		t.Fatal("no PRACK with credentials")
	}
	e.trkUAS.setInDialogAuth("", "", nil)
	_ = hangUp(ctx, s)
	e.waitEnded(1)
}

// TestPrackInbound: a trunk that requires 100rel calls a PBX that sends
// a reliable 183 with SDP itself: esbc PRACKs the PBX over UDP and sends
// its own reliable 183 (its own RSeq) to the trunk over TLS, answers the
// trunk's PRACK 200 before its 2xx, and the call completes.
func TestPrackInbound(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	e.pbxUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = sess.Respond(183, "Session Progress", answerFor(req.Body()),
			append(reliable(42), sip.NewHeader("Content-Type", "application/sdp"))...)
		if awaitPrack(u, fmt.Sprintf("42 %d INVITE", req.CSeq().SeqNo), tx.Done()) == nil {
			return
		}
		_ = sess.Respond(200, "OK", answerFor(req.Body()), sip.NewHeader("Content-Type", "application/sdp"))
		u.sessions <- sess // after Respond: the test reads the session's InviteResponse
	})
	uri := sip.Uri{Scheme: "sip", User: "+14155550100", Host: wanIP, Port: e.wan.port(), UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}
	s, err := e.trkUAC.dcc.Invite(ctx, uri, sdpOffer(trunkIP, 50000),
		&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+442071234567", Host: "trunk.test"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}},
		sip.NewHeader("Content-Type", "application/sdp"), sip.NewHeader("Require", "100rel"))
	if err != nil {
		t.Fatal(err)
	}
	var rseq string
	var prackCode int
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if r.StatusCode != 183 || rseq != "" {
			return nil
		}
		h := r.GetHeader("RSeq")
		if h == nil || !hasTag(r, "Require", "100rel") {
			return fmt.Errorf("unreliable 183 to a trunk that requires 100rel")
		}
		rseq = h.Value()
		prack := sip.NewRequest(sip.PRACK, r.Contact().Address)
		prack.AppendHeader(sip.NewHeader("RAck", fmt.Sprintf("%s %d INVITE", rseq, s.InviteRequest.CSeq().SeqNo)))
		res, err := s.Do(ctx, prack)
		if err != nil {
			return err
		}
		prackCode = res.StatusCode
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if rseq == "" || rseq == "42" || prackCode != 200 {
		t.Errorf("trunk's reliable 183: RSeq %q (esbc numbers its own), PRACK answered %d", rseq, prackCode)
	}
	inv := e.pbxUAS.lastInvite()
	if !hasTag(inv, "Supported", "100rel") || hasTag(inv, "Require", "100rel") {
		t.Errorf("INVITE toward the PBX:\n%s", headersOf(inv))
	}
	if n := len(e.pbxUAS.requests(sip.PRACK)); n != 1 {
		t.Errorf("%d PRACKs at the PBX, want 1", n)
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

// TestPrackMissing: a PBX that requires 100rel and never PRACKs gets the
// reliable 180 retransmitted, then 500 after 64*T1 (RFC 3262 §3); the
// trunk's INVITE is cancelled.
func TestPrackMissing(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cancelled := make(chan struct{})
	e.trkUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		tx.OnCancel(func(*sip.Request) { close(cancelled) })
		_ = tx.Respond(sip.NewResponseFromRequest(req, 180, "Ringing", nil))
		<-tx.Done()
	})
	uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000),
		sip.NewHeader("Content-Type", "application/sdp"), sip.NewHeader("Require", "100rel"))
	if err != nil {
		t.Fatal(err)
	}
	copies := 0
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if r.StatusCode == 180 && r.GetHeader("RSeq") != nil {
			copies++
		}
		return nil
	}})
	if code := statusOf(err); code != 500 {
		t.Fatalf("%v, want 500", err)
	}
	if copies < 2 {
		t.Errorf("reliable 180 sent %d times, want retransmissions", copies)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("trunk got no CANCEL")
	}
	if cdr := e.waitEnded(1)[0]; cdr.Code != 500 {
		t.Errorf("CDR code %d", cdr.Code)
	}
}

package b2bua

import (
	"context"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// onAck takes leg A's ACK of the 2xx; ACKs of relayed re-INVITEs end here
// too (esbc ACKed the other leg itself).
func (b *B2BUA) onAck(s *side, req *sip.Request, _ sip.ServerTransaction) {
	l := b.findLeg(req)
	if l == nil {
		return
	}
	c := l.call
	cs := req.CSeq()
	if cs == nil {
		return
	}
	c.mu.Lock()
	if w := c.reAck[l.idx]; w != nil && w.seq == cs.SeqNo {
		close(w.ch)
		c.reAck[l.idx] = nil
		c.mu.Unlock()
		return
	}
	initial := l == c.A && cs.SeqNo == c.aInviteSeq
	if initial && c.ackBody == nil && len(req.Body()) > 0 {
		c.ackBody = req.Body()
		if h := req.GetHeader("Content-Type"); h != nil && validValue(h.Value()) {
			c.ackCType = h.Value()
		}
	}
	c.mu.Unlock()
	if initial {
		c.ackOnce.Do(func() { close(c.ackCh) })
	}
}

// onBye ends the call from the leg the BYE came on.
func (b *B2BUA) onBye(s *side, req *sip.Request, tx sip.ServerTransaction) {
	l := b.findLeg(req)
	if l == nil {
		b.respond(s, req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	c := l.call
	if cs := req.CSeq(); cs != nil {
		// After leg A's ACK (relayed first) and any lower CSeq of this peer.
		defer b.awaitTurn(c, l, cs.SeqNo)()
	}
	c.mu.Lock()
	if cs := req.CSeq(); cs != nil && cs.SeqNo > l.Dialog.RemoteCSeq {
		l.Dialog.RemoteCSeq = cs.SeqNo
	}
	if l.Dialog.RemoteTag == "" {
		if tag, ok := req.From().Params.Get("tag"); ok {
			l.Dialog.RemoteTag = tag
		}
	}
	c.mu.Unlock()
	b.respond(s, req, tx, 200, "OK")
	b.hangup(c, l, "bye from "+l.Side)
}

// onInDialog relays a request inside a dialog (re-INVITE, UPDATE, INFO,
// OPTIONS, REFER, NOTIFY, MESSAGE) to the other leg and its final response
// back.
func (b *B2BUA) onInDialog(s *side, req *sip.Request, tx sip.ServerTransaction) {
	l := b.findLeg(req)
	if l == nil {
		b.respond(s, req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	if req.Method == sip.PRACK {
		b.onPrack(s, l, req, tx) // answered here, never relayed (prack.go)
		return
	}
	c := l.call
	cs := req.CSeq()
	relayed := func() {}
	if cs != nil {
		relayed = b.awaitTurn(c, l, cs.SeqNo)
		defer relayed() // answered here, or the relay failed before its write
	}
	c.mu.Lock()
	if c.state == StateEnded {
		c.mu.Unlock()
		b.respond(s, req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	if cs == nil || cs.SeqNo <= l.Dialog.RemoteCSeq && l.Dialog.RemoteCSeq != 0 {
		c.mu.Unlock()
		b.respond(s, req, tx, 500, "Server Internal Error", sip.NewHeader("Retry-After", "1"))
		return
	}
	l.Dialog.RemoteCSeq = cs.SeqNo
	peer := c.B
	if l == c.B {
		peer = c.A
	}
	if peer.Dialog.RemoteTag == "" || c.state < StateAnswered && req.Method == sip.INVITE {
		c.mu.Unlock()
		b.respond(s, req, tx, 491, "Request Pending")
		return
	}
	offer := req.Method == sip.INVITE || req.Method == sip.UPDATE
	if req.Method == sip.INVITE {
		if c.pending[l.idx] || c.pending[peer.idx] {
			c.mu.Unlock()
			b.respond(s, req, tx, 491, "Request Pending", sip.NewHeader("Retry-After", "1"))
			return
		}
		c.pending[l.idx] = true
		if ct := req.Contact(); ct != nil {
			l.Dialog.RemoteTarget = *ct.Address.Clone()
		}
	}
	if req.Method == sip.REFER && peer.Side == "wan" && !c.tc.ReferRelay {
		c.mu.Unlock()
		b.log.Info("REFER toward a trunk that takes none", zap.String("call", c.ID), zap.String("trunk", c.Trunk))
		b.respond(s, req, tx, 403, "Forbidden")
		return
	}
	if c.ownTimer && l == c.B && req.Method == sip.UPDATE && len(req.Body()) == 0 {
		// A refresh of the timer esbc runs on leg B: not leg A's business.
		c.mu.Unlock()
		b.answerRefresh(s, c, l, req, tx)
		return
	}
	if l == c.B && offer {
		noteAllow(c, l.idx, req)
	}
	out := peer.Dialog.newRequest(req.Method, 0)
	cfg := c.cfg
	ownTimer, bMinSE, bDelta := c.ownTimer, legBMinSE(c), legBDelta(c)
	c.mu.Unlock()
	done := func() {
		if req.Method == sip.INVITE {
			c.mu.Lock()
			c.pending[l.idx] = false
			c.mu.Unlock()
		}
	}
	defer done() // early returns; cleared again (idempotent) before the response

	body := req.Body()
	if offer && len(body) > 0 && c.media != nil && isSDP(req) {
		o, err := c.media.Offer(l.idx, body)
		if err != nil {
			code, reason := Status(err)
			b.respond(s, req, tx, code, reason)
			return
		}
		body = o
	}
	if len(body) > 0 {
		ct := "application/sdp"
		if h := req.GetHeader("Content-Type"); h != nil && validValue(h.Value()) {
			ct = h.Value()
		}
		out.AppendHeader(sip.NewHeader("Content-Type", ct))
	}
	out.SetBody(body)
	copyHeaders(req, out, nil, "Event", "Subscription-State",
		"Session-Expires", "Min-SE", "Supported", "Require", "Info-Package", "RAck")
	if req.Method == sip.REFER {
		if rt := referTarget(req, peer, c.tc.Domain); rt != "" {
			out.AppendHeader(sip.NewHeader("Refer-To", rt))
		}
	}
	if pol := b.policy(c, peer); pol != nil {
		if err := pol.CopyAllowed(req, out); err != nil {
			b.log.Info("header policy", zap.String("call", c.ID), zap.Error(err))
		}
	} else {
		copyHeaders(req, out, cfg, "Accept", "Allow-Events")
		b.decorate(out)
	}
	if ownTimer && offer {
		if peer == c.B {
			// Keep esbc's timer on leg B alive (§9: a refresh without
			// Session-Expires would turn it off).
			timerHeaders(out, bMinSE, bDelta)
		} else {
			stripTimer(out)
		}
	}

	timeout := 32 * sip.T1
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, otx, err := b.doTx(ctx, c, peer, out, relayed)
	if err != nil {
		b.log.Info("in-dialog request not answered", zap.String("call", c.ID), zap.String("method", string(req.Method)),
			zap.String("side", peer.Side), zap.Error(err))
		b.respond(s, req, tx, 408, "Request Timeout")
		return
	}
	rbody := res.Body()
	if res.IsSuccess() && offer && len(rbody) > 0 && c.media != nil {
		a, err := c.media.Answer(peer.idx, rbody)
		if err != nil {
			b.log.Warn("in-dialog answer not acceptable", zap.String("call", c.ID), zap.Error(err))
			rbody = nil
		} else {
			rbody = a
		}
	}
	if req.Method == sip.INVITE && res.IsSuccess() {
		c.mu.Lock()
		if ct := res.Contact(); ct != nil {
			peer.Dialog.RemoteTarget = *ct.Address.Clone()
		}
		// The CSeq the 2xx answers (a digest retry in doTx took a new one).
		ack := peer.Dialog.newRequest(sip.ACK, out.CSeq().SeqNo)
		c.mu.Unlock()
		b.sendAck(c, peer, ack, otx, "ACK of re-INVITE failed")
	}
	code := res.StatusCode
	if code == 401 || code == 407 {
		code = 500 // a trunk challenge esbc could not answer is not the PBX's to answer
	}
	out2 := sip.NewResponseFromRequest(req, code, res.Reason, nil)
	if len(rbody) > 0 {
		ct := "application/sdp"
		if h := res.GetHeader("Content-Type"); h != nil && validValue(h.Value()) {
			ct = h.Value()
		}
		out2.AppendHeader(sip.NewHeader("Content-Type", ct))
		out2.SetBody(rbody)
	}
	if req.Method == sip.INVITE || req.Method == sip.UPDATE {
		if res.IsSuccess() {
			out2.AppendHeader(&sip.ContactHeader{Address: *l.Dialog.Contact.Clone()})
		}
		for _, n := range []string{"Session-Expires", "Require"} {
			for _, h := range res.GetHeaders(n) {
				v := h.Value()
				if ownTimer && l == c.A {
					// Leg B's timer is esbc's: leg A asked for none.
					if n == "Session-Expires" {
						continue
					}
					v = dropTimerTag(v)
				}
				if n == "Require" && !supportsTimer(req) {
					// §9: no "Require: timer" toward a UAC that did not
					// list timer (a Session-Expires with refresher=uas is
					// all it may get).
					v = dropTimerTag(v)
				}
				if v != "" && validValue(v) {
					out2.AppendHeader(sip.NewHeader(h.Name(), v))
				}
			}
		}
		sessionTimer(req, res, out2)
		if res.IsSuccess() {
			c.mu.Lock()
			if c.ownTimer && l == c.B {
				// Leg B's timer is esbc's own, whatever leg A answered.
				stripTimer(out2)
				uasTimer(c, req, out2)
			}
			c.mu.Unlock()
		}
		if res.IsSuccess() {
			// A refresh on both legs (§10): esbc sent out on leg peer and
			// answers out2 on leg l; the descriptions esbc sent are the
			// body of its own re-INVITE refreshes.
			c.mu.Lock()
			if peer == c.B && req.Method == sip.INVITE {
				noteAllow(c, peer.idx, res)
			}
			b.noteLeg(c, peer, res, true)
			b.noteLeg(c, l, out2, false)
			if len(body) > 0 && isSDP(req) {
				noteSDP(c, peer.idx, body, headerValueOf(out, "Content-Type"))
			}
			if len(rbody) > 0 && isSDPResponse(res) {
				noteSDP(c, l.idx, rbody, headerValueOf(out2, "Content-Type"))
			}
			c.mu.Unlock()
		}
	}
	b.decorate(out2)
	var w *ackWait
	if req.Method == sip.INVITE && out2.IsSuccess() && l.Dialog.Transport == "UDP" {
		w = &ackWait{seq: cs.SeqNo, ch: make(chan struct{})}
		c.mu.Lock()
		c.reAck[l.idx] = w
		c.mu.Unlock()
	}
	done()
	if err := b.send(s, tx, out2); err != nil {
		b.log.Debug("in-dialog response failed", zap.String("call", c.ID), zap.Error(err))
	}
	if w != nil {
		// RFC 3261 §13.3.1.4: the UAS core retransmits its 2xx until the ACK.
		b.retransmit2xx(c, l, s, tx, out2, w)
	}
}

// retransmit2xx re-sends a re-INVITE's 2xx (T1 doubling to T2) until its
// ACK arrives, the call ends, or 64*T1.
func (b *B2BUA) retransmit2xx(c *Call, l *Leg, s *side, tx sip.ServerTransaction, res *sip.Response, w *ackWait) {
	interval := sip.T1
	rt := time.NewTimer(interval)
	defer rt.Stop()
	deadline := time.NewTimer(64 * sip.T1)
	defer deadline.Stop()
	defer func() {
		c.mu.Lock()
		if c.reAck[l.idx] == w {
			c.reAck[l.idx] = nil
		}
		c.mu.Unlock()
	}()
	for {
		select {
		case <-w.ch:
			return
		case <-c.endCh:
			return
		case <-b.done:
			return
		case <-rt.C:
			_ = b.send(s, tx, res)
			interval = min(2*interval, sip.T2)
			rt.Reset(interval)
		case <-deadline.C:
			b.log.Info("no ACK for a re-INVITE 2xx", zap.String("call", c.ID), zap.String("side", l.Side))
			return
		}
	}
}

func isSDP(req *sip.Request) bool {
	h := req.GetHeader("Content-Type")
	return h == nil || h.Value() == "application/sdp"
}

// referTarget is the Refer-To sent on leg peer. Toward a trunk only the
// number survives (sip:user@trunk-domain): the PBX's host, URI parameters
// and embedded headers (Replaces carries a LAN Call-ID) are LAN topology.
// Toward the PBX the trunk's Refer-To passes as it is.
func referTarget(req *sip.Request, peer *Leg, domain string) string {
	h := req.GetHeader("Refer-To")
	if h == nil || !validValue(h.Value()) {
		return ""
	}
	if peer.Side != "wan" {
		return h.Value()
	}
	v := strings.TrimSpace(h.Value())
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			v = v[i+1 : i+j]
		}
	}
	var u sip.Uri
	if err := sip.ParseUri(v, &u); err != nil || u.User == "" {
		return ""
	}
	return "<sip:" + u.User + "@" + domain + ">"
}

func isSDPResponse(res *sip.Response) bool {
	h := res.GetHeader("Content-Type")
	return h == nil || h.Value() == "application/sdp"
}

// headerValueOf is the value of a message's header ("" when none).
func headerValueOf(m interface{ GetHeader(string) sip.Header }, name string) string {
	if h := m.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

package b2bua

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// Reliable provisional responses (RFC 3262), terminated per leg.
//
// Leg B (esbc is the UAC): esbc's INVITE offers "Supported: 100rel"
// (not toward a trunk with prack: false, TrunkConfig.NoPRACK, nor on a
// delayed offer; leg A's 100rel never crosses). A
// 18x with "Require: 100rel" and an RSeq is PRACKed in its early dialog
// (its To tag, Contact and Record-Route) with "RAck: rseq cseq INVITE",
// once per RSeq: the first reliable 18x of an early dialog, then only the
// one whose RSeq is one above the last (§4, errata 4604); a retransmission
// or an out-of-order one is neither PRACKed nor relayed. The PRACK leaves
// on a goroutine of its own (the set-up loop goes on reading leg B's
// responses); a digest challenge to it is answered like any in-dialog
// request toward a trunk (doTx).
//
// Leg A (esbc is the UAS): when the caller's INVITE requires 100rel, every
// 18x esbc relays to it is reliable ("Require: 100rel", RSeq from a random
// start, +1 each), retransmitted at T1, 2*T1, 4*T1... until its PRACK, and
// the set-up fails with 500 if none came in 64*T1 (§3). esbc answers the
// PRACK itself (200; 481 when it matches no unacknowledged 18x), never
// relays it. A second 18x waits for the PRACK of the first (§3: one
// reliable 18x outstanding), and the 2xx waits for the PRACK of an
// outstanding reliable 18x that carried SDP. A caller that merely
// supports 100rel gets unreliable 18x, as before.
//
// The state is PrackState, plain fields of the Call under Call.mu (a
// standby can snapshot it); ackedA only wakes the waits.

// PrackState is a call's RFC 3262 state. Guarded by Call.mu.
type PrackState struct {
	// ReliableA: leg A's INVITE required 100rel, so 18x to it are reliable.
	ReliableA bool
	// RSeqA is the RSeq of the last reliable 18x sent to leg A (0: none
	// yet); UnackedA that it waits for its PRACK; UnackedSDPA that it
	// carried SDP (the 2xx waits for that PRACK).
	RSeqA       uint32
	UnackedA    bool
	UnackedSDPA bool
	// RSeqB is the RSeq of the last reliable 18x from leg B PRACKed, per
	// INVITE transaction and early dialog ("<cseq> <to-tag>").
	RSeqB map[string]uint32

	ackedA chan struct{} // closed when RSeqA is PRACKed or no longer waited for
}

// ErrBadExtension is an initial INVITE whose Require lists an option tag
// esbc does not support (RFC 3261 §8.2.2.3): 420 with Unsupported.
var ErrBadExtension = errors.New("bad extension")

// badExtension is ErrBadExtension with the tags for the Unsupported header.
type badExtension struct{ tags []string }

func (e *badExtension) Error() string {
	return "bad extension: required " + strings.Join(e.tags, ", ")
}

func (e *badExtension) Unwrap() error { return ErrBadExtension }

// errNoPrack: a reliable 18x to leg A got no PRACK in 64*T1 (§3).
var errNoPrack = errors.New("no PRACK for a reliable provisional response")

// supportedTags are the option tags esbc honours in a Require.
var supportedTags = []string{"100rel", "timer"}

// checkRequire returns a *badExtension when req's Require lists an option
// tag esbc does not support.
func checkRequire(req *sip.Request) error {
	var bad []string
	for _, h := range req.GetHeaders("Require") {
		for _, tok := range strings.Split(h.Value(), ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" {
				continue
			}
			known := false
			for _, s := range supportedTags {
				if strings.EqualFold(tok, s) {
					known = true
				}
			}
			if !known && validValue(tok) {
				bad = append(bad, tok)
			}
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return &badExtension{tags: bad}
}

// unsupportedHeader is the Unsupported header of a 420 for err ("" when
// err is no bad extension).
func unsupportedHeader(err error) sip.Header {
	var be *badExtension
	if !errors.As(err, &be) {
		return nil
	}
	return sip.NewHeader("Unsupported", strings.Join(be.tags, ", "))
}

// hasOptionTag reports whether a message lists tag in its header name.
func hasOptionTag(m interface{ GetHeaders(string) []sip.Header }, name, tag string) bool {
	for _, h := range m.GetHeaders(name) {
		for _, tok := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(tok), tag) {
				return true
			}
		}
	}
	return false
}

// addSupported adds tag to req's Supported header (one is created when
// there is none).
func addSupported(req *sip.Request, tag string) {
	if hasOptionTag(req, "Supported", tag) {
		return
	}
	if h := req.GetHeader("Supported"); h != nil && strings.TrimSpace(h.Value()) != "" {
		v := h.Value() + ", " + tag
		req.ReplaceHeader(sip.NewHeader("Supported", v))
		return
	}
	req.RemoveHeader("Supported")
	req.AppendHeader(sip.NewHeader("Supported", tag))
}

// dropOptionTag removes tag from every name header of req; a header left
// without tags goes.
func dropOptionTag(req *sip.Request, name, tag string) {
	if !hasOptionTag(req, name, tag) {
		return
	}
	var keep, names []string
	for _, h := range req.GetHeaders(name) {
		names = append(names, h.Name())
		for _, tok := range strings.Split(h.Value(), ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, tag) {
				keep = append(keep, tok)
			}
		}
	}
	for _, n := range names {
		req.RemoveHeader(n)
	}
	if len(keep) > 0 {
		req.AppendHeader(sip.NewHeader(name, strings.Join(keep, ", ")))
	}
}

// rseqOf is the RSeq of a response (1 .. 2^31-1).
func rseqOf(r *sip.Response) (uint32, bool) {
	h := r.GetHeader("RSeq")
	if h == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
	if err != nil || n == 0 || n >= 1<<31 {
		return 0, false
	}
	return uint32(n), true
}

// prackB handles a provisional response from leg B (RFC 3262 §4). It
// reports whether the response is to be processed further (relayed to leg
// A): an unreliable one is; a reliable one is when it is the first of its
// early dialog or its RSeq is one above the last, and then it is PRACKed.
func (b *B2BUA) prackB(c *Call, r *sip.Response) bool {
	if !hasOptionTag(r, "Require", "100rel") {
		return true
	}
	rseq, ok := rseqOf(r)
	tag, _ := r.To().Params.Get("tag")
	cs := r.CSeq()
	if !ok || tag == "" || cs == nil {
		b.log.Info("reliable provisional without RSeq or To tag: relayed, not PRACKed", zap.String("call", c.ID),
			zap.Int("code", r.StatusCode))
		return true
	}
	key := strconv.FormatUint(uint64(cs.SeqNo), 10) + " " + tag // RSeq space: transaction and early dialog
	c.mu.Lock()
	last, seen := c.prack.RSeqB[key]
	if seen && rseq != last+1 {
		c.mu.Unlock()
		// A retransmission (rseq == last) or out of order: not processed
		// further; the UAS retransmits the missing one.
		b.log.Debug("reliable provisional not in sequence: ignored", zap.String("call", c.ID),
			zap.Uint32("rseq", rseq), zap.Uint32("last", last))
		return false
	}
	if c.prack.RSeqB == nil {
		c.prack.RSeqB = map[string]uint32{}
	}
	c.prack.RSeqB[key] = rseq
	// The PRACK belongs to the early dialog of this 18x (§4).
	b.learnDialog(c.B, r)
	prack := c.B.Dialog.newRequest(sip.PRACK, 0)
	c.mu.Unlock()
	prack.AppendHeader(sip.NewHeader("RAck", fmt.Sprintf("%d %d %s", rseq, cs.SeqNo, cs.MethodName)))
	b.decorate(prack)
	if !b.track() {
		return true
	}
	go func() {
		defer b.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 32*sip.T1)
		defer cancel()
		go func() { // Close does not wait for a PRACK's answer
			select {
			case <-b.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		res, err := b.doRequest(ctx, c, c.B, prack)
		switch {
		case err != nil:
			b.log.Info("PRACK not answered", zap.String("call", c.ID), zap.Error(err))
		case !res.IsSuccess():
			b.log.Info("PRACK refused", zap.String("call", c.ID), zap.Int("code", res.StatusCode))
		}
	}()
	return true
}

// reliableA makes res, a 18x to leg A, reliable when leg A requires 100rel
// (§3): it first waits for the PRACK of the one before (one outstanding at
// a time), then numbers res. It returns the channel closed by res's PRACK
// (nil: res is not reliable) and whether res is to be sent at all (not
// when the set-up ended while waiting).
func (b *B2BUA) reliableA(c *Call, res *sip.Response, sdp bool) (chan struct{}, bool) {
	c.mu.Lock()
	if !c.prack.ReliableA {
		c.mu.Unlock()
		return nil, true
	}
	for c.prack.UnackedA {
		ch := c.prack.ackedA
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.setupCtx.Done():
			return nil, false
		case <-b.done:
			return nil, false
		}
		c.mu.Lock()
	}
	if c.prack.RSeqA == 0 {
		c.prack.RSeqA = uint32(randUint16())<<15 | uint32(randUint16()) // §3: random start
		c.prack.RSeqA &= 1<<30 - 1                                      // room to count up below 2^31
	} else {
		c.prack.RSeqA++
	}
	c.prack.UnackedA, c.prack.UnackedSDPA = true, sdp
	ch := make(chan struct{})
	c.prack.ackedA = ch
	rseq := c.prack.RSeqA
	c.mu.Unlock()
	res.AppendHeader(sip.NewHeader("Require", "100rel"))
	res.AppendHeader(sip.NewHeader("RSeq", strconv.FormatUint(uint64(rseq), 10)))
	return ch, true
}

// retransmitReliableA re-sends a reliable 18x to leg A at T1, 2*T1, 4*T1...
// until its PRACK (acked closed) or the call's end; with no PRACK in
// 64*T1 the set-up fails (§3: the UAS SHOULD reject the INVITE with 5xx).
func (b *B2BUA) retransmitReliableA(c *Call, atx sip.ServerTransaction, res *sip.Response, acked chan struct{}) {
	if !b.track() {
		return
	}
	go func() {
		defer b.wg.Done()
		interval, elapsed, wait := sip.T1, time.Duration(0), sip.T1
		t := time.NewTimer(wait)
		defer t.Stop()
		for {
			select {
			case <-acked:
				return
			case <-c.endCh:
				return
			case <-b.done:
				return
			case <-t.C:
			}
			c.mu.Lock()
			answered := c.state >= StateAnswered
			c.mu.Unlock()
			if answered {
				return // the 2xx is out: no more 18x (its PRACK is still answered 200)
			}
			elapsed += wait
			if elapsed >= 64*sip.T1 {
				b.log.Info("no PRACK from leg A", zap.String("call", c.ID))
				c.mu.Lock()
				if c.state < StateAnswered {
					c.setupCancel(errNoPrack) // under c.mu: see setup
				}
				c.mu.Unlock()
				return
			}
			_ = b.send(c.A.side, atx, res)
			interval *= 2
			wait = min(interval, 64*sip.T1-elapsed)
			t.Reset(wait)
		}
	}()
}

// awaitPrackA holds leg A's 2xx while a reliable 18x that carried SDP
// waits for its PRACK (§3). A reliable 18x without SDP does not hold the
// 2xx; its retransmissions stop once the call is answered, and its PRACK,
// if it comes after the 2xx, is still answered 200.
func (b *B2BUA) awaitPrackA(c *Call) {
	c.mu.Lock()
	if !c.prack.UnackedA || !c.prack.UnackedSDPA {
		c.mu.Unlock()
		return
	}
	ch := c.prack.ackedA
	c.mu.Unlock()
	select {
	case <-ch:
	case <-c.setupCtx.Done():
	case <-b.done:
	}
}

// ackedAOnce marks leg A's outstanding reliable 18x acknowledged and wakes
// its waits. c.mu is held.
func (c *Call) ackedAOnce() {
	if c.prack.UnackedA {
		c.prack.UnackedA, c.prack.UnackedSDPA = false, false
		close(c.prack.ackedA)
	}
}

// onPrack answers a PRACK locally (RFC 3262 §3, §7.2): 200 when its RAck
// matches the reliable 18x esbc sent on that leg and still waits for,
// else 481. PRACK is never relayed: each leg's reliability is its own.
func (b *B2BUA) onPrack(s *side, l *Leg, req *sip.Request, tx sip.ServerTransaction) {
	c := l.call
	cs := req.CSeq()
	if cs != nil {
		// Answered here, so it waits for no other request; the next one
		// of this peer may go once it is answered.
		defer c.markRelayed(l, cs.SeqNo)
	}
	var rseq, seq uint64
	var method string
	if h := req.GetHeader("RAck"); h != nil {
		f := strings.Fields(h.Value())
		if len(f) == 3 {
			rseq, _ = strconv.ParseUint(f[0], 10, 32)
			seq, _ = strconv.ParseUint(f[1], 10, 32)
			method = f[2]
		}
	}
	c.mu.Lock()
	if cs != nil && cs.SeqNo > l.Dialog.RemoteCSeq {
		l.Dialog.RemoteCSeq = cs.SeqNo
	}
	match := l == c.A && c.state != StateEnded && c.prack.UnackedA && rseq == uint64(c.prack.RSeqA) &&
		seq == uint64(c.aInviteSeq) && strings.EqualFold(method, string(sip.INVITE))
	if match {
		c.ackedAOnce()
	}
	c.mu.Unlock()
	switch {
	case !match:
		b.respond(s, req, tx, 481, "Call/Transaction Does Not Exist")
	case len(req.Body()) > 0:
		// An offer in a PRACK (§5) is not supported: the 18x is
		// acknowledged all the same.
		b.respond(s, req, tx, 488, "Not Acceptable Here")
	default:
		b.respond(s, req, tx, 200, "OK")
	}
}

package b2bua

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// Session timers (RFC 4028).
//
// When leg A's peer supports timers ("timer" in its Supported/Require),
// Session-Expires and Min-SE cross end to end and the peers refresh each
// other through esbc (sessionTimer covers a leg B without support).
//
// When it does not and Config.SessionExpires is set, esbc runs the timer
// on leg B itself (Call.ownTimer): its INVITE carries "Supported: timer",
// "Session-Expires: <session_expires>;refresher=uac" and "Min-SE:
// <min_se>"; a 422 is retried once with the Min-SE it names, in both
// Session-Expires and Min-SE, and later refreshes keep that Min-SE (§7.4).
// If leg B's 2xx makes esbc the refresher, esbc refreshes at half the
// interval (§10): with UPDATE, or with a re-INVITE carrying the last SDP
// esbc sent on leg B, unchanged (same o= version: no media change, the
// media relay is not involved; §7.4/§9 and RFC 3264 §8) when the peer's
// Allow lacks UPDATE or it answers an UPDATE 501/405; the re-INVITE's 2xx
// is ACKed and its SDP ignored. esbc ends the call when a refresh gets
// 408/481 or no answer; a 422 is retried once with the Min-SE it names,
// a 491 again shortly. If leg B's peer is the refresher, its body-less
// UPDATEs are answered by esbc (§9: the refresher it asks for, "uas" when
// it does not support timers, "Require: timer" only toward a peer that
// listed timer; 422 below min_se). Leg A never sees Session-Expires or
// "Require: timer" it did not ask for, and re-INVITE/UPDATE that leg A's
// peer sends toward leg B carry esbc's Session-Expires so they do not turn
// the timer off (§9).
//
// On every leg where the peer is the refresher (esbc's own timer or a
// timer relayed end to end), a watchdog ends the call when no refresh
// (a re-INVITE or UPDATE answered 2xx) arrives before the session expires
// (§10: interval - min(32 s, interval/3)): BYE on both legs, CDR reason
// "session expired".
//
// The per-leg state lives in Call.st (SessionTimers: plain values, HA);
// the *time.Timers are runtime only and rebuilt from Expires.
//
// An INVITE whose peer supports timers with a Session-Expires below
// min_se is answered 422 with Min-SE (§9), when session_expires is set.

// ErrIntervalTooSmall is a Session-Expires below Config.MinSE (422).
var ErrIntervalTooSmall = errors.New("session interval too small")

// defaultMinSE is RFC 4028's floor (§4).
const defaultMinSE = 90 * time.Second

func (c *Config) minSE() time.Duration {
	if c.MinSE > 0 {
		return c.MinSE
	}
	return defaultMinSE
}

// parseSE reads "delta[;refresher=uac|uas]" of a Session-Expires value.
func parseSE(v string) (delta int, refresher string, ok bool) {
	parts := strings.Split(v, ";")
	d, err := strconv.Atoi(strings.TrimSpace(parts[0]))
	if err != nil || d <= 0 {
		return 0, "", false
	}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "refresher") {
			refresher = strings.ToLower(strings.TrimSpace(val))
		}
	}
	return d, refresher, true
}

// headerSE is the Session-Expires (or compact "x") of a message.
func headerSE(m interface{ GetHeader(string) sip.Header }) (int, string, bool) {
	for _, n := range []string{"Session-Expires", "x"} {
		if h := m.GetHeader(n); h != nil {
			return parseSE(h.Value())
		}
	}
	return 0, "", false
}

// checkInterval refuses a new INVITE whose timer is below min_se (§9: only
// a UAC that supports timers can act on a 422).
func checkInterval(cfg *Config, req *sip.Request) error {
	if cfg.SessionExpires <= 0 || !supportsTimer(req) {
		return nil
	}
	if d, _, ok := headerSE(req); ok && time.Duration(d)*time.Second < cfg.minSE() {
		return ErrIntervalTooSmall
	}
	return nil
}

// minSEHeader is the Min-SE sent with a 422.
func minSEHeader(cfg *Config) sip.Header {
	return sip.NewHeader("Min-SE", strconv.Itoa(int(cfg.minSE()/time.Second)))
}

// LegTimer is the session timer of one leg, in plain values (a standby
// can rebuild it: HA). Guarded by the call's mutex.
type LegTimer struct {
	// Interval is the session interval in seconds; 0: no timer on this leg.
	Interval int
	// PeerRefreshes: the peer is the refresher and esbc watches for its
	// refreshes; else esbc refreshes (its own timer on leg B) or relays
	// the other leg's refreshes.
	PeerRefreshes bool
	// Expires is when esbc ends the call if the peer has not refreshed
	// (PeerRefreshes): the last 2xx plus interval - min(32 s, interval/3).
	Expires time.Time
	// NoUpdate: the peer takes no UPDATE (its Allow lacks it, or it
	// answered one 501/405): esbc refreshes with re-INVITE.
	NoUpdate bool
	// MinSE is the largest Min-SE (seconds) the peer named in a 422.
	MinSE int
	// SDP and SDPType are the last session description esbc sent on this
	// leg (offer or answer), the body of a re-INVITE refresh.
	SDP     []byte
	SDPType string
}

// SessionTimers is a call's RFC 4028 state: one LegTimer per leg (index
// 0 = leg A) and the runtime watchdog timers (also in Call.timers, so
// that finish stops them).
type SessionTimers struct {
	Legs  [2]LegTimer
	watch [2]*time.Timer
}

// expiryDelay is how long after a refresh esbc waits for the next one
// when the peer refreshes (§10).
func expiryDelay(interval int) time.Duration {
	iv := time.Duration(interval) * time.Second
	return iv - min(32*time.Second, iv/3)
}

// timerHeaders puts esbc's own timer on a request toward leg B (INVITE,
// re-INVITE, UPDATE): delta seconds, esbc the refresher, Min-SE minSE.
func timerHeaders(req *sip.Request, minSE, delta int) {
	req.RemoveHeader("Session-Expires")
	req.RemoveHeader("Min-SE")
	req.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(delta)+";refresher=uac"))
	req.AppendHeader(sip.NewHeader("Min-SE", strconv.Itoa(minSE)))
	if !supportsTimer(req) {
		addSupported(req, "timer") // one Supported header (100rel may be there)
	}
}

// ownTimerHeaders is timerHeaders for leg B's INVITE (call.go), which
// knows only the interval: one above session_expires can only be the
// Min-SE of a 422 (the retry, §7.4), which then is the Min-SE too.
func ownTimerHeaders(req *sip.Request, cfg *Config, delta int) {
	minSE := int(cfg.minSE() / time.Second)
	if delta > int(max(cfg.SessionExpires, cfg.minSE())/time.Second) {
		minSE = delta
	}
	timerHeaders(req, minSE, delta)
}

// legBMinSE is the Min-SE esbc announces on leg B: min_se, or the larger
// one a 422 named (§7.4). c.mu is held.
func legBMinSE(c *Call) int {
	return max(int(c.cfg.minSE()/time.Second), c.st.Legs[1].MinSE)
}

// legBDelta is the interval esbc asks for on leg B. c.mu is held.
func legBDelta(c *Call) int {
	if c.seDelta > 0 {
		return max(c.seDelta, legBMinSE(c))
	}
	return max(int(max(c.cfg.SessionExpires, c.cfg.minSE())/time.Second), legBMinSE(c))
}

// retryInterval is the Session-Expires to retry with after a 422 on leg B
// (its Min-SE), or 0 when esbc runs no timer there or the 422 is unusable.
// c.mu is held.
func retryInterval(c *Call, res *sip.Response) int {
	if !c.ownTimer || res.StatusCode != 422 {
		return 0
	}
	n := minSEOf(res)
	if n <= c.seDelta {
		return 0
	}
	c.st.Legs[1].MinSE = max(c.st.Legs[1].MinSE, n)
	return n
}

// minSEOf is the Min-SE of a message in seconds (0 when none).
func minSEOf(m interface{ GetHeader(string) sip.Header }) int {
	h := m.GetHeader("Min-SE")
	if h == nil {
		return 0
	}
	v, _, _ := strings.Cut(h.Value(), ";")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// noteAllow learns from a message's Allow whether leg idx's peer takes
// UPDATE (no Allow: unknown, unchanged). c.mu is held.
func noteAllow(c *Call, idx int, m interface{ GetHeaders(string) []sip.Header }) {
	hs := m.GetHeaders("Allow")
	if len(hs) == 0 {
		return
	}
	for _, h := range hs {
		for _, tok := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "UPDATE") {
				c.st.Legs[idx].NoUpdate = false
				return
			}
		}
	}
	c.st.Legs[idx].NoUpdate = true
}

// noteSDP records the session description esbc sent on leg idx. c.mu is
// held.
func noteSDP(c *Call, idx int, body []byte, ctype string) {
	if len(body) == 0 {
		return
	}
	if ctype == "" {
		ctype = "application/sdp"
	}
	c.st.Legs[idx].SDP, c.st.Legs[idx].SDPType = body, ctype
}

// noteTimer takes the 2xx of leg B's initial INVITE (ours: esbc sent
// it): the timer of leg B, the timer leg A gets with the 2xx relayed to it
// (answerA), leg B's Allow and the SDP esbc offered there. The timers are
// armed once the call is confirmed (startTimers). c.mu is held.
func (b *B2BUA) noteTimer(c *Call, res *sip.Response, ours bool) {
	if !res.IsSuccess() {
		return
	}
	noteAllow(c, 1, res)
	var inv *sip.Request
	if o, ok := c.bTx.(interface{ Origin() *sip.Request }); ok {
		inv = o.Origin()
	}
	if inv != nil {
		ct := ""
		if h := inv.GetHeader("Content-Type"); h != nil {
			ct = h.Value()
		}
		noteSDP(c, 1, inv.Body(), ct)
	}
	b.noteLeg(c, c.B, res, ours)
	switch {
	case c.ownTimer:
		// Leg A asked for no timer and gets none.
	case res.GetHeader("Session-Expires") != nil || res.GetHeader("x") != nil:
		// Relayed to leg A as it is (answerA): esbc is leg A's UAS.
		b.noteLeg(c, c.A, res, !ours)
	case inv != nil && supportsTimer(inv):
		// Leg B's peer runs no timer; leg A's (whose Session-Expires leg
		// B's INVITE carries) is told to refresh (sessionTimer).
		if d, _, ok := headerSE(inv); ok {
			c.st.Legs[0] = LegTimer{Interval: d, PeerRefreshes: true, Expires: time.Now().Add(expiryDelay(d)),
				SDP: c.st.Legs[0].SDP, SDPType: c.st.Legs[0].SDPType}
		}
	}
}

// noteLeg takes the timer a 2xx to an INVITE or UPDATE settles on leg l:
// esbcUAC when esbc sent the request on that leg, false when it answered
// it. A 2xx refreshes the session (re-arms the watchdog); one without
// Session-Expires turns the timer off on that leg (§7.2, §9). c.mu is held.
func (b *B2BUA) noteLeg(c *Call, l *Leg, res *sip.Response, esbcUAC bool) {
	if !res.IsSuccess() {
		return
	}
	lt := &c.st.Legs[l.idx]
	d, refresher, ok := headerSE(res)
	if !ok {
		lt.Interval, lt.PeerRefreshes, lt.Expires = 0, false, time.Time{}
		if l == c.B && c.ownTimer {
			c.seDelta, c.esbcRefreshes = 0, false
		}
		b.armRefresh(c)
		return
	}
	// The refresher is the UAC or the UAS of this transaction (§7.1: the
	// UAC when the 2xx names none).
	uac := refresher != "uas"
	lt.Interval, lt.PeerRefreshes = d, uac != esbcUAC
	lt.Expires = time.Now().Add(expiryDelay(d))
	if l == c.B && c.ownTimer {
		c.seDelta, c.esbcRefreshes = d, !lt.PeerRefreshes
	}
	b.armRefresh(c)
}

// armRefresh (re)starts esbc's refresh of leg B at half the interval
// (§10) when esbc is the refresher, and the watchdog of each leg whose
// peer refreshes. c.mu is held.
func (b *B2BUA) armRefresh(c *Call) {
	b.armWatch(c, 0)
	b.armWatch(c, 1)
	if !c.ownTimer || !c.esbcRefreshes || c.seDelta <= 0 || c.state != StateConfirmed {
		if c.refreshT != nil {
			c.refreshT.Stop()
		}
		return
	}
	b.armRefreshIn(c, time.Duration(c.seDelta)*time.Second/2)
}

// armRefreshIn (re)starts esbc's refresh timer. c.mu is held.
func (b *B2BUA) armRefreshIn(c *Call, d time.Duration) {
	if c.refreshT == nil {
		c.refreshT = time.AfterFunc(d, func() { b.refresh(c) })
		c.timers = append(c.timers, c.refreshT) // stopped by finish
		return
	}
	c.refreshT.Reset(d)
}

// refreshRetry is how soon a refresh that met a re-INVITE in progress
// (491, or one crossing esbc) is tried again.
func refreshRetry(interval int) time.Duration {
	d := time.Duration(interval) * time.Second / 8
	return min(max(d, 100*time.Millisecond), 2*time.Second)
}

// armWatch (re)starts the watchdog of leg idx: the session expires at
// Expires unless the peer refreshes first. c.mu is held.
func (b *B2BUA) armWatch(c *Call, idx int) {
	lt := &c.st.Legs[idx]
	t := c.st.watch[idx]
	if lt.Interval <= 0 || !lt.PeerRefreshes || lt.Expires.IsZero() || c.state != StateConfirmed {
		if t != nil {
			t.Stop()
		}
		return
	}
	d := time.Until(lt.Expires)
	if t == nil {
		c.st.watch[idx] = time.AfterFunc(d, func() { b.expire(c, idx) })
		c.timers = append(c.timers, c.st.watch[idx]) // stopped by finish
		return
	}
	t.Reset(d)
}

// expire ends the call when leg idx's peer, the refresher, has not
// refreshed the session in time (§10): BYE on both legs.
func (b *B2BUA) expire(c *Call, idx int) {
	if !b.track() {
		return
	}
	defer b.wg.Done()
	c.mu.Lock()
	lt := c.st.Legs[idx]
	if c.state != StateConfirmed || lt.Interval <= 0 || !lt.PeerRefreshes || lt.Expires.IsZero() {
		c.mu.Unlock()
		return
	}
	if wait := time.Until(lt.Expires); wait > 0 {
		// Refreshed while this timer fired.
		c.st.watch[idx].Reset(wait)
		c.mu.Unlock()
		return
	}
	side := c.A.Side
	if idx == 1 {
		side = c.B.Side
	}
	c.mu.Unlock()
	b.log.Info("session expired: the refresher sent no refresh, call ended", zap.String("call", c.ID),
		zap.String("side", side), zap.Int("interval", lt.Interval))
	b.hangup(c, nil, "session expired")
}

// refresh sends esbc's session refresh on leg B: UPDATE, or re-INVITE
// when the peer takes no UPDATE.
func (b *B2BUA) refresh(c *Call) {
	if !b.track() {
		return
	}
	defer b.wg.Done()
	// Again at once after a 501/405 to UPDATE (re-INVITE then) or a 422
	// (larger interval); bounded.
	for try := 0; try < 3 && b.refreshOnce(c); try++ {
	}
}

// refreshOnce sends one refresh; again reports that it should be sent
// again at once.
func (b *B2BUA) refreshOnce(c *Call) (again bool) {
	c.mu.Lock()
	if c.state != StateConfirmed || c.B.Dialog.RemoteTag == "" || !c.ownTimer || !c.esbcRefreshes {
		c.mu.Unlock()
		return false
	}
	lt := &c.st.Legs[1]
	method := sip.UPDATE
	if lt.NoUpdate {
		if len(lt.SDP) == 0 {
			c.mu.Unlock()
			b.log.Warn("session refresh: leg B takes no UPDATE and esbc has no SDP of its own there (late offer); not refreshed",
				zap.String("call", c.ID))
			return false
		}
		if c.pending[0] || c.pending[1] {
			// A re-INVITE crosses esbc (it carries esbc's timer toward
			// leg B): try again once it is done.
			b.armRefreshIn(c, refreshRetry(c.seDelta))
			c.mu.Unlock()
			return false
		}
		method = sip.INVITE
		c.pending[1] = true
	}
	req := c.B.Dialog.newRequest(method, 0)
	timerHeaders(req, legBMinSE(c), legBDelta(c))
	if method == sip.INVITE {
		req.AppendHeader(sip.NewHeader("Allow", allowMethods))
		req.AppendHeader(sip.NewHeader("Content-Type", lt.SDPType))
		req.SetBody(lt.SDP) // the same description, the same version: no media change
	}
	c.mu.Unlock()
	if method == sip.INVITE {
		defer func() {
			c.mu.Lock()
			c.pending[1] = false
			c.mu.Unlock()
		}()
	}
	b.decorate(req)
	ctx, cancel := context.WithTimeout(context.Background(), 32*sip.T1)
	defer cancel()
	res, tx, err := b.doTx(ctx, c, c.B, req, nil)
	if err == nil && method == sip.INVITE && res.IsSuccess() {
		b.ackRefresh(c, req, res, tx)
	}
	switch {
	case err != nil || res.StatusCode == 408 || res.StatusCode == 481:
		// §10: the session is gone on leg B.
		code := 0
		if res != nil {
			code = res.StatusCode
		}
		b.log.Info("session refresh failed: call ended", zap.String("call", c.ID), zap.String("method", string(method)),
			zap.Int("code", code), zap.Error(err))
		b.hangup(c, nil, "session refresh failed")
		return false
	case method == sip.UPDATE && (res.StatusCode == 501 || res.StatusCode == 405):
		// §7.4: UPDATE is not supported there; re-INVITE from now on.
		c.mu.Lock()
		lt.NoUpdate = true
		c.mu.Unlock()
		b.log.Info("session refresh: leg B takes no UPDATE, refreshing with re-INVITE", zap.String("call", c.ID),
			zap.Int("code", res.StatusCode))
		return true
	case res.StatusCode == 422:
		// §7.4: once more with the interval it asks for.
		n := minSEOf(res)
		c.mu.Lock()
		raise := n > legBDelta(c)
		if raise {
			lt.MinSE = max(lt.MinSE, n)
			c.seDelta = n
		} else {
			b.armRefresh(c)
		}
		c.mu.Unlock()
		return raise
	case res.StatusCode == 491:
		c.mu.Lock()
		b.armRefreshIn(c, refreshRetry(c.seDelta))
		c.mu.Unlock()
		return false
	case !res.IsSuccess():
		b.log.Warn("session refresh refused; the trunk may end the call at the interval",
			zap.String("call", c.ID), zap.String("method", string(method)), zap.Int("code", res.StatusCode))
	}
	c.mu.Lock()
	if res.IsSuccess() {
		if method == sip.INVITE {
			noteAllow(c, 1, res)
		}
		b.noteLeg(c, c.B, res, true)
	} else {
		b.armRefresh(c)
	}
	c.mu.Unlock()
	return false
}

// ackRefresh acknowledges the 2xx of esbc's re-INVITE refresh (and each
// retransmission of it). Its SDP, if any, is the peer's unchanged answer:
// not handed to the media session.
func (b *B2BUA) ackRefresh(c *Call, req *sip.Request, res *sip.Response, tx sip.ClientTransaction) {
	c.mu.Lock()
	if ct := res.Contact(); ct != nil {
		c.B.Dialog.RemoteTarget = *ct.Address.Clone() // target refresh
	}
	ack := c.B.Dialog.newRequest(sip.ACK, req.CSeq().SeqNo) // after a digest retry too
	c.mu.Unlock()
	b.decorate(ack)
	b.sendAck(c, c.B, ack, tx, "ACK of a refresh re-INVITE failed")
}

// answerRefresh answers, on leg B, a body-less UPDATE that only refreshes
// the timer esbc runs there (uasTimer; 422 below min_se).
func (b *B2BUA) answerRefresh(s *side, c *Call, l *Leg, req *sip.Request, tx sip.ServerTransaction) {
	c.mu.Lock()
	noteAllow(c, l.idx, req)
	if d, _, ok := headerSE(req); ok && time.Duration(d)*time.Second < c.cfg.minSE() {
		c.mu.Unlock()
		b.respond(s, req, tx, 422, "Session Interval Too Small", minSEHeader(c.cfg))
		return
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	uasTimer(c, req, res)
	res.AppendHeader(&sip.ContactHeader{Address: *l.Dialog.Contact.Clone()})
	b.noteLeg(c, l, res, false) // refreshed: the watchdog re-armed, or esbc refreshes now
	c.mu.Unlock()
	b.decorate(res)
	if err := b.send(s, tx, res); err != nil {
		b.log.Debug("refresh response failed", zap.String("call", c.ID), zap.Error(err))
	}
}

// dropTimerTag removes "timer" from a Require value for a leg that did not
// ask for session timers ("" when nothing is left).
func dropTimerTag(v string) string {
	var keep []string
	for _, tok := range strings.Split(v, ",") {
		if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "timer") {
			keep = append(keep, tok)
		}
	}
	return strings.Join(keep, ", ")
}

// headerMsg is a request or a response.
type headerMsg interface {
	GetHeaders(string) []sip.Header
	RemoveHeader(string) bool
	AppendHeader(sip.Header)
}

// stripTimer removes esbc's leg B timer from a request relayed to leg A,
// whose peer asked for none, or a timer from a response.
func stripTimer(m headerMsg) {
	m.RemoveHeader("Session-Expires")
	m.RemoveHeader("x")
	m.RemoveHeader("Min-SE")
	for _, n := range []string{"Require", "Supported"} {
		hs := m.GetHeaders(n)
		vals := make([]string, 0, len(hs))
		for _, h := range hs {
			vals = append(vals, dropTimerTag(h.Value()))
		}
		for m.RemoveHeader(n) {
		}
		for _, v := range vals {
			if v != "" {
				m.AppendHeader(sip.NewHeader(n, v))
			}
		}
	}
}

// uasTimer is the timer esbc, as UAS of a refresh on leg B where it runs
// its own timer, puts in the 2xx (§9): the interval asked for (or esbc's
// when none), the refresher the UAC names ("uac" when it names none), and
// "uas" (esbc refreshes) when the UAC does not support timers or sent no
// Session-Expires; "Require: timer" only with refresher=uac. c.mu is held.
func uasTimer(c *Call, req *sip.Request, res *sip.Response) {
	d, refresher, ok := headerSE(req)
	switch {
	case !ok:
		d, refresher = legBDelta(c), "uas"
	case !supportsTimer(req):
		refresher = "uas"
	case refresher != "uas":
		refresher = "uac"
	}
	res.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(d)+";refresher="+refresher))
	if refresher == "uac" {
		res.AppendHeader(sip.NewHeader("Require", "timer"))
	}
}

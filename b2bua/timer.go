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
// <min_se>"; a 422 is retried once with the Min-SE it names (§7.4, not
// below min_se). If leg B's 2xx makes esbc the refresher, esbc sends an
// UPDATE with Session-Expires at half the interval (§10) and ends the call
// when a refresh gets 408/481 or no answer; if it keeps the refresher role
// itself, its body-less UPDATE refreshes are answered by esbc. Leg A never
// sees Session-Expires or "Require: timer" it did not ask for, and
// re-INVITE/UPDATE that leg A's peer sends toward leg B carry esbc's
// Session-Expires so they do not turn the timer off (§9).
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

// ownTimerHeaders adds esbc's own timer to a request on leg B (INVITE,
// re-INVITE, UPDATE): delta seconds, esbc the refresher.
func ownTimerHeaders(req *sip.Request, cfg *Config, delta int) {
	req.RemoveHeader("Session-Expires")
	req.RemoveHeader("Min-SE")
	req.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(delta)+";refresher=uac"))
	req.AppendHeader(minSEHeader(cfg))
	req.AppendHeader(sip.NewHeader("Supported", "timer"))
}

// retryInterval is the Session-Expires to retry with after a 422 on leg B
// (its Min-SE), or 0 when esbc runs no timer there or the 422 is unusable.
// c.mu is held.
func retryInterval(c *Call, res *sip.Response) int {
	if !c.ownTimer || res.StatusCode != 422 {
		return 0
	}
	h := res.GetHeader("Min-SE")
	if h == nil {
		return 0
	}
	v, _, _ := strings.Cut(h.Value(), ";")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= c.seDelta {
		return 0
	}
	return n
}

// armRefresh (re)starts esbc's refresh of leg B at half the interval
// (§10) when esbc is the refresher. c.mu is held.
func (b *B2BUA) armRefresh(c *Call) {
	if !c.ownTimer || !c.esbcRefreshes || c.seDelta <= 0 || c.state != StateConfirmed {
		if c.refreshT != nil {
			c.refreshT.Stop()
		}
		return
	}
	d := time.Duration(c.seDelta) * time.Second / 2
	if c.refreshT == nil {
		c.refreshT = time.AfterFunc(d, func() { b.refresh(c) })
		c.timers = append(c.timers, c.refreshT) // stopped by finish
		return
	}
	c.refreshT.Reset(d)
}

// refresh sends esbc's session refresh (UPDATE) on leg B.
func (b *B2BUA) refresh(c *Call) {
	if !b.track() {
		return
	}
	defer b.wg.Done()
	c.mu.Lock()
	if c.state != StateConfirmed || c.B.Dialog.RemoteTag == "" {
		c.mu.Unlock()
		return
	}
	req := c.B.Dialog.newRequest(sip.UPDATE, 0)
	ownTimerHeaders(req, c.cfg, c.seDelta)
	c.mu.Unlock()
	b.decorate(req)
	ctx, cancel := context.WithTimeout(context.Background(), 32*sip.T1)
	defer cancel()
	res, err := b.doRequest(ctx, c, c.B, req)
	switch {
	case err != nil || res.StatusCode == 408 || res.StatusCode == 481:
		// §10: the session is gone on leg B.
		code := 0
		if res != nil {
			code = res.StatusCode
		}
		b.log.Info("session refresh failed: call ended", zap.String("call", c.ID), zap.Int("code", code), zap.Error(err))
		b.hangup(c, nil, "session refresh failed")
		return
	case !res.IsSuccess():
		b.log.Warn("session refresh refused; the trunk may end the call at the interval",
			zap.String("call", c.ID), zap.Int("code", res.StatusCode))
	}
	c.mu.Lock()
	if res.IsSuccess() {
		b.noteTimer(c, res, true)
	} else {
		b.armRefresh(c)
	}
	c.mu.Unlock()
}

// answerRefresh answers, on leg B, a body-less UPDATE that only refreshes
// the timer esbc runs there (the trunk is the refresher).
func (b *B2BUA) answerRefresh(s *side, c *Call, l *Leg, req *sip.Request, tx sip.ServerTransaction) {
	var hdrs []sip.Header
	if d, _, ok := headerSE(req); ok {
		c.mu.Lock()
		c.seDelta, c.esbcRefreshes = d, false
		b.armRefresh(c) // stops ours: the trunk refreshes
		c.mu.Unlock()
		hdrs = append(hdrs, sip.NewHeader("Session-Expires", strconv.Itoa(d)+";refresher=uac"),
			sip.NewHeader("Require", "timer"))
	}
	hdrs = append(hdrs, &sip.ContactHeader{Address: *l.Dialog.Contact.Clone()})
	b.respond(s, req, tx, 200, "OK", hdrs...)
}

// noteTimer takes the timer a 2xx on leg B settles when esbc runs its own:
// ours is true when esbc sent the request, false when it answered it.
// c.mu is held.
func (b *B2BUA) noteTimer(c *Call, res *sip.Response, ours bool) {
	if !c.ownTimer || !res.IsSuccess() {
		return
	}
	d, refresher, ok := headerSE(res)
	if !ok {
		// No timer any more (§7.2 / §9): nothing to refresh.
		c.seDelta, c.esbcRefreshes = 0, false
		b.armRefresh(c)
		return
	}
	// The refresher is the UAC or the UAS of this transaction (§7.1: the
	// UAC when the 2xx names none and it asked).
	uac := refresher != "uas"
	c.seDelta, c.esbcRefreshes = d, uac == ours
	b.armRefresh(c)
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

// stripTimer removes esbc's leg B timer from a request relayed to leg A,
// whose peer asked for none.
func stripTimer(req *sip.Request) {
	req.RemoveHeader("Session-Expires")
	req.RemoveHeader("Min-SE")
	for _, n := range []string{"Require", "Supported"} {
		hs := req.GetHeaders(n)
		vals := make([]string, 0, len(hs))
		for _, h := range hs {
			vals = append(vals, dropTimerTag(h.Value()))
		}
		for req.RemoveHeader(n) {
		}
		for _, v := range vals {
			if v != "" {
				req.AppendHeader(sip.NewHeader(n, v))
			}
		}
	}
}

package trunk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/esbc/esbc/b2bua/locate"
)

// RegState is a trunk's registration as the admin API shows it.
type RegState struct {
	Trunk       string        `json:"trunk"`
	State       string        `json:"state"`            // StateDisabled … StateFailed
	Target      string        `json:"target,omitempty"` // locate.Target.String() of the registrar
	Contact     string        `json:"contact,omitempty"`
	Expires     time.Duration `json:"-"` // granted by the registrar
	ExpiresAt   time.Time     `json:"expires_at,omitzero"`
	LastSuccess time.Time     `json:"last_success,omitzero"`
	NAT         bool          `json:"nat"`                   // received/rport differ from the advertised Contact
	PublicAddr  string        `json:"public_addr,omitempty"` // received:rport as the registrar saw it
	Failures    int           `json:"failures"`              // consecutive failed attempts
	RetryIn     time.Duration `json:"-"`                     // delay before the next attempt after a failure
	LastError   string        `json:"last_error,omitempty"`
}

// MarshalJSON writes Expires in whole seconds and RetryIn in seconds.
func (r RegState) MarshalJSON() ([]byte, error) {
	type plain RegState
	return json.Marshal(struct {
		plain
		ExpiresSeconds int64   `json:"expires_seconds"`
		RetryInSeconds float64 `json:"retry_in_seconds,omitempty"`
	}{plain(r), int64(r.Expires / time.Second), r.RetryIn.Seconds()})
}

// Registration returns the current registration state.
func (t *Trunk) Registration() RegState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reg
}

// regSession is what stays the same across REGISTERs of one trunk
// (RFC 3261 §10.2: same Call-ID, increasing CSeq).
type regSession struct {
	callID  string
	fromTag string
	cseq    uint32
	chal    *sip.Response // last challenge, answered pre-emptively on refresh
}

func newRegSession() regSession {
	return regSession{callID: sip.GenerateTagN(24), fromTag: sip.GenerateTagN(12)}
}

// statusIntervalTooBrief is 423 (RFC 3261 §21.4.17); sipgo has no constant.
const statusIntervalTooBrief = 423

// ErrAuth is returned when the registrar keeps rejecting the credentials.
var ErrAuth = errors.New("authentication rejected")

// errStatus wraps a final failure response that is not the target's fault.
type errStatus struct {
	code   int
	reason string
}

func (e *errStatus) Error() string { return strconv.Itoa(e.code) + " " + e.reason }

// regLoop keeps the trunk registered until ctx ends. See the package
// documentation for the failover and fail-back rules.
func (t *Trunk) regLoop(ctx context.Context) {
	backoff := t.cfg.RetryMin
	failedRound := map[string]bool{} // targets that failed since the last success or backoff
	for ctx.Err() == nil {
		target, err := t.pickRegTarget(ctx)
		if err == nil {
			select {
			case <-t.reflow: // this REGISTER goes over the connection open now
			default:
			}
			var res *sip.Response
			var over flow
			res, over, err = t.register(ctx, target, t.cfg.RegisterExpires)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				backoff = t.cfg.RetryMin
				clear(failedRound)
				refresh := t.registered(ctx, target, res, over)
				t.waitRegistered(ctx, target, refresh)
				continue
			}
			var te *targetError
			if errors.As(err, &te) {
				t.deps.Health.MarkDown(t.cfg.Name, target, "register: "+te.Error())
				failedRound[target.String()] = true
				// Another target not tried in this round: try it now.
				if next, perr := t.pickRegTarget(ctx); perr == nil && !failedRound[next.String()] {
					t.regFailed(target, err, 0)
					continue
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		t.regFailed(target, err, backoff)
		clear(failedRound)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, t.cfg.RetryMax)
	}
}

// pickRegTarget chooses the registrar: the serving target while it is up,
// unless a target of better priority is up and past its hold-down
// (fail-back); else the first target in health order.
func (t *Trunk) pickRegTarget(ctx context.Context) (locate.Target, error) {
	ts, err := t.Targets(ctx)
	if err != nil {
		return locate.Target{}, err
	}
	cur, ok := t.Serving()
	if !ok || !t.deps.Health.Up(t.cfg.Name, cur) || !contains(ts, cur) {
		return ts[0], nil
	}
	if ts[0].Priority < cur.Priority && t.deps.Health.Preferred(t.cfg.Name, ts[0]) {
		return ts[0], nil
	}
	return cur, nil
}

func contains(ts []locate.Target, x locate.Target) bool {
	for _, y := range ts {
		if y.String() == x.String() {
			return true
		}
	}
	return false
}

// waitRegistered waits until the refresh is due, or until the registration
// should move to another target (serving target down, or fail-back).
func (t *Trunk) waitRegistered(ctx context.Context, serving locate.Target, refresh time.Duration) {
	due := time.NewTimer(refresh)
	defer due.Stop()
	// Fail-back has no event (the hold-down just passes) and the B2BUA may
	// take the target down on a failed INVITE: poll, bounded to 5 s.
	poll := time.NewTicker(min(max(t.cfg.FailbackHoldDown/5, 50*time.Millisecond), 5*time.Second, refresh))
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-due.C:
			return
		case <-t.reflow:
			// The registrar reaches us over the connection the REGISTER
			// used (esbc behind NAT): that one is gone, the binding must
			// name the new one now, not at the next refresh.
			t.log.Info("connection to the registrar replaced: registering again over the new one",
				zap.String("target", serving.String()))
			return
		case <-t.kick:
			// Our own keepalive took a target down: look now.
			next, err := t.pickRegTarget(ctx)
			if err == nil && next.String() != serving.String() {
				t.log.Info("registration moves", zap.String("from", serving.String()), zap.String("to", next.String()))
				return
			}
		case <-poll.C:
			next, err := t.pickRegTarget(ctx)
			if err == nil && next.String() != serving.String() {
				t.log.Info("registration moves", zap.String("from", serving.String()), zap.String("to", next.String()))
				return
			}
		}
	}
}

// register sends one REGISTER (Expires = expires) to target, answering up
// to two challenges and one 423, and returns the final 2xx and the
// connection it went over.
func (t *Trunk) register(ctx context.Context, target locate.Target, expires time.Duration) (*sip.Response, flow, error) {
	// A refresh of a live binding stays "registered" in the admin API and
	// the metric; only a first or failed-over registration is "registering".
	t.mu.Lock()
	refreshing := t.reg.State == StateRegistered && t.reg.Target == target.String() && time.Now().Before(t.reg.ExpiresAt)
	if !refreshing {
		t.reg.State = StateRegistering
		t.reg.Target = target.String()
	}
	t.mu.Unlock()
	if !refreshing {
		t.m.setState(t.cfg.Name, StateRegistering)
	}

	challenges, tooBrief := 0, 0
	fresh := false // the last request answered a challenge received in this attempt
	for {
		req, chal := t.newRegister(expires)
		if chal != nil {
			// Pre-emptive answer with the last nonce: spares a round trip
			// on every refresh when the registrar accepts it.
			_ = t.Authorize(req, chal)
		}
		res, laddr, err := t.sendOver(ctx, req, target)
		if err != nil {
			return nil, flow{}, fmt.Errorf("register %s: %w", target, err)
		}
		switch {
		case res.IsSuccess():
			return res, flow{target: target.String(), laddr: laddr}, nil
		case res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired:
			challenges++
			if (fresh && !isStale(res)) || challenges > 3 {
				return nil, flow{}, fmt.Errorf("register %s: %d: %w", target, res.StatusCode, ErrAuth)
			}
			fresh = true
			t.mu.Lock()
			t.sess.chal = res
			t.mu.Unlock()
		case res.StatusCode == statusIntervalTooBrief && tooBrief == 0:
			tooBrief++
			h := res.GetHeader("Min-Expires")
			d, ok := time.Duration(0), false
			if h != nil {
				d, ok = parseSeconds(strings.TrimSpace(h.Value()))
			}
			if !ok || d <= expires {
				return nil, flow{}, fmt.Errorf("register %s: %w", target, &errStatus{res.StatusCode, res.Reason})
			}
			expires = d
		default:
			return nil, flow{}, fmt.Errorf("register %s: %w", target, &errStatus{res.StatusCode, res.Reason})
		}
	}
}

func isStale(res *sip.Response) bool {
	for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		for _, h := range res.GetHeaders(name) {
			if strings.Contains(strings.ToLower(h.Value()), "stale=true") {
				return true
			}
		}
	}
	return false
}

// newRegister builds the next REGISTER of the session and returns the
// challenge to answer pre-emptively, if any.
func (t *Trunk) newRegister(expires time.Duration) (*sip.Request, *sip.Response) {
	t.mu.Lock()
	t.sess.cseq++
	s := t.sess
	t.mu.Unlock()
	req := t.newRequest(sip.REGISTER, s.callID, s.fromTag, s.cseq)
	req.AppendHeader(&sip.ContactHeader{Address: t.contact()})
	req.AppendHeader(expiresHeader(expires))
	req.SetBody(nil)
	return req, s.chal
}

// registered records a successful registration at target and returns when
// to refresh it.
func (t *Trunk) registered(ctx context.Context, target locate.Target, res *sip.Response, over flow) time.Duration {
	granted := t.grantedExpires(res)
	refresh := granted - min(granted/2, 30*time.Second)
	nat, public := t.detectNAT(res)
	if nat {
		refresh = min(refresh, t.cfg.NATRefresh)
	}
	refresh = max(refresh, time.Second)

	t.mu.Lock()
	prev, hadPrev := t.serving, t.haveServing
	wasNAT := t.reg.NAT
	t.serving, t.haveServing = target, true
	t.regFlow = over // the connection the REGISTER went over (watchFlow)
	now := time.Now()
	t.reg = RegState{
		Trunk: t.cfg.Name, State: StateRegistered, Target: target.String(),
		Contact: contactString(t.contact()), Expires: granted, ExpiresAt: now.Add(granted),
		LastSuccess: now, NAT: nat, PublicAddr: public,
	}
	t.mu.Unlock()
	t.m.setState(t.cfg.Name, StateRegistered)
	t.deps.Health.MarkUp(t.cfg.Name, target)
	if nat && !wasNAT {
		t.log.Info("registration behind NAT", zap.String("public", public), zap.Duration("refresh", refresh))
	}
	if !hadPrev || prev.String() != target.String() {
		t.log.Info("registered", zap.String("target", target.String()), zap.Duration("expires", granted))
		// The binding at the previous registrar would deliver calls twice
		// (or to nowhere); remove it while that registrar still answers.
		if hadPrev && t.deps.Health.Up(t.cfg.Name, prev) {
			if err := t.sendUnregister(ctx, prev); err != nil {
				t.log.Info("unregister at previous registrar", zap.String("target", prev.String()), zap.Error(err))
			}
		}
	}
	return refresh
}

func contactString(u sip.Uri) string { return u.String() }

// grantedExpires reads the expiry the registrar granted for our Contact:
// its expires parameter, else the Expires header, else what was asked.
func (t *Trunk) grantedExpires(res *sip.Response) time.Duration {
	mine := t.contact()
	for _, h := range res.GetHeaders("Contact") {
		for _, v := range splitContacts(h.Value()) {
			var u sip.Uri
			params := sip.NewParams()
			if _, err := sip.ParseAddressValue(v, &u, &params); err != nil {
				continue
			}
			if !strings.EqualFold(u.Host, mine.Host) || u.Port != mine.Port || u.User != mine.User {
				continue
			}
			if e, ok := params.Get("expires"); ok {
				if d, ok := parseSeconds(e); ok && d > 0 {
					return d
				}
			}
		}
	}
	if h := res.GetHeader("Expires"); h != nil {
		if d, ok := parseSeconds(strings.TrimSpace(h.Value())); ok && d > 0 {
			return d
		}
	}
	return t.cfg.RegisterExpires
}

// detectNAT compares the address the registrar saw (received/rport of our
// Via, RFC 3581) with the advertised Contact. On tcp/tls the source port is
// ephemeral by nature, so only the address counts there.
func (t *Trunk) detectNAT(res *sip.Response) (bool, string) {
	via := res.Via()
	if via == nil {
		return false, ""
	}
	host, hasRecv := via.Params.Get("received")
	if !hasRecv || host == "" {
		host = via.Host
	}
	portStr, hasRport := via.Params.Get("rport")
	port, err := strconv.Atoi(portStr)
	if !hasRport || err != nil || port == 0 {
		port = via.Port
	}
	public := joinHostPort(host, port)
	if !strings.EqualFold(strings.Trim(host, "[]"), strings.Trim(t.cfg.ContactHost, "[]")) {
		return true, public
	}
	if t.cfg.Transport == "udp" && hasRport && port != t.cfg.ContactPort {
		return true, public
	}
	return false, public
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

// splitContacts splits a Contact header value at the commas that separate
// contacts (not those inside <...> or quotes).
func splitContacts(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"' && (i == 0 || v[i-1] != '\\'):
			quoted = !quoted
		case quoted:
		case c == '<':
			depth++
		case c == '>':
			depth--
		case c == ',' && depth == 0:
			out = append(out, strings.TrimSpace(v[start:i]))
			start = i + 1
		}
	}
	return append(out, strings.TrimSpace(v[start:]))
}

func (t *Trunk) regFailed(target locate.Target, err error, retry time.Duration) {
	t.mu.Lock()
	t.reg.State = StateFailed
	t.reg.Failures++
	t.reg.LastError = err.Error()
	if target.Addr.IsValid() {
		t.reg.Target = target.String()
	}
	t.reg.RetryIn = retry
	failures := t.reg.Failures
	t.mu.Unlock()
	t.m.setState(t.cfg.Name, StateFailed)
	t.log.Warn("registration failed", zap.Error(err), zap.Int("failures", failures), zap.Duration("retry_in", retry))
}

// unregister removes the binding at the serving registrar if one was made.
func (t *Trunk) unregister(ctx context.Context) error {
	if !t.cfg.registers() {
		return nil
	}
	t.mu.Lock()
	target, ok := t.serving, t.haveServing && !t.reg.LastSuccess.IsZero()
	t.mu.Unlock()
	var err error
	if ok {
		err = t.sendUnregister(ctx, target)
	}
	t.mu.Lock()
	t.reg.State = StateUnregistered
	t.reg.Expires, t.reg.ExpiresAt = 0, time.Time{}
	if err != nil {
		t.reg.LastError = err.Error()
	}
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("trunk %s: unregister: %w", t.cfg.Name, err)
	}
	return nil
}

// sendUnregister sends REGISTER with Expires: 0 for our Contact to target,
// answering a challenge.
func (t *Trunk) sendUnregister(ctx context.Context, target locate.Target) error {
	ctx, cancel := context.WithTimeout(ctx, 2*t.cfg.FailoverTimeout)
	defer cancel()
	for attempt := 0; attempt < 3; attempt++ {
		req, chal := t.newRegister(0)
		if chal != nil {
			_ = t.Authorize(req, chal)
		}
		res, err := t.send(ctx, req, target)
		if err != nil {
			return err
		}
		if res.IsSuccess() {
			return nil
		}
		if res.StatusCode != sip.StatusUnauthorized && res.StatusCode != sip.StatusProxyAuthRequired {
			return &errStatus{res.StatusCode, res.Reason}
		}
		t.mu.Lock()
		t.sess.chal = res
		t.mu.Unlock()
	}
	return ErrAuth
}

// sleep waits d or until ctx ends; false means ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

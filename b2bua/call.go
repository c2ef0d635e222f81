package b2bua

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/esbc/esbc/b2bua/header"
	"github.com/esbc/esbc/b2bua/locate"
)

// CallState is where a call is in its life.
type CallState int

// Call states, in order.
const (
	StateSetup     CallState = iota // INVITE sent on leg B, no answer yet
	StateEarly                      // a provisional with a tag came back
	StateAnswered                   // 2xx relayed to leg A, its ACK not yet seen
	StateConfirmed                  // both legs confirmed
	StateEnded
)

// String is the state's name in the admin API and logs.
func (s CallState) String() string {
	return [...]string{"setup", "early", "answered", "confirmed", "ended"}[s]
}

// Leg is one side of a call: a dialog with the PBX or with a trunk.
type Leg struct {
	Side   string // "lan" | "wan"
	UAS    bool   // esbc is the UAS of this dialog (the leg the call came in on)
	Dialog Dialog
	// Target is the trunk server serving the dialog (WAN UAC legs).
	Target locate.Target

	call *Call
	side *side
	idx  int // media leg index: 0 = A, 1 = B

	// In-dialog ordering of the requests this leg's peer sends (guarded by
	// call.mu; see order.go): relayed is the CSeq of the last one whose
	// relay is written (or that was answered here); wake, when not nil, is
	// closed when relayed moves or the call ends.
	relayed uint32
	wake    chan struct{}
	gappy   bool // a wait for a missing CSeq expired: no more CSeq waits
}

// client is the sipgo client that sends this leg's requests: the side's
// UDP-bound client for a UDP dialog when there is one (requests leave from
// the listening socket), else the side's client.
func (l *Leg) client() *sipgo.Client {
	if l.Dialog.Transport == "UDP" && l.side.ep.UDPClient != nil {
		return l.side.ep.UDPClient
	}
	return l.side.ep.Client
}

func (l *Leg) key() dialogKey {
	return dialogKey{callID: l.Dialog.CallID, localTag: l.Dialog.LocalTag}
}

// Call is one B2BUA call: leg A (where the INVITE came in) and leg B.
// Plain fields are guarded by mu.
type Call struct {
	ID        string
	Direction string // "outbound" (PBX → trunk) | "inbound" (trunk → PBX)
	Trunk     string
	From, To  string // caller and called numbers as routed
	Start     time.Time
	Answer    time.Time
	End       time.Time
	Code      int    // final SIP status of the setup
	Reason    string // why the call ended
	A, B      *Leg

	mu       sync.Mutex
	state    CallState
	cfg      *Config
	tc       *TrunkConfig // the trunk's entry of cfg (shared, read-only)
	trunk    Trunk
	media    MediaSession
	acquired bool

	setupCtx    context.Context
	setupCancel context.CancelCauseFunc
	ackCh       chan struct{} // closed when leg A ACKs our 2xx
	ackOnce     sync.Once
	endCh       chan struct{}         // closed by finish
	aInviteSeq  uint32                // CSeq of leg A's INVITE (its ACK carries it too)
	bTx         sip.ClientTransaction // INVITE transaction of leg B
	bAckOnce    sync.Once             // ACK for B's 2xx: built and written once (see ackB)
	bInviteSeq  uint32
	timers      []*time.Timer
	pending     [2]bool         // a re-INVITE is in progress from leg idx
	lastAnswerA []byte          // last SDP answer sent to leg A during setup
	identity    header.Identity // caller identity written on leg B's INVITE
	reAck       [2]*ackWait     // a relayed re-INVITE's 2xx waiting for its ACK, per leg
	// lateOffer: leg A's INVITE had no SDP (delayed offer): leg B's 2xx
	// carries the offer, leg A's ACK the answer, which esbc relays in its
	// ACK to leg B.
	lateOffer bool
	ackBody   []byte // body of leg A's ACK (late offer)
	ackCType  string
	// Session timer esbc runs on leg B itself (timer.go): ownTimer when leg
	// A's peer does not support timers and Config.SessionExpires is set;
	// seDelta the interval in seconds, esbcRefreshes whether esbc is the
	// refresher, refreshT its refresh (also in timers).
	ownTimer      bool
	seDelta       int
	esbcRefreshes bool
	refreshT      *time.Timer
	st            SessionTimers // RFC 4028 state per leg (timer.go)
	prack         PrackState    // RFC 3262 state (prack.go)
}

// ackWait is a 2xx to a re-INVITE waiting for the ACK with CSeq seq.
type ackWait struct {
	seq uint32
	ch  chan struct{}
}

var (
	errCancelled = errors.New("cancelled by caller")
	errRemoteBye = errors.New("callee hung up during setup")
	errShutdown  = errors.New("shutdown")
)

// onInvite handles INVITE: a new call, or a re-INVITE in a dialog.
func (b *B2BUA) onInvite(s *side, req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		b.onInDialog(s, req, tx)
		return
	}
	var c *Call
	err := ErrDraining
	if !b.draining.Load() {
		trying := sip.NewResponseFromRequest(req, 100, "Trying", nil)
		if err := b.send(s, tx, trying); err != nil {
			b.log.Debug("100 Trying failed", zap.Error(err))
		}
		c, err = b.newCall(s, req, tx)
	}
	if err != nil {
		code, reason := Status(err)
		b.log.Info("call refused", zap.String("side", s.name), zap.String("ruri", req.Recipient.User),
			zap.Int("code", code), zap.Error(err))
		dir := "outbound"
		if s == b.wan {
			dir = "inbound"
		}
		b.m.done(dir, "", resultFor(code, false), 0)
		b.m.rejected(s.name, refusedReason(err))
		if b.deps.OnEnd != nil {
			now := time.Now()
			ci := CallInfo{ID: newCallID(), Direction: dir, To: req.Recipient.User, State: StateEnded.String(),
				Start: now, End: now, Code: code, Disposition: resultFor(code, false), Reason: err.Error()}
			if cid := req.CallID(); cid != nil {
				// The refused INVITE's dialog: one leg, no media.
				ci.Legs = []LegInfo{{Side: s.name, CallID: cid.Value(), Transport: upperTransport(req.Transport()), Peer: req.Source()}}
			}
			if f := req.From(); f != nil {
				ci.From = f.Address.User
			}
			b.deps.OnEnd(ci)
		}
		var hdrs []sip.Header
		if code == 503 {
			hdrs = append(hdrs, b.retryAfter())
		}
		if errors.Is(err, ErrIntervalTooSmall) {
			hdrs = append(hdrs, minSEHeader(b.cfg.Load()))
		}
		if h := unsupportedHeader(err); h != nil {
			hdrs = append(hdrs, h)
		}
		b.respond(s, req, tx, code, reason, hdrs...)
		b.awaitNon2xxAck(tx)
		return
	}
	b.setup(c, req, tx)
}

// newCall routes the INVITE and builds both legs.
func (b *B2BUA) newCall(s *side, req *sip.Request, tx sip.ServerTransaction) (*Call, error) {
	cfg := b.cfg.Load()
	if req.Contact() == nil || req.From() == nil || req.CSeq() == nil {
		return nil, ErrBadRequest
	}
	if err := checkRequire(req); err != nil { // RFC 3261 §8.2.2.3
		return nil, err
	}
	if err := checkInterval(cfg, req); err != nil {
		return nil, err
	}
	c := &Call{ID: newCallID(), Start: time.Now(), cfg: cfg, ackCh: make(chan struct{}), endCh: make(chan struct{}),
		lateOffer: len(req.Body()) == 0}
	c.setupCtx, c.setupCancel = context.WithCancelCause(context.Background())
	c.prack.ReliableA = hasOptionTag(req, "Require", "100rel")
	c.From = req.From().Address.User
	if cfg.SessionExpires > 0 && !supportsTimer(req) {
		c.ownTimer = true
		c.seDelta = int(max(cfg.SessionExpires, cfg.minSE()) / time.Second)
	}
	var trunkName string
	if s == b.lan {
		c.Direction = "outbound"
		dialled := req.Recipient.User
		if dialled == "" {
			dialled = req.To().Address.User
		}
		r, err := cfg.Router.Outbound(dialled)
		if err != nil {
			b.log.Info("no outbound route", zap.String("number", dialled), zap.Error(err))
			return nil, err
		}
		trunkName, c.To = r.Trunk, r.Number
		if r.Emergency {
			b.log.Warn("emergency or special-service call", zap.String("number", dialled), zap.String("trunk", r.Trunk))
		}
	} else {
		c.Direction = "inbound"
		t, ok := b.deps.Trunks.ByAddr(sourceAddr(req.Source()))
		if !ok {
			b.m.tollFraud.Inc()
			b.log.Warn("INVITE from a source that is no trunk server", zap.String("source", req.Source()))
			if b.deps.AuthFailure != nil {
				b.deps.AuthFailure(sourceAddr(req.Source()))
			}
			return nil, ErrNotTrunk
		}
		trunkName = t.Name()
		ext, err := cfg.Router.Inbound(req.Recipient.User)
		if err != nil {
			b.log.Info("no inbound route", zap.String("number", req.Recipient.User), zap.Error(err))
			return nil, err
		}
		c.To = ext
		if cfg.PBX == "" {
			return nil, fmt.Errorf("inbound call: no pbx uri: %w", ErrNoRoute)
		}
	}
	c.Trunk = trunkName
	t, ok := b.deps.Trunks.Get(trunkName)
	if !ok {
		return nil, fmt.Errorf("trunk %q: %w", trunkName, ErrNoRoute)
	}
	c.trunk = t
	c.tc = cfg.trunk(trunkName)
	if !t.Acquire() {
		b.log.Warn("trunk channel limit reached", zap.String("trunk", trunkName))
		return nil, ErrChannels
	}
	c.acquired = true

	// Leg A: the dialog the INVITE created, esbc as UAS.
	from, to := req.From(), req.To()
	ftag, _ := from.Params.Get("tag")
	a := &Leg{Side: s.name, UAS: true, call: c, side: s, idx: 0}
	a.Dialog = Dialog{
		CallID:       req.CallID().Value(),
		LocalTag:     randHex(8),
		RemoteTag:    ftag,
		LocalName:    to.DisplayName,
		LocalURI:     *to.Address.Clone(),
		RemoteName:   from.DisplayName,
		RemoteURI:    *from.Address.Clone(),
		RemoteTarget: *req.Contact().Address.Clone(),
		RemoteCSeq:   req.CSeq().SeqNo,
		LocalCSeq:    uint32(randUint16()),
		Transport:    upperTransport(req.Transport()),
		Destination:  req.Source(),
	}
	for _, h := range req.GetHeaders("Record-Route") {
		a.Dialog.RouteSet = append(a.Dialog.RouteSet, h.Value())
	}
	a.Dialog.ViaHost, a.Dialog.ViaPort = b.sideAddr(cfg, s, a.Dialog.Transport)
	a.Dialog.Contact = b.contact(cfg, s, a.Dialog.Transport)
	a.relayed = a.Dialog.RemoteCSeq // the INVITE: leg A's next request is CSeq+1
	c.A = a
	c.aInviteSeq = a.Dialog.RemoteCSeq

	// Leg B: a new dialog, esbc as UAC.
	other := b.wan
	if s == b.wan {
		other = b.lan
	}
	bl := &Leg{Side: other.name, call: c, side: other, idx: 1}
	bl.Dialog = Dialog{
		CallID:    newCallID(),
		LocalTag:  randHex(8),
		LocalCSeq: uint32(randUint16()),
	}
	if c.Direction == "outbound" {
		tr := c.tc.Transport
		if tr == "" {
			tr = "tls"
		}
		bl.Dialog.Transport = upperTransport(tr)
		user := c.tc.FromUser
		if user == "" {
			user = c.From
		}
		bl.Dialog.LocalURI = sip.Uri{Scheme: "sip", User: user, Host: c.tc.Domain}
		bl.Dialog.LocalName = from.DisplayName
		id, err := header.TrunkCaller(req, header.TrunkIdentity{
			Domain: c.tc.Domain, FromUser: c.tc.FromUser, CallerID: c.tc.CallerID,
			AllowedCallerIDs: c.tc.AllowedCallerIDs, TrustPAI: c.tc.TrustPAI,
			FromDisplay: c.tc.FromDisplay, KeepFromUserOnPrivacy: true,
		}, cfg.PBXTrusted, cfg.E164)
		if err != nil {
			b.log.Info("caller identity toward the trunk: defaults used", zap.String("trunk", trunkName), zap.Error(err))
		} else {
			bl.Dialog.LocalURI, bl.Dialog.LocalName = id.From, id.DisplayName
			c.identity = id
		}
		bl.Dialog.RemoteURI = sip.Uri{Scheme: "sip", User: c.To, Host: c.tc.Domain}
		bl.Dialog.RemoteTarget = sip.Uri{Scheme: "sip", User: c.To, Host: c.tc.Domain}
		if tr != "udp" {
			bl.Dialog.RemoteTarget.UriParams = sip.HeaderParams{{K: "transport", V: strings.ToLower(tr)}}
		}
	} else {
		var pbx sip.Uri
		_ = sip.ParseUri(cfg.PBX, &pbx)
		tr := "udp"
		if v, ok := pbx.UriParams.Get("transport"); ok && v != "" {
			tr = strings.ToLower(v)
		}
		bl.Dialog.Transport = upperTransport(tr)
		port := pbx.Port
		if port == 0 {
			port = 5060
			if tr == "tls" {
				port = 5061
			}
		}
		bl.Dialog.Destination = net.JoinHostPort(strings.Trim(pbx.Host, "[]"), strconv.Itoa(port))
		caller := b.inboundCaller(c, req)
		c.From = caller
		bl.Dialog.LocalURI = sip.Uri{Scheme: "sip", User: caller, Host: cfg.LAN.Advertise}
		bl.Dialog.LocalName = from.DisplayName
		id, err := header.PBXCaller(req, c.tc.TrustPAI, cfg.LAN.Advertise, cfg.CallerForPBX)
		if err != nil {
			b.log.Info("caller identity toward the PBX: From user used", zap.String("trunk", trunkName), zap.Error(err))
		} else {
			bl.Dialog.LocalURI, bl.Dialog.LocalName = id.From, id.DisplayName
			c.identity = id
			if id.From.User != "" {
				c.From = id.From.User
			}
		}
		bl.Dialog.RemoteURI = sip.Uri{Scheme: "sip", User: c.To, Host: pbx.Host, Port: pbx.Port}
		bl.Dialog.RemoteTarget = sip.Uri{Scheme: "sip", User: c.To, Host: pbx.Host, Port: pbx.Port, UriParams: pbx.UriParams}
	}
	bl.Dialog.ViaHost, bl.Dialog.ViaPort = b.sideAddr(cfg, other, bl.Dialog.Transport)
	bl.Dialog.Contact = b.contact(cfg, other, bl.Dialog.Transport)
	c.B = bl

	if b.deps.Media != nil {
		la, lb := cfg.LANMedia, c.tc.Media
		if lb.Name == "" {
			lb = cfg.WANMedia
		}
		la.Name, lb.Name = "lan", "wan"
		lb.SignalingSecure = bl.Dialog.Transport == "TLS"
		if c.Direction == "inbound" {
			la, lb = lb, la
			la.SignalingSecure = a.Dialog.Transport == "TLS"
			if c.tc.FarEndNAT {
				la.LatchAddr = sourceAddr(req.Source())
			}
		}
		// Media leg 0 is leg A (the PBX outbound, the trunk inbound): each
		// carries its own dialog's Call-ID, so that the capture files its
		// RTP with that leg's SIP.
		la.CallID, lb.CallID = a.Dialog.CallID, bl.Dialog.CallID
		ms, err := b.deps.Media.NewSession(c.ID, la, lb, func() { b.hangupAsync(c, "media inactivity") })
		if err != nil {
			t.Release()
			return nil, err
		}
		c.media = ms
	}
	b.addCall(c)
	b.addLeg(a)
	b.addLeg(bl)
	return c, nil
}

// inboundCaller is the caller number shown to the PBX: the trunk's
// P-Asserted-Identity when trusted, else the From user.
func (b *B2BUA) inboundCaller(c *Call, req *sip.Request) string {
	if c.tc.TrustPAI {
		if h := req.GetHeader("P-Asserted-Identity"); h != nil {
			var u sip.Uri
			v := strings.TrimSpace(h.Value())
			if i := strings.IndexByte(v, '<'); i >= 0 {
				if j := strings.IndexByte(v[i:], '>'); j > 0 {
					v = v[i+1 : i+j]
				}
			}
			if err := sip.ParseUri(v, &u); err == nil && u.User != "" {
				return u.User
			}
		}
	}
	return req.From().Address.User
}

// sideAddr is our advertised sent-by on a side for a transport.
func (b *B2BUA) sideAddr(cfg *Config, s *side, transport string) (string, int) {
	sc := cfg.LAN
	if s == b.wan {
		sc = cfg.WAN
	}
	t := strings.ToLower(transport)
	port := sc.Ports[t]
	if port == 0 {
		port = s.ep.Server.TransportLayer().GetListenPort(t)
	}
	if port == 0 {
		port = s.ep.Server.TransportLayer().GetListenPort("udp")
	}
	return sc.Advertise, port
}

func (b *B2BUA) contact(cfg *Config, s *side, transport string) sip.Uri {
	host, port := b.sideAddr(cfg, s, transport)
	u := sip.Uri{Scheme: "sip", User: "esbc", Host: host, Port: port}
	if t := strings.ToLower(transport); t != "udp" {
		u.UriParams = sip.HeaderParams{{K: "transport", V: t}}
	}
	return u
}

// target is one place leg B's INVITE can go.
type target struct {
	loc     locate.Target
	dest    string
	timeout time.Duration // failover timeout; 0 = wait for the transaction
}

// setup runs the call set-up on the INVITE handler's goroutine: it sends
// leg B's INVITE to each target in turn, relays provisional responses and
// the final one, and waits for leg A's ACK of a 2xx.
func (b *B2BUA) setup(c *Call, req *sip.Request, tx sip.ServerTransaction) {
	start := time.Now()
	tx.OnCancel(func(*sip.Request) { c.setupCancel(errCancelled) })

	offer := req.Body()
	if c.media != nil && len(offer) > 0 {
		o, err := c.media.Offer(0, offer)
		if err != nil {
			b.failSetup(c, req, tx, err)
			return
		}
		offer = o
	}

	var targets []target
	if c.Direction == "outbound" {
		ctx, cancel := context.WithTimeout(c.setupCtx, 5*time.Second)
		ts, err := c.trunk.Targets(ctx)
		cancel()
		if err != nil || len(ts) == 0 {
			b.failSetup(c, req, tx, fmt.Errorf("trunk %s targets: %w", c.Trunk, errors.Join(ErrNoTargets, err)))
			return
		}
		to := c.tc.FailoverTimeout
		if to <= 0 {
			to = 2 * time.Second
		}
		for _, t := range ts {
			targets = append(targets, target{loc: t, dest: t.Addr.String(), timeout: to})
		}
	} else {
		targets = []target{{dest: c.B.Dialog.Destination}}
	}

	var res *sip.Response
	var lastErr error
	for i, t := range targets {
		if c.setupCtx.Err() != nil {
			break
		}
		var next bool
		// The last target keeps its failover_timeout too: a trunk whose
		// servers all stay silent is answered 503 within failover_timeout
		// per server, so the PBX can take its own alternate route instead
		// of waiting 32 s for Timer B. A target that answered anything
		// (even 100 Trying) is alive and keeps the transaction's timers.
		last := i == len(targets)-1
		res, next, lastErr = b.inviteTarget(c, req, tx, t, offer, last)
		if !next {
			break
		}
		b.log.Info("failover to next target", zap.String("call", c.ID), zap.String("trunk", c.Trunk),
			zap.String("target", t.dest), zap.Error(lastErr))
	}

	if res == nil || !res.IsSuccess() {
		if cause := context.Cause(c.setupCtx); errors.Is(cause, errNoPrack) {
			b.failSetup(c, req, tx, cause) // leg B's 487 to esbc's CANCEL is not leg A's answer
		} else if res != nil {
			b.failSetup(c, req, tx, &responseError{res: res})
		} else if cause := context.Cause(c.setupCtx); cause != nil {
			b.failSetup(c, req, tx, cause)
		} else {
			b.failSetup(c, req, tx, errors.Join(ErrNoTargets, lastErr))
		}
		return
	}

	// 2xx from leg B.
	c.mu.Lock()
	b.learnDialog(c.B, res)
	b.noteTimer(c, res, true) // armed once confirmed (startTimers)
	c.mu.Unlock()
	answer := res.Body()
	if c.media != nil && len(answer) > 0 {
		rewrite, what := c.media.Answer, "answer from leg B not acceptable"
		if c.lateOffer {
			// Delayed offer: leg B's 2xx offers; leg A answers in its ACK.
			rewrite, what = c.media.Offer, "offer in leg B's 2xx not acceptable"
		}
		out, err := rewrite(1, answer)
		if err != nil {
			b.log.Warn(what, zap.String("call", c.ID), zap.Error(err))
			b.ackB(c)
			b.sendBye(c, c.B)
			b.failSetup(c, req, tx, err)
			return
		}
		answer = out
	} else if len(answer) == 0 {
		answer = c.lastAnswerA
	}
	// RFC 3262 §3: no 2xx before the PRACK of a reliable 18x with SDP.
	b.awaitPrackA(c)
	// The answered state and a hang-up during set-up are decided under
	// c.mu: either hangup sees StateAnswered (and ends the call with BYEs)
	// or this goroutine sees its cause (and fails the set-up).
	c.mu.Lock()
	cause := context.Cause(c.setupCtx)
	if cause == nil {
		c.state = StateAnswered
	}
	c.mu.Unlock()
	if cause != nil {
		// CANCEL or BYE crossed the 2xx: confirm leg B, then end it.
		b.ackB(c)
		if !errors.Is(cause, errRemoteBye) {
			b.sendBye(c, c.B)
		}
		b.failSetup(c, req, tx, cause)
		return
	}

	c.mu.Lock()
	c.Answer = time.Now()
	c.Code = res.StatusCode
	c.mu.Unlock()
	b.m.setup.WithLabelValues(c.Direction).Observe(time.Since(start).Seconds())
	ok := b.answerA(c, req, tx, res, answer)
	if !ok {
		b.log.Info("no ACK from leg A", zap.String("call", c.ID))
		b.ackB(c)
		b.hangup(c, nil, "no ACK")
		return
	}
	b.ackB(c)
	c.mu.Lock()
	ended := c.state == StateEnded
	if !ended {
		c.state = StateConfirmed
		b.startTimers(c)
	}
	c.lastAnswerA = nil // set-up only
	c.mu.Unlock()
	b.log.Debug("call confirmed", zap.String("call", c.ID), zap.String("trunk", c.Trunk))
}

// inviteTarget sends leg B's INVITE to one target. next reports that the
// next target should be tried (no response in time, transport error, 503).
func (b *B2BUA) inviteTarget(c *Call, areq *sip.Request, atx sip.ServerTransaction, t target, body []byte, last bool) (res *sip.Response, next bool, err error) {
	c.mu.Lock()
	d := &c.B.Dialog
	if t.dest != "" {
		d.Destination = t.dest
	}
	c.B.Target = t.loc
	d.RemoteTag = ""
	req := d.newRequest(sip.INVITE, 0)
	c.bInviteSeq = d.LocalCSeq
	c.mu.Unlock()
	b.buildInvite(c, areq, req, body)

	cli := c.B.client()
	authTries := 0
	send := func() (sip.ClientTransaction, error) {
		// The context bounds the connection set-up only (TCP/TLS to a dead
		// server): sipgo does not keep it for the transaction.
		d := t.timeout
		if d <= 0 {
			d = 32 * sip.T1
		}
		ctx, cancel := context.WithTimeout(c.setupCtx, d)
		defer cancel()
		return cli.TransactionRequest(ctx, req, b.build)
	}
	tx, err := send()
	if err != nil {
		b.markDown(c, t, "transport: "+err.Error())
		return nil, !last, err
	}
	c.mu.Lock()
	c.bTx = tx
	c.mu.Unlock()

	var failover <-chan time.Time
	if t.timeout > 0 {
		tm := time.NewTimer(t.timeout)
		defer tm.Stop()
		failover = tm.C
	}
	gotResponse := false
	trying := false // only a 100 so far, proceedingTimeout armed
	provisional := false
	cancelled := false
	seTries := 0
	setupDone := c.setupCtx.Done()
	var cancelDeadline <-chan time.Time
	for {
		select {
		case r := <-tx.Responses():
			if r.StatusCode == 100 && !gotResponse && !last && !cancelled && t.timeout > 0 {
				// 100 Trying proves the server got the INVITE, not that it
				// can place the call: a server that dies after its 100
				// would leave the PBX waiting for Timer B. Give it
				// proceedingTimeout to send 18x or a final response, then
				// CANCEL and move on. Not on the last target: with nothing
				// to fail over to, a slow (long post-dial delay) call must
				// not be cut.
				gotResponse = true
				trying = true
				failover = time.After(proceedingTimeout(t.timeout))
				continue
			}
			gotResponse = true
			failover = nil
			trying = false
			if r.IsProvisional() {
				if r.StatusCode == 100 {
					continue
				}
				provisional = true
				if !b.prackB(c, r) || cancelled {
					continue // a reliable 18x seen before (RFC 3262 §4), or cancelled
				}
				b.relayProvisional(c, areq, atx, r)
				continue
			}
			if r.IsSuccess() {
				b.markUp(c, t)
				return r, false, nil
			}
			c.mu.Lock()
			se := 0
			if seTries == 0 && !cancelled {
				se = retryInterval(c, r)
			}
			if se > 0 {
				// §7.4: once more with the interval leg B's peer asks for.
				seTries++
				c.seDelta = se
				ownTimerHeaders(req, c.cfg, se)
				c.mu.Unlock()
				if tx, err = b.resendInvite(c, tx, req, send); err != nil {
					return nil, !last, err
				}
				continue
			}
			c.mu.Unlock()
			if (r.StatusCode == 401 || r.StatusCode == 407) && authTries < 2 && !cancelled {
				authTries++
				if err := c.trunk.Authorize(req, r); err != nil {
					b.log.Warn("digest challenge not answered", zap.String("trunk", c.Trunk), zap.Error(err))
					return r, false, nil
				}
				tx.Terminate()
				c.mu.Lock()
				req.RemoveHeader("Via")
				req.PrependHeader(d.via())
				d.LocalCSeq++
				req.CSeq().SeqNo = d.LocalCSeq
				c.bInviteSeq = d.LocalCSeq
				c.mu.Unlock()
				ntx, err := send()
				if err != nil {
					return nil, !last, err
				}
				tx = ntx
				c.mu.Lock()
				c.bTx = tx
				c.mu.Unlock()
				continue
			}
			if r.StatusCode == 503 && !provisional && !cancelled {
				b.markDown(c, t, "503")
				if !last {
					return r, true, fmt.Errorf("target answered 503")
				}
			}
			b.markUp(c, t)
			return r, false, nil
		case <-failover:
			if trying {
				// 100 Trying and then nothing within proceedingTimeout.
				b.sendCancel(c, req)
				tx.Terminate()
				b.markDown(c, t, "no 18x or final response after 100 Trying")
				return nil, !last, fmt.Errorf("no 18x or final response from %s within %s of its 100 Trying", t.dest, proceedingTimeout(t.timeout))
			}
			// No response at all from this target in failover_timeout.
			tx.Terminate()
			b.markDown(c, t, "timeout")
			return nil, !last, fmt.Errorf("no response from %s within %s", t.dest, t.timeout)
		case <-tx.Done():
			err := tx.Err()
			if !gotResponse {
				b.markDown(c, t, "transport: "+errString(err))
				return nil, !last && c.setupCtx.Err() == nil, err
			}
			return nil, false, err
		case <-setupDone:
			setupDone = nil
			cancelled = true
			failover = nil
			cancelDeadline = time.After(64 * sip.T1)
			if provisional || gotResponse {
				b.sendCancel(c, req)
			} else {
				// RFC 3261 §9.1: no CANCEL before a provisional; wait for one.
				failover = time.After(t.timeout + time.Second)
			}
		case <-cancelDeadline:
			tx.Terminate()
			return nil, false, context.Cause(c.setupCtx)
		}
		if cancelled && provisional && !gotResponse {
			b.sendCancel(c, req)
		}
	}
}

// proceedingTimeout is how long a target that answered 100 Trying has to
// send 18x or a final response before esbc cancels and fails over to the
// next target: five failover timeouts, at least 10 s, so that ordinary
// post-dial delay on the PSTN side of a trunk is not mistaken for a dead
// server.
func proceedingTimeout(failover time.Duration) time.Duration {
	return max(5*failover, 10*time.Second)
}

// resendInvite sends leg B's INVITE again in a new transaction (new
// branch, next CSeq) after a final response that asked for a change.
func (b *B2BUA) resendInvite(c *Call, tx sip.ClientTransaction, req *sip.Request, send func() (sip.ClientTransaction, error)) (sip.ClientTransaction, error) {
	tx.Terminate()
	c.mu.Lock()
	d := &c.B.Dialog
	req.RemoveHeader("Via")
	req.PrependHeader(d.via())
	d.LocalCSeq++
	req.CSeq().SeqNo = d.LocalCSeq
	c.bInviteSeq = d.LocalCSeq
	c.mu.Unlock()
	ntx, err := send()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.bTx = ntx
	c.mu.Unlock()
	return ntx, nil
}

func errString(err error) string {
	if err == nil {
		return "terminated"
	}
	return err.Error()
}

func (b *B2BUA) markDown(c *Call, t target, reason string) {
	if b.deps.Health != nil && t.loc.Addr.IsValid() {
		b.deps.Health.MarkDown(c.Trunk, t.loc, reason)
	}
}

func (b *B2BUA) markUp(c *Call, t target) {
	if b.deps.Health != nil && t.loc.Addr.IsValid() {
		b.deps.Health.MarkUp(c.Trunk, t.loc)
	}
}

// sendCancel cancels leg B's pending INVITE (RFC 3261 §9.1).
func (b *B2BUA) sendCancel(c *Call, inv *sip.Request) {
	cancel := sip.NewRequest(sip.CANCEL, inv.Recipient)
	cancel.AppendHeader(sip.HeaderClone(inv.Via()))
	cancel.AppendHeader(sip.HeaderClone(inv.From()))
	cancel.AppendHeader(sip.HeaderClone(inv.To()))
	cancel.AppendHeader(sip.HeaderClone(inv.CallID()))
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	cancel.AppendHeader(&mf)
	sip.CopyHeaders("Route", inv, cancel)
	cancel.SetTransport(inv.Transport())
	cancel.SetDestination(inv.Destination())
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		ctx, done := context.WithTimeout(context.Background(), 32*sip.T1)
		defer done()
		res, err := c.B.client().Do(ctx, cancel, b.build)
		if err != nil || res.StatusCode != 200 {
			b.log.Debug("CANCEL not confirmed", zap.String("call", c.ID), zap.Error(err))
		}
	}()
}

// buildInvite fills leg B's INVITE: body, identity, allowed headers.
func (b *B2BUA) buildInvite(c *Call, areq, req *sip.Request, body []byte) {
	cfg := c.cfg
	if len(body) > 0 {
		ct := areq.GetHeader("Content-Type")
		v := "application/sdp"
		if ct != nil {
			v = ct.Value()
		}
		req.AppendHeader(sip.NewHeader("Content-Type", v))
	}
	req.SetBody(body)
	req.AppendHeader(sip.NewHeader("Allow", allowMethods))
	if c.ownTimer {
		copyHeaders(areq, req, nil, "Supported")
		defer ownTimerHeaders(req, cfg, c.seDelta) // after the header policy
	} else {
		copyHeaders(areq, req, nil, "Supported", "Session-Expires", "Min-SE")
	}
	// esbc PRACKs leg B's reliable 18x itself (prack.go). Not on a
	// delayed offer: a reliable 18x would carry the offer and its PRACK
	// the answer, which esbc does not do (the offer waits for the 2xx, as
	// before). Not toward a trunk with prack: false (TrunkConfig.NoPRACK).
	offer100rel := !c.lateOffer && (c.Direction != "outbound" || !c.tc.NoPRACK)
	if offer100rel {
		addSupported(req, "100rel")
	}
	if c.identity.PAI != "" {
		req.AppendHeader(sip.NewHeader("P-Asserted-Identity", c.identity.PAI))
	}
	if c.identity.Privacy != "" {
		req.AppendHeader(sip.NewHeader("Privacy", c.identity.Privacy))
	}
	if pol := b.policy(c, c.B); pol != nil {
		if err := pol.CopyAllowed(areq, req); err != nil {
			b.log.Info("header policy", zap.String("call", c.ID), zap.Error(err))
		}
		if !offer100rel {
			// The policy copies leg A's Supported/Require when esbc wrote
			// none: leg A's 100rel must not offer (or demand) reliable
			// 18x that esbc does not want on leg B.
			dropOptionTag(req, "Supported", "100rel")
			dropOptionTag(req, "Require", "100rel")
		}
		return
	}
	copyHeaders(areq, req, cfg)
	b.decorate(req)
}

// policy is the header policy of messages sent on leg l (nil: none).
func (b *B2BUA) policy(c *Call, l *Leg) *header.Compiled {
	if l.Side == "lan" {
		return c.cfg.ToLAN
	}
	if c.tc.Headers != nil {
		return c.tc.Headers
	}
	return c.cfg.ToWAN
}

// copyHeaders copies the named headers and the configured extra ones.
func copyHeaders(in, out *sip.Request, cfg *Config, names ...string) {
	if cfg != nil {
		names = append(names, cfg.AllowHeaders...)
	}
	for _, n := range names {
		for _, h := range in.GetHeaders(n) {
			v := h.Value()
			if strings.EqualFold(n, "Supported") || strings.EqualFold(n, "Require") {
				v = dropOptionTags(v)
			}
			if v != "" && validValue(v) {
				out.AppendHeader(sip.NewHeader(h.Name(), v))
			}
		}
	}
}

// dropOptionTags removes the option tags that do not cross legs: 100rel
// (reliability of provisionals is terminated per leg: prack.go) and
// replaces (a LAN dialog cannot be replaced from the WAN).
func dropOptionTags(v string) string {
	var keep []string
	for _, tok := range strings.Split(v, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" || strings.EqualFold(tok, "100rel") || strings.EqualFold(tok, "replaces") {
			continue
		}
		keep = append(keep, tok)
	}
	return strings.Join(keep, ", ")
}

// validValue rejects CR, LF and NUL in a header value esbc writes.
func validValue(v string) bool {
	return !strings.ContainsAny(v, "\r\n\x00")
}

// learnDialog completes leg B's dialog from a response with a To tag.
func (b *B2BUA) learnDialog(l *Leg, res *sip.Response) {
	d := &l.Dialog
	if tag, ok := res.To().Params.Get("tag"); ok {
		d.RemoteTag = tag
	}
	if ct := res.Contact(); ct != nil {
		d.RemoteTarget = *ct.Address.Clone()
	}
	rr := res.GetHeaders("Record-Route")
	if len(rr) > 0 {
		d.RouteSet = d.RouteSet[:0]
		for i := len(rr) - 1; i >= 0; i-- {
			d.RouteSet = append(d.RouteSet, rr[i].Value())
		}
	}
}

// relayProvisional forwards 180/183 (with early-media SDP) to leg A.
func (b *B2BUA) relayProvisional(c *Call, areq *sip.Request, atx sip.ServerTransaction, r *sip.Response) {
	body := r.Body()
	c.mu.Lock()
	if _, ok := r.To().Params.Get("tag"); ok {
		b.learnDialog(c.B, r)
		if c.state < StateEarly {
			c.state = StateEarly
		}
	}
	c.mu.Unlock()
	if c.lateOffer {
		// An offer in a 18x is not relayed: leg B's 2xx carries it to leg
		// A's ACK (an offer in a reliable 18x answered in PRACK is not
		// supported).
		body = nil
	}
	if len(body) > 0 {
		if c.media != nil {
			a, err := c.media.Answer(1, body)
			if err != nil {
				b.log.Info("early media SDP not acceptable, relayed without it", zap.String("call", c.ID), zap.Error(err))
				body = nil
			} else {
				body = a
			}
		}
		c.mu.Lock()
		c.lastAnswerA = body
		c.mu.Unlock()
	}
	res := b.responseToA(c, areq, r.StatusCode, r.Reason, body)
	acked, ok := b.reliableA(c, res, len(body) > 0)
	if !ok {
		return // the set-up ended while the previous reliable 18x waited for its PRACK
	}
	if err := b.send(c.A.side, atx, res); err != nil {
		b.log.Debug("relay provisional failed", zap.String("call", c.ID), zap.Error(err))
	}
	if acked != nil {
		b.retransmitReliableA(c, atx, res, acked)
	}
}

// responseToA builds a response on leg A's dialog.
func (b *B2BUA) responseToA(c *Call, areq *sip.Request, code int, reason string, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(areq, code, reason, nil)
	if to := res.To(); to != nil {
		to.Params.Add("tag", c.A.Dialog.LocalTag)
	}
	if code > 100 && code < 300 {
		res.AppendHeader(&sip.ContactHeader{Address: *c.A.Dialog.Contact.Clone()})
	}
	if len(body) > 0 {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody(body)
	}
	b.decorate(res)
	return res
}

// answerA sends the 2xx to leg A and waits for its ACK (retransmitting the
// 2xx over UDP, RFC 3261 §13.3.1.4). It reports whether the ACK came.
func (b *B2BUA) answerA(c *Call, areq *sip.Request, atx sip.ServerTransaction, bres *sip.Response, body []byte) bool {
	res := b.responseToA(c, areq, bres.StatusCode, bres.Reason, body)
	res.AppendHeader(sip.NewHeader("Allow", allowMethods))
	for _, n := range []string{"Session-Expires", "Require", "Supported"} {
		for _, h := range bres.GetHeaders(n) {
			v := dropOptionTags(h.Value()) // 100rel is per leg; replaces unsupported
			if c.ownTimer && n != "Supported" {
				// Leg B's timer is esbc's: leg A asked for none.
				if n == "Session-Expires" {
					continue
				}
				v = dropTimerTag(v)
			}
			if v != "" && validValue(v) {
				res.AppendHeader(sip.NewHeader(h.Name(), v))
			}
		}
	}
	sessionTimer(areq, bres, res)
	if err := b.send(c.A.side, atx, res); err != nil {
		b.log.Debug("2xx to leg A failed", zap.String("call", c.ID), zap.Error(err))
		return false
	}
	reliable := c.A.Dialog.Transport != "UDP"
	interval := sip.T1
	var retrans <-chan time.Time
	var rt *time.Timer
	if !reliable {
		rt = time.NewTimer(interval)
		defer rt.Stop()
		retrans = rt.C
	}
	deadline := time.NewTimer(64 * sip.T1)
	defer deadline.Stop()
	for {
		select {
		case <-c.ackCh:
			return true
		case <-retrans:
			_ = b.send(c.A.side, atx, res)
			interval = min(2*interval, sip.T2)
			rt.Reset(interval)
		case <-deadline.C:
			return false
		case <-b.done:
			return false
		case <-c.setupCtx.Done():
			// BYE from either side before the ACK: hangup does the rest.
			return true
		}
	}
}

// ackB acknowledges leg B's 2xx once (and again on each retransmission).
// Every caller returns only after the ACK is written (sync.Once), so a
// BYE or any relay that follows an ackB call leaves after the ACK on the
// wire: the set-up goroutine, a hang-up and an in-dialog relay may race
// to it (sipgo runs leg A's ACK and its next request on goroutines of
// their own).
func (b *B2BUA) ackB(c *Call) {
	c.bAckOnce.Do(func() { b.writeAckB(c) })
}

func (b *B2BUA) writeAckB(c *Call) {
	c.mu.Lock()
	ack := c.B.Dialog.newRequest(sip.ACK, c.bInviteSeq)
	tx := c.bTx
	body, ctype := c.ackBody, c.ackCType
	c.mu.Unlock()
	if c.lateOffer && len(body) > 0 {
		if c.media != nil {
			a, err := c.media.Answer(0, body)
			if err != nil {
				b.log.Warn("answer in leg A's ACK not acceptable", zap.String("call", c.ID), zap.Error(err))
				a = nil
			}
			body, ctype = a, "application/sdp"
		}
		if len(body) > 0 {
			if ctype == "" {
				ctype = "application/sdp"
			}
			ack.AppendHeader(sip.NewHeader("Content-Type", ctype))
			ack.SetBody(body)
			c.mu.Lock()
			noteSDP(c, 1, body, ctype) // a session refresh by re-INVITE re-sends it
			c.mu.Unlock()
		}
	}
	b.sendAck(c, c.B, ack, tx, "ACK to leg B failed")
	if tx != nil {
		// RFC 6026 §7.2: leg B's INVITE transaction stays in sipgo's
		// Accepted state for 64*T1 (Timer M), where each retransmitted 2xx
		// is re-ACKed (sendAck); then sipgo forgets it and so does the
		// call: the transaction, its INVITE, the 2xx and the ACK template
		// are ~6 KiB per call that a confirmed call no longer needs
		// (BENCHMARKS.md, memory).
		time.AfterFunc(64*sip.T1, func() {
			c.mu.Lock()
			if c.bTx == tx {
				c.bTx = nil
			}
			c.mu.Unlock()
		})
	}
}

// sendAck sends the ACK of a 2xx to an INVITE of esbc's on leg l, and the
// same ACK again for each retransmission of that 2xx (the peer's answer
// to a lost ACK; RFC 3261 §13.2.2.4). failed is the log message if the
// first one cannot be written.
func (b *B2BUA) sendAck(c *Call, l *Leg, ack *sip.Request, tx sip.ClientTransaction, failed string) {
	cli := l.client()
	tmpl := ack.Clone()
	if tx != nil {
		tx.OnRetransmission(func(r *sip.Response) {
			if r.IsSuccess() {
				_ = cli.WriteRequest(tmpl.Clone(), b.build)
			}
		})
	}
	if err := cli.WriteRequest(ack, b.build); err != nil {
		b.log.Info(failed, zap.String("call", c.ID), zap.Error(err))
	}
}

// failSetup ends a call that was not answered: the final response to leg A
// and the bookkeeping.
func (b *B2BUA) failSetup(c *Call, areq *sip.Request, atx sip.ServerTransaction, err error) {
	code, reason := Status(err)
	var re *responseError
	var hdrs []sip.Header
	if errors.As(err, &re) {
		code, reason = MapResponse(re.res.StatusCode), re.res.Reason
		if code != re.res.StatusCode {
			reason = ""
		}
		for _, n := range []string{"Retry-After", "Warning", "Reason", "Min-SE"} {
			if h := re.res.GetHeader(n); h != nil && validValue(h.Value()) {
				hdrs = append(hdrs, sip.NewHeader(n, h.Value()))
			}
		}
	}
	if reason == "" {
		reason = statusText(code)
	}
	cancelled := errors.Is(err, errCancelled)
	if !cancelled {
		res := b.responseToA(c, areq, code, reason, nil)
		for _, h := range hdrs {
			res.AppendHeader(h)
		}
		if err := b.send(c.A.side, atx, res); err != nil {
			b.log.Debug("final response to leg A failed", zap.String("call", c.ID), zap.Error(err))
		} else {
			defer b.awaitNon2xxAck(atx) // after the bookkeeping: the call is over
		}
	} else {
		code = 487
	}
	c.mu.Lock()
	if c.Code == 0 {
		c.Code = code
	}
	c.Reason = err.Error()
	c.mu.Unlock()
	b.log.Info("call failed", zap.String("call", c.ID), zap.String("direction", c.Direction),
		zap.String("trunk", c.Trunk), zap.String("to", c.To), zap.Int("code", code), zap.Error(err))
	b.finish(c, resultFor(code, cancelled))
}

// awaitNon2xxAck keeps the INVITE handler (and so Close, which waits for
// handlers) until the caller's ACK of a final non-2xx response is absorbed
// by the transaction, its transaction ends, or 4*T1. sipgo v1.7.2 hands
// that ACK to a goroutine of its own; when it runs after
// UserAgent.Close has terminated the transaction and cleared the
// connection pool, sipgo opens a fresh UDP socket toward the caller
// ("Creating server connection" laddr=:0) that nothing closes. Reading
// the ACK here also spares sipgo's "ACK missed" goroutine per refused call.
func (b *B2BUA) awaitNon2xxAck(tx sip.ServerTransaction) {
	t := time.NewTimer(4 * sip.T1)
	defer t.Stop()
	select {
	case <-tx.Acks():
	case <-tx.Done():
	case <-t.C:
	}
}

// hangup ends a call from one leg (nil: esbc itself): BYE on the other
// leg(s), then the bookkeeping. During set-up it only cancels the set-up.
func (b *B2BUA) hangup(c *Call, from *Leg, reason string) {
	c.mu.Lock()
	if c.state == StateEnded {
		c.mu.Unlock()
		return
	}
	if c.state < StateAnswered {
		cause := errShutdown
		switch from {
		case c.B:
			cause = errRemoteBye
		case c.A:
			cause = errCancelled
		}
		c.setupCancel(cause) // under c.mu: see setup
		c.mu.Unlock()
		return
	}
	c.state = StateEnded
	c.Reason = reason
	c.wakeLegs()
	c.mu.Unlock()
	c.setupCancel(errShutdown)
	if from != c.B {
		b.ackB(c)
		b.sendBye(c, c.B)
	}
	if from != c.A {
		// RFC 3261 §15: no BYE on leg A (esbc is its UAS) before its ACK of
		// our 2xx, or until that would have timed out.
		t := time.NewTimer(64 * sip.T1)
		select {
		case <-c.ackCh:
		case <-t.C:
		case <-b.done:
		}
		t.Stop()
		b.sendBye(c, c.A)
	}
	b.log.Info("call ended", zap.String("call", c.ID), zap.String("trunk", c.Trunk), zap.String("reason", reason))
	b.finish(c, "answered")
}

// hangupAsync ends a call from a timer or the media watchdog.
func (b *B2BUA) hangupAsync(c *Call, reason string) {
	if !b.track() {
		return
	}
	go func() {
		defer b.wg.Done()
		b.hangup(c, nil, reason)
	}()
}

// sendBye ends one leg's dialog. A leg whose server is gone is closed locally.
func (b *B2BUA) sendBye(c *Call, l *Leg) {
	c.mu.Lock()
	if l.Dialog.RemoteTag == "" {
		c.mu.Unlock()
		return
	}
	req := l.Dialog.newRequest(sip.BYE, 0)
	c.mu.Unlock()
	b.decorate(req)
	timeout := 32 * sip.T1
	if c.tc.FailoverTimeout > 0 && l.Side == "wan" {
		timeout = 2 * c.tc.FailoverTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := b.doRequest(ctx, c, l, req)
	if err != nil {
		b.log.Info("BYE not answered, leg closed locally", zap.String("call", c.ID), zap.String("side", l.Side), zap.Error(err))
		return
	}
	if res.StatusCode >= 300 {
		b.log.Debug("BYE refused", zap.String("call", c.ID), zap.Int("code", res.StatusCode))
	}
}

// doRequest sends an in-dialog request on leg l and returns its final
// response, answering one digest challenge from a trunk.
func (b *B2BUA) doRequest(ctx context.Context, c *Call, l *Leg, req *sip.Request) (*sip.Response, error) {
	res, _, err := b.doTx(ctx, c, l, req, nil)
	return res, err
}

// doTx is doRequest that also returns the transaction of the final
// response. An INVITE transaction is left to end by itself (Timer M in
// the Accepted state), so that retransmitted 2xx reach OnRetransmission.
// sent, when not nil, is called once the request is first written (or
// failed to be).
func (b *B2BUA) doTx(ctx context.Context, c *Call, l *Leg, req *sip.Request, sent func()) (*sip.Response, sip.ClientTransaction, error) {
	cli := l.client()
	movedOn := false
	for try := 0; ; try++ {
		actx := ctx
		if !movedOn && b.contactDest(c, l) != "" {
			// The dialog's connection may be half closed (writes succeed,
			// nothing comes back): leave half the time for the fallback.
			if dl, ok := ctx.Deadline(); ok {
				var cancel context.CancelFunc
				actx, cancel = context.WithTimeout(ctx, time.Until(dl)/2)
				defer cancel()
			}
		}
		res, tx, err := b.final(actx, cli, req, sent)
		sent = nil
		if err != nil {
			// The connection the dialog came in on (a peer's TLS/TCP client
			// connection) may be gone: try once more at the peer's Contact.
			if alt := b.contactDest(c, l); alt != "" && !movedOn && ctx.Err() == nil {
				movedOn = true
				c.mu.Lock()
				l.Dialog.Destination = alt
				req.RemoveHeader("Via")
				req.PrependHeader(l.Dialog.via())
				c.mu.Unlock()
				req.SetDestination(alt)
				b.log.Info("in-dialog request moved to the peer's Contact", zap.String("call", c.ID),
					zap.String("side", l.Side), zap.String("dest", alt), zap.Error(err))
				continue
			}
			return nil, nil, err
		}
		if (res.StatusCode == 401 || res.StatusCode == 407) && try < 2 && l.Side == "wan" && c.trunk != nil {
			if err := c.trunk.Authorize(req, res); err != nil {
				return res, tx, nil
			}
			c.mu.Lock()
			req.RemoveHeader("Via")
			req.PrependHeader(l.Dialog.via())
			l.Dialog.LocalCSeq++
			req.CSeq().SeqNo = l.Dialog.LocalCSeq
			c.mu.Unlock()
			continue
		}
		return res, tx, nil
	}
}

// final sends req in a client transaction and returns its final response.
func (b *B2BUA) final(ctx context.Context, cli *sipgo.Client, req *sip.Request, sent func()) (*sip.Response, sip.ClientTransaction, error) {
	tx, err := cli.TransactionRequest(ctx, req, b.build)
	if sent != nil {
		sent()
	}
	if err != nil {
		return nil, nil, err
	}
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			if !req.IsInvite() || !res.IsSuccess() {
				tx.Terminate()
			}
			return res, tx, nil
		case <-tx.Done():
			return nil, nil, tx.Err()
		case <-ctx.Done():
			tx.Terminate()
			return nil, nil, ctx.Err()
		}
	}
}

// finish releases what the call holds, once.
func (b *B2BUA) finish(c *Call, result string) {
	c.mu.Lock()
	c.state = StateEnded
	c.wakeLegs()
	if !c.End.IsZero() {
		c.mu.Unlock()
		return
	}
	c.End = time.Now()
	for _, t := range c.timers {
		t.Stop()
	}
	acquired := c.acquired
	c.acquired = false
	ms := c.media
	dur := 0.0
	answered, reason := !c.Answer.IsZero(), c.Reason
	if answered {
		dur = c.End.Sub(c.Answer).Seconds()
	}
	c.mu.Unlock()
	c.setupCancel(errShutdown)
	c.ackOnce.Do(func() { close(c.ackCh) })
	close(c.endCh) // once: finish returns early when End is set
	var stats *mediaStats
	if ms != nil {
		// Figures and addresses first; the session is closed before
		// OnEnd, so the capture ends with nothing more to come.
		stats = &mediaStats{st: ms.Stats(), state: ms.State(), hasState: true}
		_ = ms.Close()
	}
	if acquired {
		c.trunk.Release()
	}
	b.removeCall(c)
	b.m.done(c.Direction, c.Trunk, result, dur)
	if answered {
		b.m.hungUp(reason)
	}
	b.writeCDR(c, result, stats)
}

// startTimers arms the max-duration timer. c.mu is held.
func (b *B2BUA) startTimers(c *Call) {
	maxd := c.cfg.MaxDuration
	if c.tc.MaxDuration > 0 && (maxd == 0 || c.tc.MaxDuration < maxd) {
		maxd = c.tc.MaxDuration
	}
	if maxd > 0 {
		c.timers = append(c.timers, time.AfterFunc(maxd, func() { b.hangupAsync(c, "max duration") }))
	}
	b.armRefresh(c)
}

func randUint16() uint16 {
	v := randHex(2)
	n, _ := strconv.ParseUint(v, 16, 16)
	return uint16(n&0x7fff) + 1
}

// sessionTimer keeps RFC 4028 working when only leg A wants it: a 2xx from
// a peer without session-timer support (no Session-Expires) is relayed to a
// leg that asked for one with "Session-Expires: <its value>;refresher=uac"
// and "Require: timer" (§9: the UAS may pick the UAC as refresher), so the
// PBX keeps refreshing (the refreshes cross esbc like any re-INVITE/UPDATE)
// and does not end the call at the interval.
func sessionTimer(req *sip.Request, peerRes, out *sip.Response) {
	if !peerRes.IsSuccess() || peerRes.GetHeader("Session-Expires") != nil {
		return
	}
	se := req.GetHeader("Session-Expires")
	if se == nil || !supportsTimer(req) {
		return
	}
	delta, _, _ := strings.Cut(se.Value(), ";")
	delta = strings.TrimSpace(delta)
	if _, err := strconv.Atoi(delta); err != nil {
		return
	}
	out.AppendHeader(sip.NewHeader("Session-Expires", delta+";refresher=uac"))
	out.AppendHeader(sip.NewHeader("Require", "timer"))
}

func supportsTimer(req *sip.Request) bool {
	for _, n := range []string{"Supported", "Require"} {
		for _, h := range req.GetHeaders(n) {
			for _, tok := range strings.Split(h.Value(), ",") {
				if strings.EqualFold(strings.TrimSpace(tok), "timer") {
					return true
				}
			}
		}
	}
	return false
}

// contactDest is the "ip:port" of leg l's remote target when it differs
// from where the dialog lives (a UAS leg over TCP/TLS whose peer's client
// connection may close), else "".
func (b *B2BUA) contactDest(c *Call, l *Leg) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := &l.Dialog
	if !l.UAS || d.Transport == "UDP" {
		return ""
	}
	ip, err := netip.ParseAddr(d.RemoteTarget.Host)
	if err != nil {
		return ""
	}
	port := d.RemoteTarget.Port
	if port == 0 {
		port = 5060
		if d.Transport == "TLS" {
			port = 5061
		}
	}
	alt := netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
	if alt == d.Destination {
		return ""
	}
	return alt
}

package b2bua

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/esbc/esbc/acl"
)

// B2BUA relays calls between the LAN (IP-PBX) and the WAN (trunks).
type B2BUA struct {
	log  *zap.Logger
	deps Deps
	cfg  atomic.Pointer[Config]
	m    *metrics

	lan, wan *side // set once by Register

	draining atomic.Bool
	closed   atomic.Bool

	mu      sync.Mutex // guards calls, dialogs, idle
	calls   map[string]*Call
	dialogs map[dialogKey]*Leg
	idle    chan struct{} // closed (and replaced) when calls becomes empty

	wg   sync.WaitGroup // goroutines the B2BUA starts itself and SIP handlers in progress
	done chan struct{}  // closed when Close starts: long waits give up
	// closeMu orders wg.Add against Close: no Add from zero once Close
	// has begun waiting.
	closeMu sync.RWMutex
}

// track counts a goroutine of the B2BUA unless Close has begun.
func (b *B2BUA) track() bool {
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed.Load() {
		return false
	}
	b.wg.Add(1)
	return true
}

// side is one SIP side.
type side struct {
	name string // "lan" | "wan"
	ep   Endpoint
}

// New validates cfg and returns a B2BUA. Handlers are installed by Register.
func New(cfg *Config, deps Deps) (*B2BUA, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.Log == nil {
		deps.Log = zap.NewNop()
	}
	if deps.Trunks == nil {
		return nil, errors.New("b2bua: deps.Trunks is required")
	}
	b := &B2BUA{
		log:     deps.Log,
		deps:    deps,
		calls:   make(map[string]*Call),
		dialogs: make(map[dialogKey]*Leg),
		idle:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	close(b.idle)
	m, err := newMetrics(deps.Reg)
	if err != nil {
		return nil, err
	}
	b.m = m
	cfg.prepare()
	b.cfg.Store(cfg)
	return b, nil
}

func (c *Config) validate() error {
	if c == nil {
		return errors.New("b2bua: nil config")
	}
	if c.Router == nil {
		return errors.New("b2bua: config: router is required")
	}
	if c.LAN.Advertise == "" || c.WAN.Advertise == "" {
		return errors.New("b2bua: config: lan and wan advertise addresses are required")
	}
	if c.PBX != "" {
		var u sip.Uri
		if err := sip.ParseUri(c.PBX, &u); err != nil {
			return fmt.Errorf("b2bua: config: pbx uri %q: %w", c.PBX, err)
		}
	}
	return nil
}

// SetConfig installs a new configuration for new calls; calls in progress
// keep the one they started with.
func (b *B2BUA) SetConfig(cfg *Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg.prepare()
	b.cfg.Store(cfg)
	return nil
}

// Config returns the configuration in force for new calls.
func (b *B2BUA) Config() *Config { return b.cfg.Load() }

// Register installs the SIP request handlers on both sides. It is called
// once, before the sockets are served.
func (b *B2BUA) Register(lan, wan Endpoint) error {
	if lan.Server == nil || lan.Client == nil || wan.Server == nil || wan.Client == nil {
		return errors.New("b2bua: register: both sides need a server and a client")
	}
	if b.lan != nil {
		return errors.New("b2bua: register: already registered")
	}
	b.lan = &side{name: "lan", ep: lan}
	b.wan = &side{name: "wan", ep: wan}
	for _, s := range []*side{b.lan, b.wan} {
		srv := s.ep.Server
		srv.OnInvite(b.guard(s, b.onInvite))
		srv.OnAck(b.guard(s, b.onAck))
		srv.OnBye(b.guard(s, b.onBye))
		srv.OnCancel(b.guard(s, func(s *side, req *sip.Request, tx sip.ServerTransaction) {
			b.respond(s, req, tx, 481, "Call/Transaction Does Not Exist")
		}))
		srv.OnOptions(b.guard(s, b.onOptions))
		for _, m := range []sip.RequestMethod{sip.INFO, sip.UPDATE, sip.REFER, sip.NOTIFY, sip.MESSAGE, sip.PRACK, sip.SUBSCRIBE} {
			srv.OnRequest(m, b.guard(s, b.onInDialog))
		}
		srv.OnNoRoute(b.guard(s, func(s *side, req *sip.Request, tx sip.ServerTransaction) {
			b.respond(s, req, tx, 405, "Method Not Allowed", sip.NewHeader("Allow", allowMethods))
		}))
	}
	return nil
}

const allowMethods = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY"

// guard adapts a handler and keeps a panic in it from ending the process.
func (b *B2BUA) guard(s *side, h func(*side, *sip.Request, sip.ServerTransaction)) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if !b.track() {
			if !req.IsAck() {
				res := sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil)
				_ = tx.Respond(res)
			}
			return
		}
		defer b.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				b.m.panics.Inc()
				b.log.Error("panic in SIP handler", zap.Any("panic", r), zap.String("method", string(req.Method)))
			}
		}()
		cfg := b.cfg.Load()
		methods := cfg.LANMethods
		if s == b.wan {
			methods = cfg.WANMethods
		}
		if len(methods) > 0 && !acl.MethodAllowed(methods, string(req.Method)) {
			if l, cs := b.findLeg(req), req.CSeq(); l != nil && cs != nil && !req.IsAck() {
				l.call.markRelayed(l, cs.SeqNo) // refused: not a gap the next request waits for
			}
			if !req.IsAck() {
				b.respond(s, req, tx, 405, "Method Not Allowed", sip.NewHeader("Allow", strings.Join(methods, ", ")))
			}
			return
		}
		h(s, req, tx)
	}
}

// Drain refuses new calls (503 with Retry-After) and waits until every call
// has ended or ctx is done. In-dialog requests are still served.
func (b *B2BUA) Drain(ctx context.Context) error {
	b.draining.Store(true)
	for {
		b.mu.Lock()
		n := len(b.calls)
		idle := b.idle
		b.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Draining reports whether Drain was called.
func (b *B2BUA) Draining() bool { return b.draining.Load() }

// Close ends every call (BYE on both legs) and waits for the goroutines the
// B2BUA started, or ctx. Idempotent.
func (b *B2BUA) Close(ctx context.Context) error {
	b.closeMu.Lock()
	first := b.closed.CompareAndSwap(false, true)
	b.closeMu.Unlock()
	if !first {
		return nil
	}
	b.draining.Store(true)
	close(b.done)
	b.mu.Lock()
	calls := make([]*Call, 0, len(b.calls))
	for _, c := range b.calls {
		calls = append(calls, c)
	}
	b.mu.Unlock()
	for _, c := range calls {
		b.hangup(c, nil, "shutdown")
	}
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ActiveCalls returns the number of calls in progress.
func (b *B2BUA) ActiveCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.calls)
}

func (b *B2BUA) addCall(c *Call) {
	b.mu.Lock()
	if len(b.calls) == 0 {
		b.idle = make(chan struct{})
	}
	b.calls[c.ID] = c
	b.mu.Unlock()
	b.m.active.Inc()
}

func (b *B2BUA) removeCall(c *Call) {
	b.mu.Lock()
	if _, ok := b.calls[c.ID]; ok {
		delete(b.calls, c.ID)
		b.m.active.Dec()
		if len(b.calls) == 0 {
			close(b.idle)
		}
	}
	for _, l := range []*Leg{c.A, c.B} {
		if l != nil {
			if cur, ok := b.dialogs[l.key()]; ok && cur == l {
				delete(b.dialogs, l.key())
			}
		}
	}
	b.mu.Unlock()
}

func (b *B2BUA) addLeg(l *Leg) {
	b.mu.Lock()
	b.dialogs[l.key()] = l
	b.mu.Unlock()
}

// findLeg finds the leg an in-dialog request belongs to: Call-ID and our
// tag (the request's To tag).
func (b *B2BUA) findLeg(req *sip.Request) *Leg {
	cid := req.CallID()
	to := req.To()
	if cid == nil || to == nil {
		return nil
	}
	tag, _ := to.Params.Get("tag")
	if tag == "" {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dialogs[dialogKey{callID: cid.Value(), localTag: tag}]
}

// respond answers a request through its transaction.
func (b *B2BUA) respond(s *side, req *sip.Request, tx sip.ServerTransaction, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	b.decorate(res)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := b.send(s, tx, res); err != nil {
		b.log.Debug("respond failed", zap.Int("code", code), zap.Error(err))
	}
}

// send writes a response on a server transaction and counts it.
func (b *B2BUA) send(s *side, tx sip.ServerTransaction, res *sip.Response) error {
	if b.deps.CountOut != nil && s != nil {
		if cs := res.CSeq(); cs != nil {
			b.deps.CountOut(s.name, string(cs.MethodName))
		}
	}
	return tx.Respond(res)
}

// build is the sipgo client option of every request esbc sends: sipgo's
// own defaults (missing headers, the client's connection address), and the
// outgoing-message count.
func (b *B2BUA) build(c *sipgo.Client, r *sip.Request) error {
	if b.deps.CountOut != nil {
		side := "wan"
		if b.lan != nil && (c == b.lan.ep.Client || c == b.lan.ep.UDPClient) {
			side = "lan"
		}
		b.deps.CountOut(side, string(r.Method))
	}
	return sipgo.ClientRequestBuild(c, r)
}

func (b *B2BUA) decorate(msg interface{ AppendHeader(sip.Header) }) {
	if sh := b.cfg.Load().ServerHeader; sh != "" {
		if _, ok := msg.(*sip.Request); ok {
			msg.AppendHeader(sip.NewHeader("User-Agent", sh))
		} else {
			msg.AppendHeader(sip.NewHeader("Server", sh))
		}
	}
}

// onOptions answers OPTIONS outside a dialog itself and relays in-dialog ones.
func (b *B2BUA) onOptions(s *side, req *sip.Request, tx sip.ServerTransaction) {
	if b.findLeg(req) != nil {
		b.onInDialog(s, req, tx)
		return
	}
	if b.draining.Load() || !b.addressedToUs(s, req) {
		// esbc is no proxy: an OPTIONS for somebody else is not served.
		b.respond(s, req, tx, 503, "Service Unavailable", b.retryAfter())
		return
	}
	b.respond(s, req, tx, 200, "OK",
		sip.NewHeader("Allow", allowMethods),
		sip.NewHeader("Accept", "application/sdp"),
		sip.NewHeader("Supported", "100rel, timer"))
}

func (b *B2BUA) retryAfter() sip.Header {
	ra := b.cfg.Load().RetryAfter
	if ra <= 0 {
		ra = 30 * time.Second
	}
	return sip.NewHeader("Retry-After", strconv.Itoa(int(ra/time.Second)))
}

// sourceAddr parses a message source "ip:port".
func sourceAddr(src string) netip.Addr {
	ap, err := netip.ParseAddrPort(src)
	if err != nil {
		if i := strings.LastIndexByte(src, ':'); i > 0 {
			a, _ := netip.ParseAddr(strings.Trim(src[:i], "[]"))
			return a.Unmap()
		}
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// addressedToUs: an OPTIONS without a user part is a keepalive for esbc
// itself; one with a user part is for us only if the host is ours.
func (b *B2BUA) addressedToUs(s *side, req *sip.Request) bool {
	if req.Recipient.User == "" {
		return true
	}
	cfg := b.cfg.Load()
	sc := cfg.LAN
	if s == b.wan {
		sc = cfg.WAN
	}
	h := strings.ToLower(strings.Trim(req.Recipient.Host, "[]"))
	if h == "localhost" || h == "127.0.0.1" || h == "::1" || h == strings.ToLower(sc.Advertise) {
		return true
	}
	for _, o := range sc.Hosts {
		if h == strings.ToLower(o) {
			return true
		}
	}
	return false
}

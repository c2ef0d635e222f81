package acl

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Options are the optional dependencies of New.
type Options struct {
	// Logger: nil means zap.NewNop().
	Logger *zap.Logger
	// Registerer receives the esbc_acl_* metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Guard is the edge policy: allow/deny sets, per-source rate limits and
// bans, auth-failure counting, and the per-message checks applied by the
// socket wrappers. All methods are safe for concurrent use; the policy is
// an immutable value swapped atomically (SetConfig, SetTrunkAddrs,
// SetPBXAddrs), the per-source state lives in a fixed-size sharded table
// that survives every swap.
type Guard struct {
	log   *zap.Logger
	now   func() time.Time
	m     *metrics
	tab   *table
	pol   atomic.Pointer[policy]
	trunk atomic.Pointer[addrSet] // set by SetTrunkAddrs
	pbx   atomic.Pointer[addrSet] // set by SetPBXAddrs
	tap   atomic.Pointer[WriteTap]
}

// WriteTap sees every SIP message written through the wrapped sockets
// (responses and requests esbc sends from its listeners), before it is
// sent. It must not block nor keep msg. Keep-alives are not shown; nor is
// anything written on a connection passed through encrypted (below TLS).
type WriteTap func(s Side, from, to net.Addr, msg []byte)

// SetWriteTap installs (or, with nil, removes) the write tap, e.g. the
// diagnostic capture.
func (g *Guard) SetWriteTap(t WriteTap) {
	if t == nil {
		g.tap.Store(nil)
		return
	}
	g.tap.Store(&t)
}

func (g *Guard) writeTap(s Side, from, to net.Addr, msg []byte) {
	if t := g.tap.Load(); t != nil && len(bytes.Trim(msg, "\r\n")) > 0 {
		(*t)(s, from, to, msg)
	}
}

// addrSet is an immutable set of single addresses.
type addrSet map[netip.Addr]struct{}

func newAddrSet(addrs []netip.Addr) *addrSet {
	s := make(addrSet, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			s[a.Unmap().WithZone("")] = struct{}{}
		}
	}
	return &s
}

func (s *addrSet) has(a netip.Addr) bool {
	if s == nil {
		return false
	}
	_, ok := (*s)[a]
	return ok
}

// policy is the compiled, immutable form of a Config.
type policy struct {
	cfg     Config
	side    [2]sidePolicy
	trusted []netip.Prefix
	uaDeny  [][]byte // lower-cased
	rate    float64  // tokens per nanosecond
	burst   float64
	trunks  *addrSet // Config.TrunkAddrs
	static  *addrSet // Config.TrunkAddrs + Config.PBXAddrs (trusted)
}

type sidePolicy struct {
	allow, deny []netip.Prefix
	methods     []string // nil: all
	allowHeader string   // "INVITE, ACK, ..." for 405
}

func compile(c Config) (*policy, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	p := &policy{cfg: c, trusted: normPrefixes(c.Trusted)}
	for i, r := range []Rules{c.LAN, c.WAN} {
		sp := sidePolicy{allow: normPrefixes(r.Allow), deny: normPrefixes(r.Deny)}
		if len(r.Methods) > 0 {
			sp.methods = slices.Clone(r.Methods)
			sp.allowHeader = strings.Join(sp.methods, ", ")
		}
		p.side[i] = sp
	}
	for _, ua := range c.UserAgentDeny {
		p.uaDeny = append(p.uaDeny, []byte(strings.ToLower(strings.TrimSpace(ua))))
	}
	p.trunks = newAddrSet(c.TrunkAddrs)
	p.static = newAddrSet(append(slices.Clone(c.TrunkAddrs), c.PBXAddrs...))
	p.rate = c.RateLimit.PerIP / float64(time.Second)
	p.burst = float64(c.RateLimit.Burst)
	return p, nil
}

// normPrefixes unmaps IPv4-mapped IPv6 prefixes so that one comparison
// form (Addr.Unmap) serves both families.
func normPrefixes(in []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			a = a.Unmap()
			bits = max(bits-96, 0)
		}
		out = append(out, netip.PrefixFrom(a.WithZone(""), bits).Masked())
	}
	return out
}

func containsAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// New builds a Guard from cfg.
func New(cfg Config, o Options) (*Guard, error) {
	p, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	g := &Guard{log: o.Logger, now: o.Now}
	if g.log == nil {
		g.log = zap.NewNop()
	}
	if g.now == nil {
		g.now = time.Now
	}
	g.pol.Store(p)
	g.tab = newTable(p.cfg.TableSize)
	g.m = newMetrics(func() float64 { return float64(g.bannedCount()) })
	if o.Registerer != nil {
		for _, c := range g.m.collectors {
			if err := o.Registerer.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, fmt.Errorf("acl: register metrics: %w", err)
				}
			}
		}
	}
	return g, nil
}

// SetConfig swaps the policy. Bans, strikes and rate buckets are kept;
// TableSize is ignored (restart-only). On error the old policy stays.
func (g *Guard) SetConfig(cfg Config) error {
	p, err := compile(cfg)
	if err != nil {
		return err
	}
	g.pol.Store(p)
	return nil
}

// Config returns the policy in force, defaults applied.
func (g *Guard) Config() Config { return g.pol.Load().cfg }

// SetTrunkAddrs replaces the trunk servers' resolved addresses. On the WAN
// an empty allow list admits only these; they are never rate limited nor
// banned. The DNS/B2BUA side calls it after every resolution.
func (g *Guard) SetTrunkAddrs(addrs []netip.Addr) { g.trunk.Store(newAddrSet(addrs)) }

// SetPBXAddrs replaces the PBX's addresses (trusted: never rate limited
// nor banned).
func (g *Guard) SetPBXAddrs(addrs []netip.Addr) { g.pbx.Store(newAddrSet(addrs)) }

// Trusted reports whether a is exempt from rate limits and bans.
func (g *Guard) Trusted(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	return g.trusted(g.pol.Load(), a)
}

func (g *Guard) trusted(p *policy, a netip.Addr) bool {
	return g.trunk.Load().has(a) || g.pbx.Load().has(a) || p.static.has(a) || containsAny(p.trusted, a)
}

// allowed applies the side's allow/deny lists to a (already unmapped).
func (g *Guard) allowed(p *policy, s Side, a netip.Addr) bool {
	sp := &p.side[s&1]
	if containsAny(sp.deny, a) {
		return false
	}
	if len(sp.allow) == 0 {
		return s == LAN || g.trunk.Load().has(a) || p.trunks.has(a)
	}
	return containsAny(sp.allow, a)
}

// banned reports whether a has an active ban (no rate charge).
func (g *Guard) banned(a netip.Addr) bool {
	now := g.now().UnixNano()
	sh := g.tab.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, _ := sh.get(a, now, false)
	return e != nil && e.bannedUntil > now
}

// Admit decides on one message (or connection) from a on side s:
// allow/deny, ban, rate limit (one token). A refusal is counted under
// esbc_acl_dropped_total{side,reason}; rate-limit excess may ban a.
func (g *Guard) Admit(s Side, a netip.Addr) Reason {
	r := g.admit(g.pol.Load(), s, a.Unmap().WithZone(""), g.now().UnixNano())
	if r != ReasonNone {
		g.m.drop(s, r)
	}
	return r
}

func (g *Guard) admit(p *policy, s Side, a netip.Addr, now int64) Reason {
	if !g.allowed(p, s, a) {
		return ReasonDenied
	}
	if g.trusted(p, a) {
		return ReasonNone
	}
	sh := g.tab.shard(a)
	sh.mu.Lock()
	e, evicted := sh.get(a, now, true)
	if evicted {
		g.m.evictions.Inc()
	}
	r := g.charge(p, e, now)
	sh.mu.Unlock()
	return r
}

// charge applies ban state and the token bucket to e. The caller holds
// the shard lock.
func (g *Guard) charge(p *policy, e *entry, now int64) Reason {
	fresh := e.refill == 0
	e.seen = now
	if e.bannedUntil != 0 {
		if now < e.bannedUntil {
			return ReasonBanned
		}
		e.bannedUntil = 0
	}
	if p.rate <= 0 {
		return ReasonNone
	}
	if fresh {
		e.tokens = p.burst
	} else {
		e.tokens = min(p.burst, e.tokens+float64(now-e.refill)*p.rate)
	}
	e.refill = now
	if e.tokens >= 1 {
		e.tokens--
		return ReasonNone
	}
	if now-e.excessStart > int64(p.cfg.BanWindow) {
		e.excessStart, e.excess = now, 0
	}
	e.excess++
	if int(e.excess) >= p.cfg.BanAfter {
		g.ban(p, e, now, banRate, 0)
	}
	return ReasonRateLimit
}

// openConn counts a new connection from a against MaxConnsPerSource. It
// reports false (and counts the refusal) when the source holds too many.
func (g *Guard) openConn(s Side, a netip.Addr) bool {
	p := g.pol.Load()
	a = a.Unmap().WithZone("")
	if p.cfg.MaxConnsPerSource < 0 || g.trusted(p, a) {
		return true
	}
	now := g.now().UnixNano()
	sh := g.tab.shard(a)
	sh.mu.Lock()
	e, evicted := sh.get(a, now, true)
	ok := int(e.conns) < p.cfg.MaxConnsPerSource
	if ok {
		e.conns++
	}
	sh.mu.Unlock()
	if evicted {
		g.m.evictions.Inc()
	}
	if !ok {
		g.m.drop(s, ReasonConnLimit)
	}
	return ok
}

// closeConn undoes openConn.
func (g *Guard) closeConn(a netip.Addr) {
	a = a.Unmap().WithZone("")
	sh := g.tab.shard(a)
	sh.mu.Lock()
	if e, _ := sh.get(a, 0, false); e != nil && e.conns > 0 {
		e.conns--
	}
	sh.mu.Unlock()
}

// ban bans e for d, or for the escalated duration when d is 0. The caller
// holds the shard lock.
func (g *Guard) ban(p *policy, e *entry, now int64, why banReason, d time.Duration) {
	if d <= 0 {
		d = p.cfg.RateLimit.Ban
		for i := int32(0); i < e.strikes && d < p.cfg.BanMax; i++ {
			d *= 2
		}
		d = min(d, p.cfg.BanMax)
	}
	e.strikes++
	e.bannedUntil = now + int64(d)
	e.bannedAt = now
	e.banReason = why
	e.excess, e.excessStart = 0, 0
	e.authFails, e.authStart = 0, 0
	g.m.bans[why].Inc()
	g.log.Warn("acl: source banned", zap.Stringer("addr", e.addr), zap.String("reason", why.String()),
		zap.Duration("for", d), zap.Int32("strikes", e.strikes))
}

// ReportAuthFailure records a failed authentication from a (wrong digest
// credentials, unknown user). After AuthFailures failures within
// AuthWindow the source is banned. Trusted sources are never banned. It
// reports whether a is now banned.
func (g *Guard) ReportAuthFailure(a netip.Addr) bool {
	p := g.pol.Load()
	a = a.Unmap().WithZone("")
	if !a.IsValid() || p.cfg.AuthFailures < 0 || g.trusted(p, a) {
		return false
	}
	now := g.now().UnixNano()
	sh := g.tab.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, evicted := sh.get(a, now, true)
	if evicted {
		g.m.evictions.Inc()
	}
	if e.bannedUntil > now {
		return true
	}
	if now-e.authStart > int64(p.cfg.AuthWindow) {
		e.authStart, e.authFails = now, 0
	}
	e.authFails++
	if int(e.authFails) >= p.cfg.AuthFailures {
		g.ban(p, e, now, banAuth, 0)
		return true
	}
	return false
}

// Ban bans a for d (the admin's manual ban). Trusted sources cannot be
// banned: it returns false for them.
func (g *Guard) Ban(a netip.Addr, d time.Duration) bool {
	p := g.pol.Load()
	a = a.Unmap().WithZone("")
	if !a.IsValid() || d <= 0 || g.trusted(p, a) {
		return false
	}
	now := g.now().UnixNano()
	sh := g.tab.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, evicted := sh.get(a, now, true)
	if evicted {
		g.m.evictions.Inc()
	}
	g.ban(p, e, now, banManual, d)
	return true
}

// Unban lifts a's ban and forgets its strikes. It reports whether a was banned.
func (g *Guard) Unban(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	now := g.now().UnixNano()
	sh := g.tab.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, _ := sh.get(a, now, false)
	if e == nil {
		return false
	}
	was := e.bannedUntil > now
	e.bannedUntil, e.strikes = 0, 0
	e.excess, e.authFails = 0, 0
	e.refill = 0 // a full bucket again
	if was {
		g.log.Info("acl: ban lifted", zap.Stringer("addr", a))
	}
	return was
}

// BanInfo describes one active ban.
type BanInfo struct {
	Addr    netip.Addr `json:"addr"`
	Reason  string     `json:"reason"` // rate_limit | auth_failure | manual
	Since   time.Time  `json:"since"`
	Until   time.Time  `json:"until"`
	Strikes int        `json:"strikes"` // bans of this source so far, this one included
}

// Bans lists the active bans, oldest first.
func (g *Guard) Bans() []BanInfo {
	now := g.now().UnixNano()
	var out []BanInfo
	for i := range g.tab.shards {
		sh := &g.tab.shards[i]
		sh.mu.Lock()
		for j := 0; j < sh.n; j++ {
			e := &sh.slots[j]
			if e.bannedUntil > now {
				out = append(out, BanInfo{
					Addr: e.addr, Reason: e.banReason.String(), Strikes: int(e.strikes),
					Since: time.Unix(0, e.bannedAt).UTC(), Until: time.Unix(0, e.bannedUntil).UTC(),
				})
			}
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b BanInfo) int { return a.Since.Compare(b.Since) })
	return out
}

func (g *Guard) bannedCount() int {
	now := g.now().UnixNano()
	n := 0
	for i := range g.tab.shards {
		sh := &g.tab.shards[i]
		sh.mu.Lock()
		for j := 0; j < sh.n; j++ {
			if sh.slots[j].bannedUntil > now {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Sources returns how many sources the table holds and its capacity.
func (g *Guard) Sources() (n, capacity int) {
	for i := range g.tab.shards {
		sh := &g.tab.shards[i]
		sh.mu.Lock()
		n += len(sh.idx)
		sh.mu.Unlock()
	}
	return n, g.tab.capacity()
}

// MethodAllowed reports whether requests of method are accepted on side s
// (security.methods). The B2BUA answers 405 with Allow: AllowHeader(s)
// when it is false; the edge does so itself for datagrams and streams.
func (g *Guard) MethodAllowed(s Side, method string) bool {
	return MethodAllowed(g.pol.Load().side[s&1].methods, method)
}

// AllowHeader is the Allow header value for 405 on side s ("" = all).
func (g *Guard) AllowHeader(s Side) string { return g.pol.Load().side[s&1].allowHeader }

// MethodAllowed reports whether method is in allowed (an empty list
// allows every method). ACK and CANCEL follow their INVITE and are always
// accepted when INVITE is.
func MethodAllowed(allowed []string, method string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, m := range allowed {
		if m == method {
			return true
		}
	}
	if method == "ACK" || method == "CANCEL" {
		return slices.Contains(allowed, "INVITE")
	}
	return false
}

// NextMaxForwards is the loop check of a B2BUA relaying a request (RFC
// 3261 §16.3 item 2, §16.6 item 3): given the incoming Max-Forwards (-1 when
// absent) it returns the value for the outgoing leg, or ok=false when the
// request must be answered 483 Too Many Hops (OPTIONS may be answered
// locally instead). Carrying the decremented value across the two legs is
// what stops a call looping through the SBC (PBX → esbc → trunk → esbc).
func NextMaxForwards(in int) (out int, ok bool) {
	if in < 0 {
		return 70, true
	}
	if in == 0 {
		return 0, false
	}
	return in - 1, true
}

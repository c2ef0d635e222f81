package locate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Config is the resolver's DNS configuration (config key dns).
type Config struct {
	// Servers are "ip:port" (or "ip", port 53) DNS servers tried in order;
	// empty means the nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query to one server; 0 means DefaultTimeout.
	Timeout time.Duration
	// Stale is how long past its expiry an answer may still be served when
	// every server fails; 0 means DefaultStale, negative disables.
	Stale time.Duration
}

// Defaults of Config.
const (
	DefaultTimeout = 2 * time.Second
	DefaultStale   = time.Hour
)

const (
	resolvConf         = "/etc/resolv.conf"
	defaultNegativeTTL = 30 * time.Second
	maxNegativeTTL     = 5 * time.Minute
	// staleRetry is how long a stale answer is served before DNS is asked
	// again, so that calls do not each wait for dead servers.
	staleRetry = 5 * time.Second
	// failRetry is how long a failure with nothing stale to serve is
	// remembered, for the same reason.
	failRetry = 2 * time.Second
	// maxNAPTRDepth bounds chains of non-terminal NAPTR records.
	maxNAPTRDepth = 4
)

type runtimeConfig struct {
	servers []string
	timeout time.Duration
	stale   time.Duration
}

type cacheKey struct {
	name  string // canonical FQDN
	qtype uint16
}

type entry struct {
	rrs        []dns.RR // answer records of the queried type; nil = negative
	expires    time.Time
	refreshAt  time.Time
	staleUntil time.Time
	refreshing bool
	err        error     // last failure when nothing could be served
	errUntil   time.Time // err is returned without asking until then
}

type flight struct {
	done chan struct{}
	rrs  []dns.RR
	err  error
}

// Resolver resolves trunk domains into ordered SIP targets. It is safe for
// concurrent use; see the package documentation for the algorithm.
type Resolver struct {
	log  *zap.Logger
	m    *resolverMetrics
	cfg  atomic.Pointer[runtimeConfig]
	good atomic.Uint32 // index of the server that answered last

	now func() time.Time // clock; replaced by tests

	rndMu sync.Mutex
	rnd   *rand.Rand // guarded by rndMu

	bgCtx    context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup // background refreshes

	mu        sync.Mutex
	cache     map[cacheKey]*entry             // guarded by mu
	inflight  map[cacheKey]*flight            // guarded by mu
	closed    bool                            // guarded by mu
	onRefresh func(name string, qtype uint16) // guarded by mu; test hook after a background refresh
}

// NewResolver returns a Resolver using cfg. log nil means no logging; reg nil
// means the metrics are not registered.
func NewResolver(cfg Config, log *zap.Logger, reg prometheus.Registerer) *Resolver {
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Resolver{
		log:      log,
		m:        newResolverMetrics(reg),
		now:      time.Now,
		rnd:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		bgCtx:    ctx,
		bgCancel: cancel,
		cache:    make(map[cacheKey]*entry),
		inflight: make(map[cacheKey]*flight),
	}
	r.SetConfig(cfg)
	return r
}

// SetConfig replaces the DNS configuration; the next query uses it. Cached
// answers are kept.
func (r *Resolver) SetConfig(cfg Config) {
	rc := &runtimeConfig{timeout: cfg.Timeout, stale: cfg.Stale}
	if rc.timeout <= 0 {
		rc.timeout = DefaultTimeout
	}
	if rc.stale == 0 {
		rc.stale = DefaultStale
	} else if rc.stale < 0 {
		rc.stale = 0
	}
	for _, s := range cfg.Servers {
		rc.servers = append(rc.servers, serverAddr(s))
	}
	if len(rc.servers) == 0 {
		if cc, err := dns.ClientConfigFromFile(resolvConf); err == nil {
			for _, s := range cc.Servers {
				rc.servers = append(rc.servers, net.JoinHostPort(s, cc.Port))
			}
		} else {
			r.log.Warn("dns: cannot read resolv.conf, using 127.0.0.1:53", zap.Error(err))
		}
	}
	if len(rc.servers) == 0 {
		rc.servers = []string{"127.0.0.1:53"}
	}
	r.cfg.Store(rc)
	r.good.Store(0)
}

// serverAddr adds port 53 to a server given without one.
func serverAddr(s string) string {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String()
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(a, 53).String()
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(s, "53")
}

// Close stops background refreshes and waits for them. It is idempotent.
// Lookup still works after Close but no longer refreshes ahead of expiry.
func (r *Resolver) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.bgCancel()
	r.wg.Wait()
	return nil
}

func (r *Resolver) intn(n int) int {
	r.rndMu.Lock()
	defer r.rndMu.Unlock()
	return r.rnd.IntN(n)
}

// Lookup returns the RFC 3263 ordered targets for domain and transport
// ("udp", "tcp" or "tls"). A non-empty static list ("host:port", the trunk's
// servers) bypasses NAPTR and SRV. Targets are not filtered by health: pass
// them to Health.Order.
func (r *Resolver) Lookup(ctx context.Context, domain, transport string, static []string) ([]Target, error) {
	tr, err := normTransport(transport)
	if err != nil {
		return nil, fmt.Errorf("locate %s: %w %q", domain, err, transport)
	}
	if len(static) > 0 {
		return r.lookupStatic(ctx, domain, tr, static)
	}
	domain = strings.TrimSuffix(strings.TrimSpace(domain), ".")
	if domain == "" {
		return nil, fmt.Errorf("locate: empty domain: %w", ErrNoTargets)
	}
	if a, err := netip.ParseAddr(strings.Trim(domain, "[]")); err == nil {
		return []Target{{Host: a.String(), Addr: netip.AddrPortFrom(a.Unmap(), defaultPort(tr)), Transport: tr}}, nil
	}

	names, naptrErr := r.naptr(ctx, domain, tr, 0)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("locate %s: %w", domain, ctx.Err())
	}
	if len(names) == 0 {
		names = []string{srvPrefix(tr) + domain}
	}
	var (
		out       []Target
		sawSRV    bool
		srvFailed bool
		lastErr   = naptrErr
	)
	for _, name := range names {
		rrs, err := r.query(ctx, name, dns.TypeSRV)
		if err != nil {
			lastErr = fmt.Errorf("srv %s: %w", name, err)
			srvFailed = true
			continue
		}
		srvs := make([]*dns.SRV, 0, len(rrs))
		for _, rr := range rrs {
			if s, ok := rr.(*dns.SRV); ok {
				srvs = append(srvs, s)
			}
		}
		if len(srvs) > 0 {
			sawSRV = true
		}
		for _, s := range orderSRV(srvs, r.intn) {
			host := strings.TrimSuffix(s.Target, ".")
			if host == "" { // "." = service decidedly not available (RFC 2782)
				continue
			}
			addrs, err := r.resolveHost(ctx, host)
			if err != nil {
				lastErr = fmt.Errorf("host %s: %w", host, err)
				continue
			}
			for _, a := range addrs {
				out = append(out, Target{Host: host, Addr: netip.AddrPortFrom(a, s.Port), Transport: tr, Priority: s.Priority, Weight: s.Weight})
			}
		}
	}
	if !sawSRV && !srvFailed {
		// RFC 3263 §4.2: no SRV records, use the domain's A/AAAA.
		addrs, err := r.resolveHost(ctx, domain)
		if err != nil {
			lastErr = fmt.Errorf("host %s: %w", domain, err)
		}
		for _, a := range addrs {
			out = append(out, Target{Host: domain, Addr: netip.AddrPortFrom(a, defaultPort(tr)), Transport: tr})
		}
	}
	out = dedupe(out)
	if len(out) == 0 {
		if lastErr != nil {
			return nil, fmt.Errorf("locate %s: %w", domain, lastErr)
		}
		return nil, fmt.Errorf("locate %s: %w", domain, ErrNoTargets)
	}
	return out, nil
}

// lookupStatic resolves the trunk's static server list in its order.
func (r *Resolver) lookupStatic(ctx context.Context, domain, tr string, static []string) ([]Target, error) {
	var (
		out     []Target
		lastErr error
	)
	for i, s := range static {
		host, port, err := splitHostPort(s, defaultPort(tr))
		if err != nil {
			lastErr = err
			continue
		}
		addrs, err := r.resolveHost(ctx, host)
		if err != nil {
			lastErr = fmt.Errorf("host %s: %w", host, err)
			continue
		}
		for _, a := range addrs {
			out = append(out, Target{Host: host, Addr: netip.AddrPortFrom(a, port), Transport: tr, Priority: uint16(min(i, 0xffff))})
		}
	}
	out = dedupe(out)
	if len(out) == 0 {
		if lastErr == nil {
			lastErr = ErrNoTargets
		}
		return nil, fmt.Errorf("locate %s: static servers: %w", domain, lastErr)
	}
	return out, nil
}

// splitHostPort parses "host:port", "host", "[v6]:port" or a bare IPv6
// literal; a missing port is def.
func splitHostPort(s string, def uint16) (string, uint16, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.String(), def, nil
	}
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(s, ":") {
			return "", 0, fmt.Errorf("server %q: %w", s, err)
		}
		host, ps = s, ""
	}
	port := def
	if ps != "" {
		p, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || p == 0 {
			return "", 0, fmt.Errorf("server %q: bad port", s)
		}
		port = uint16(p)
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return "", 0, fmt.Errorf("server %q: empty host", s)
	}
	return host, port, nil
}

// dedupe drops repeated (address, transport) pairs, keeping the first.
func dedupe(ts []Target) []Target {
	seen := make(map[netip.AddrPort]bool, len(ts))
	out := ts[:0]
	for _, t := range ts {
		if seen[t.Addr] {
			continue
		}
		seen[t.Addr] = true
		out = append(out, t)
	}
	return out
}

// naptr returns the SRV names the domain's NAPTR records give for the
// transport, in order/preference order; nil when there are none.
func (r *Resolver) naptr(ctx context.Context, domain, tr string, depth int) ([]string, error) {
	rrs, err := r.query(ctx, domain, dns.TypeNAPTR)
	if err != nil {
		return nil, fmt.Errorf("naptr %s: %w", domain, err)
	}
	recs := make([]*dns.NAPTR, 0, len(rrs))
	for _, rr := range rrs {
		if n, ok := rr.(*dns.NAPTR); ok {
			recs = append(recs, n)
		}
	}
	var names []string
	var lastErr error
	for _, n := range orderNAPTR(recs) {
		target, ok := naptrTarget(n, domain)
		if !ok {
			continue
		}
		switch strings.ToLower(n.Flags) {
		case "s":
			if strings.EqualFold(n.Service, naptrService(tr)) {
				names = append(names, target)
			}
		case "":
			// Non-terminal: continue with the replacement's NAPTR.
			if depth+1 >= maxNAPTRDepth {
				continue
			}
			more, err := r.naptr(ctx, target, tr, depth+1)
			if err != nil {
				lastErr = err
			}
			names = append(names, more...)
		}
	}
	return names, lastErr
}

// naptrTarget is the next domain of a NAPTR record: its replacement, or its
// regexp applied to domain when the replacement is ".".
func naptrTarget(n *dns.NAPTR, domain string) (string, bool) {
	if rep := strings.TrimSuffix(n.Replacement, "."); rep != "" {
		return rep, true
	}
	if n.Regexp == "" {
		return "", false
	}
	s, err := parseSubst(unescapeString(n.Regexp))
	if err != nil {
		return "", false
	}
	out, ok := s.apply(domain)
	out = strings.TrimSuffix(out, ".")
	if !ok || out == "" {
		return "", false
	}
	if _, ok := dns.IsDomainName(out); !ok {
		return "", false
	}
	return out, true
}

// unescapeString turns miekg/dns's presentation form of a character-string
// (\DDD and \X escapes) back into the octets that were on the wire.
func unescapeString(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b = append(b, s[i])
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); v <= 255 {
				b = append(b, byte(v))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// orderNAPTR sorts by order, then preference (RFC 3403 §4.1).
func orderNAPTR(recs []*dns.NAPTR) []*dns.NAPTR {
	out := make([]*dns.NAPTR, len(recs))
	copy(out, recs)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && naptrLess(out[j], out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func naptrLess(a, b *dns.NAPTR) bool {
	if a.Order != b.Order {
		return a.Order < b.Order
	}
	return a.Preference < b.Preference
}

// resolveHost returns the IPv4 then the IPv6 addresses of host (an IP literal
// is returned as it is).
func (r *Resolver) resolveHost(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	var (
		addrs []netip.Addr
		errs  []error
	)
	for _, qt := range [...]uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range rrs {
			var ip net.IP
			switch v := rr.(type) {
			case *dns.A:
				ip = v.A
			case *dns.AAAA:
				ip = v.AAAA
			}
			if a, ok := netip.AddrFromSlice(ip); ok {
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	if len(addrs) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return addrs, nil
}

// query answers (name, qtype) from the cache or DNS. A nil slice with a nil
// error is a negative answer.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	key := cacheKey{name: dns.CanonicalName(name), qtype: qtype}
	for {
		now := r.now()
		r.mu.Lock()
		if e := r.cache[key]; e != nil && e.err != nil && now.Before(e.errUntil) {
			err := e.err
			r.mu.Unlock()
			return nil, err
		}
		if e := r.cache[key]; e != nil && now.Before(e.expires) {
			if !e.refreshing && !now.Before(e.refreshAt) && !r.closed {
				e.refreshing = true
				r.wg.Add(1)
				go r.refresh(key)
			}
			rrs := e.rrs
			r.mu.Unlock()
			r.m.hit.Inc()
			return rrs, nil
		}
		if f := r.inflight[key]; f != nil {
			r.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if f.err != nil && isCtxErr(f.err) && ctx.Err() == nil {
				continue // the leader's caller gave up; ask again ourselves
			}
			return f.rrs, f.err
		}
		f := &flight{done: make(chan struct{})}
		r.inflight[key] = f
		r.mu.Unlock()
		r.m.miss.Inc()

		rrs, ttl, err := r.fetch(ctx, key)
		f.rrs, f.err = r.store(key, rrs, ttl, err)
		r.mu.Lock()
		delete(r.inflight, key)
		r.mu.Unlock()
		close(f.done)
		return f.rrs, f.err
	}
}

func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// store caches a fetch result, or on DNS failure falls back to a stale
// answer, and returns what the caller should see.
func (r *Resolver) store(key cacheKey, rrs []dns.RR, ttl time.Duration, err error) ([]dns.RR, error) {
	now := r.now()
	stale := r.cfg.Load().stale
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cache[key]
	if err == nil {
		e := &entry{rrs: rrs, expires: now.Add(ttl), staleUntil: now.Add(ttl + stale)}
		e.refreshAt = e.expires.Add(-max(ttl/5, time.Second))
		if e.refreshAt.Before(now) {
			e.refreshAt = now
		}
		r.cache[key] = e
		return rrs, nil
	}
	if errors.Is(err, ErrDNSUnavailable) && old != nil && now.Before(old.staleUntil) {
		old.expires = now.Add(staleRetry)
		if old.expires.After(old.staleUntil) {
			old.expires = old.staleUntil
		}
		old.refreshAt = old.expires
		old.refreshing = false
		r.m.stale.Inc()
		r.log.Warn("dns: serving stale answer", zap.String("name", key.name),
			zap.String("type", dns.TypeToString[key.qtype]), zap.Time("stale_until", old.staleUntil), zap.Error(err))
		return old.rrs, nil
	}
	if errors.Is(err, ErrDNSUnavailable) {
		if old == nil {
			old = &entry{}
			r.cache[key] = old
		}
		old.err, old.errUntil = err, now.Add(failRetry)
	}
	return nil, err
}

// refresh re-queries a cached answer ahead of its expiry.
func (r *Resolver) refresh(key cacheKey) {
	defer r.wg.Done()
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("dns: refresh panic", zap.Any("panic", p), zap.String("name", key.name))
		}
	}()
	r.m.refresh.Inc()
	rrs, ttl, err := r.fetch(r.bgCtx, key)
	now := r.now()
	stale := r.cfg.Load().stale
	r.mu.Lock()
	if err == nil {
		e := &entry{rrs: rrs, expires: now.Add(ttl), staleUntil: now.Add(ttl + stale)}
		e.refreshAt = e.expires.Add(-max(ttl/5, time.Second))
		if e.refreshAt.Before(now) {
			e.refreshAt = now
		}
		r.cache[key] = e
	} else if e := r.cache[key]; e != nil {
		e.refreshing = false
		e.refreshAt = e.expires // one more try at expiry, then stale rules
		r.log.Debug("dns: refresh failed", zap.String("name", key.name), zap.Error(err))
	}
	hook := r.onRefresh
	r.mu.Unlock()
	if hook != nil {
		hook(key.name, key.qtype)
	}
}

// fetch asks the DNS servers and returns the answer records of the queried
// type with their TTL (for negative answers the SOA negative TTL).
func (r *Resolver) fetch(ctx context.Context, key cacheKey) ([]dns.RR, time.Duration, error) {
	resp, err := r.exchange(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	var (
		rrs    []dns.RR
		minTTL = ^uint32(0)
	)
	for _, rr := range resp.Answer {
		minTTL = min(minTTL, rr.Header().Ttl)
		if rr.Header().Rrtype == key.qtype {
			rrs = append(rrs, rr)
		}
	}
	if len(rrs) == 0 {
		return nil, negativeTTL(resp), nil
	}
	return rrs, time.Duration(minTTL) * time.Second, nil
}

// negativeTTL is the RFC 2308 §5 negative caching time of a response.
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, maxNegativeTTL)
		}
	}
	return defaultNegativeTTL
}

// exchange sends the query to the configured servers in turn, starting with
// the last one that answered, until one gives an authoritative-enough answer
// (NOERROR or NXDOMAIN).
func (r *Resolver) exchange(ctx context.Context, key cacheKey) (*dns.Msg, error) {
	cfg := r.cfg.Load()
	qt := dns.TypeToString[key.qtype]
	n := len(cfg.servers)
	start := int(r.good.Load()) % n
	var errs []error
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		srv := cfg.servers[idx]
		m := new(dns.Msg)
		m.SetQuestion(key.name, key.qtype)
		m.SetEdns0(1232, false)
		resp, err := exchangeOne(ctx, m, srv, cfg.timeout)
		if err != nil {
			r.m.queries.WithLabelValues(qt, errResult(err)).Inc()
			errs = append(errs, fmt.Errorf("%s: %w", srv, err))
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			r.m.queries.WithLabelValues(qt, strings.ToLower(dns.RcodeToString[resp.Rcode])).Inc()
			if idx != start {
				r.log.Info("dns: switched server", zap.String("server", srv), zap.String("name", key.name))
			}
			r.good.Store(uint32(idx))
			return resp, nil
		default:
			r.m.queries.WithLabelValues(qt, strings.ToLower(dns.RcodeToString[resp.Rcode])).Inc()
			errs = append(errs, fmt.Errorf("%s: rcode %s", srv, dns.RcodeToString[resp.Rcode]))
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrDNSUnavailable, errors.Join(errs...))
}

func errResult(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "error"
}

// exchangeOne queries one server over UDP, and over TCP when the UDP answer
// is truncated. miekg/dns only takes the context's deadline, not its
// cancellation, into account once connected: the connection is closed when
// ctx ends so that Close and a caller that gives up are not kept waiting.
func exchangeOne(ctx context.Context, m *dns.Msg, srv string, timeout time.Duration) (*dns.Msg, error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232}
	resp, err := exchangeConn(qctx, c, m, srv)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, err = exchangeConn(qctx, c, m, srv)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if qctx.Err() != nil {
			return nil, fmt.Errorf("no answer within %v: %w", timeout, context.DeadlineExceeded)
		}
		return nil, err
	}
	if resp.Id != m.Id {
		return nil, errors.New("id mismatch")
	}
	return resp, nil
}

func exchangeConn(ctx context.Context, c *dns.Client, m *dns.Msg, srv string) (*dns.Msg, error) {
	co, err := c.DialContext(ctx, srv)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = co.Close() })
	defer func() {
		if stop() {
			_ = co.Close()
		}
	}()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, co)
	return resp, err
}

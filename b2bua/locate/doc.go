// Package locate turns a trunk's domain (or its static server list) into an
// ordered list of SIP targets (RFC 3263, RFC 2782) and keeps the health of
// those targets per trunk, so that calls and registrations go to the best
// server that is known to answer.
//
// # Owns
//
// DNS resolution for SIP (NAPTR, SRV, A, AAAA), the DNS answer cache, and the
// per-trunk target health table with its fail-back hold-down. It is the only
// esbc package that imports github.com/miekg/dns.
//
// # May import
//
// The standard library, github.com/miekg/dns, go.uber.org/zap and
// github.com/prometheus/client_golang. No other esbc package.
//
// # API
//
//	type Target struct {
//		Host      string         // name for TLS SNI and certificate verification
//		Addr      netip.AddrPort // where to connect
//		Transport string         // "udp" | "tcp" | "tls"
//		Priority  uint16         // from SRV (static servers: list index)
//		Weight    uint16         // from SRV (static servers: 0)
//	}
//	func (t Target) String() string // "host/ip:port/transport"; the health key and metric label
//
//	type Config struct {
//		Servers []string      // "ip:port" (or "ip", port 53); empty = /etc/resolv.conf
//		Timeout time.Duration // per query per server; default 2s
//		Stale   time.Duration // how long an expired answer may be served when DNS fails; default 1h
//	}
//	func NewResolver(cfg Config, log *zap.Logger, reg prometheus.Registerer) *Resolver
//	func (r *Resolver) SetConfig(cfg Config)          // hot: next query uses it; the cache is kept
//	func (r *Resolver) Lookup(ctx context.Context, domain, transport string, static []string) ([]Target, error)
//	func (r *Resolver) Close() error                  // idempotent; waits for background refreshes
//
//	var ErrNoTargets      // the name resolves to no usable address (caller: 503 / next trunk)
//	var ErrTransport      // transport is not udp, tcp or tls
//	var ErrDNSUnavailable // every DNS server failed and no stale answer was left
//	const DefaultTimeout = 2 * time.Second; const DefaultStale = time.Hour
//
//	type Health struct{ ... }
//	type TargetState struct {
//		Trunk, Target string // Target = Target.String()
//		Up            bool
//		Preferred     bool   // up and past its hold-down
//		Since         time.Time
//		Reason        string // last reason given to MarkDown ("" when up)
//	}
//	const DefaultHoldDown = 30 * time.Second
//	func NewHealth(log *zap.Logger, reg prometheus.Registerer) *Health // exports esbc_trunk_target_up{trunk,target}
//	func (h *Health) MarkDown(trunk string, t Target, reason string)
//	func (h *Health) MarkUp(trunk string, t Target)
//	func (h *Health) Up(trunk string, t Target) bool        // unknown targets are up
//	func (h *Health) Preferred(trunk string, t Target) bool // up and past its hold-down (fail-back now)
//	func (h *Health) Order(trunk string, ts []Target) []Target
//	func (h *Health) Snapshot() []TargetState               // sorted by trunk, target
//	func (h *Health) SetHoldDown(trunk string, d time.Duration)
//	func (h *Health) Forget(trunk string)                   // trunk removed at reload: drop its state and series
//
// # Lookup (RFC 3263 §4, with the transport fixed by the trunk's config)
//
//   - static non-empty: each "host:port" in list order (Priority = index,
//     Weight = 0); host names resolved by A/AAAA, IP literals used as they are;
//     SRV and NAPTR are not queried. A missing port defaults as below.
//   - domain an IP literal: one target, default port.
//   - NAPTR on domain (RFC 3263 §4.1, RFC 3403): records with flag "S" and the
//     service of the transport (SIPS+D2T, SIP+D2T, SIP+D2U), ordered by order
//     then preference; each replacement (or regexp result) is an SRV name.
//     When no NAPTR matches the transport, the SRV names below are used.
//   - SRV (RFC 3263 §4.2): _sips._tcp.domain for tls, _sip._tcp for tcp,
//     _sip._udp for udp. Records ordered by priority, and within a priority by
//     RFC 2782 weighted random selection (a fresh draw on every Lookup). A
//     single SRV record with target "." means the service is not offered:
//     ErrNoTargets.
//   - no SRV: A/AAAA of domain with the default port (5061 for tls, 5060
//     otherwise).
//   - every SRV target (and host) is expanded to its addresses, IPv4 first,
//     then IPv6, each address one Target that keeps the SRV priority/weight.
//
// # Cache and DNS servers
//
// Every (name, type) answer is cached for its TTL (negative answers for the
// SOA minimum, capped at 5 min, default 30 s). A hit within the last 20 % of
// the TTL (at least the final second) is answered from cache and refreshed in
// the background once (refresh ahead of expiry). When every server fails
// (timeout, network error, SERVFAIL, REFUSED) an expired answer younger than
// Stale past its expiry is served and counted. Servers are tried in order
// with Timeout each, starting from the last one that answered; truncated UDP
// answers are retried over TCP. While DNS is down, a stale answer is served
// for 5 s before DNS is asked again, and a failure with nothing stale is
// remembered for 2 s, so that calls do not each wait for dead servers.
//
// Metrics (when reg != nil): esbc_dns_queries_total{type,result},
// esbc_dns_cache_total{result="hit|miss|refresh|stale"}, esbc_trunk_target_up{trunk,target}.
//
// # Concurrency
//
// Resolver and Health are safe for concurrent use. Lookup may be called from
// any number of goroutines; concurrent misses of the same (name, type) share
// one query. Background refreshes are owned by the Resolver and end at Close.
// Health never blocks on I/O; Order and Up take one mutex briefly.
package locate

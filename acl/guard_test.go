package acl

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a manual clock for ban expiry without sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func newGuard(t *testing.T, cfg Config, c *clock) (*Guard, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o := Options{Registerer: reg}
	if c != nil {
		o.Now = c.now
	}
	g, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	return g, reg
}

func TestAllowDeny(t *testing.T) {
	cfg := Config{
		LAN: Rules{Allow: pfx("10.0.0.0/24", "2001:db8:1::/48"), Deny: pfx("10.0.0.66/32")},
		WAN: Rules{Deny: pfx("198.51.100.0/24")},
	}
	g, _ := newGuard(t, cfg, nil)
	g.SetTrunkAddrs([]netip.Addr{ip("203.0.113.10"), ip("2001:db8:99::1")})
	tests := []struct {
		side Side
		addr string
		want Reason
	}{
		{LAN, "10.0.0.10", ReasonNone},
		{LAN, "::ffff:10.0.0.10", ReasonNone}, // IPv4-mapped
		{LAN, "10.0.0.66", ReasonDenied},
		{LAN, "10.0.1.1", ReasonDenied},
		{LAN, "2001:db8:1::5", ReasonNone},
		{LAN, "2001:db8:2::5", ReasonDenied},
		{WAN, "203.0.113.10", ReasonNone}, // trunk
		{WAN, "2001:db8:99::1", ReasonNone},
		{WAN, "203.0.113.11", ReasonDenied}, // empty WAN allow: trunks only
		{WAN, "10.0.0.10", ReasonDenied},
	}
	for _, tt := range tests {
		if got := g.Admit(tt.side, ip(tt.addr)); got != tt.want {
			t.Errorf("Admit(%v, %s) = %v, want %v", tt.side, tt.addr, got, tt.want)
		}
	}
	// an empty LAN allow list allows all
	if err := g.SetConfig(Config{}); err != nil {
		t.Fatal(err)
	}
	if r := g.Admit(LAN, ip("192.0.2.1")); r != ReasonNone {
		t.Errorf("empty LAN allow: %v", r)
	}
	if r := g.Admit(WAN, ip("192.0.2.1")); r != ReasonDenied {
		t.Errorf("empty WAN allow, not a trunk: %v", r)
	}
	// trunk address set replaced
	g.SetTrunkAddrs([]netip.Addr{ip("192.0.2.1")})
	if r := g.Admit(WAN, ip("192.0.2.1")); r != ReasonNone {
		t.Errorf("new trunk address: %v", r)
	}
	if r := g.Admit(WAN, ip("203.0.113.10")); r != ReasonDenied {
		t.Errorf("old trunk address: %v", r)
	}
}

func TestRateLimitBanEscalationAndReload(t *testing.T) {
	c := newClock()
	cfg := Config{RateLimit: RateLimit{PerIP: 10, Burst: 5, Ban: time.Minute}, BanAfter: 3, BanMax: 3 * time.Minute}
	g, reg := newGuard(t, cfg, c)
	a := ip("192.0.2.7")
	for i := 0; i < 5; i++ {
		if r := g.Admit(LAN, a); r != ReasonNone {
			t.Fatalf("message %d within burst: %v", i, r)
		}
	}
	for i := 0; i < 3; i++ {
		if r := g.Admit(LAN, a); r != ReasonRateLimit {
			t.Fatalf("excess %d: %v", i, r)
		}
	}
	if r := g.Admit(LAN, a); r != ReasonBanned {
		t.Fatalf("after BanAfter excess: %v", r)
	}
	if got := testutil.ToFloat64(g.m.bans[banRate]); got != 1 {
		t.Errorf("bans_total = %v", got)
	}
	bans := g.Bans()
	if len(bans) != 1 || bans[0].Addr != a || bans[0].Reason != "rate_limit" || bans[0].Until.Sub(bans[0].Since) != time.Minute {
		t.Fatalf("Bans() = %+v", bans)
	}
	// another source is unaffected
	if r := g.Admit(LAN, ip("192.0.2.8")); r != ReasonNone {
		t.Errorf("other source: %v", r)
	}
	// a reload keeps the ban
	cfg.UserAgentDeny = []string{"x"}
	if err := g.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if r := g.Admit(LAN, a); r != ReasonBanned {
		t.Fatalf("after reload: %v", r)
	}
	// expiry, then a repeat offence doubles the ban
	c.add(time.Minute + time.Second)
	if r := g.Admit(LAN, a); r != ReasonNone {
		t.Fatalf("after expiry: %v", r)
	}
	for i := 0; i < 20 && g.Admit(LAN, a) != ReasonBanned; i++ {
	}
	bans = g.Bans()
	if len(bans) != 1 || bans[0].Strikes != 2 || bans[0].Until.Sub(bans[0].Since) != 2*time.Minute {
		t.Fatalf("second ban = %+v", bans)
	}
	// third offence: capped at BanMax
	c.add(2*time.Minute + time.Second)
	for i := 0; i < 20 && g.Admit(LAN, a) != ReasonBanned; i++ {
	}
	if bans = g.Bans(); len(bans) != 1 || bans[0].Until.Sub(bans[0].Since) != 3*time.Minute {
		t.Fatalf("third ban = %+v", bans)
	}
	if n, err := testutil.GatherAndCount(reg, "esbc_acl_banned"); err != nil || n != 1 {
		t.Fatalf("esbc_acl_banned: %d %v", n, err)
	}
	if v := testutil.ToFloat64(g.m.dropped[LAN][ReasonRateLimit]); v < 3 {
		t.Errorf("dropped{rate_limit} = %v", v)
	}
	if !g.Unban(a) || g.Unban(a) {
		t.Fatal("Unban")
	}
	if r := g.Admit(LAN, a); r != ReasonNone {
		t.Fatalf("after Unban: %v", r)
	}
}

func TestTrustedNeverBanned(t *testing.T) {
	c := newClock()
	cfg := Config{RateLimit: RateLimit{PerIP: 1, Burst: 1}, Trusted: pfx("192.0.2.0/28")}
	g, _ := newGuard(t, cfg, c)
	g.SetPBXAddrs([]netip.Addr{ip("10.0.0.10")})
	g.SetTrunkAddrs([]netip.Addr{ip("203.0.113.10")})
	for _, s := range []string{"192.0.2.3", "10.0.0.10", "203.0.113.10"} {
		for i := 0; i < 1000; i++ {
			if r := g.Admit(LAN, ip(s)); r != ReasonNone {
				t.Fatalf("trusted %s refused: %v", s, r)
			}
		}
		for i := 0; i < 10; i++ {
			if g.ReportAuthFailure(ip(s)) {
				t.Fatalf("trusted %s banned by auth failures", s)
			}
		}
		if g.Ban(ip(s), time.Hour) {
			t.Fatalf("trusted %s banned manually", s)
		}
	}
	if len(g.Bans()) != 0 {
		t.Fatal(g.Bans())
	}
}

func TestAuthFailures(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, Config{AuthFailures: 3, AuthWindow: time.Minute, RateLimit: RateLimit{Ban: time.Hour}}, c)
	a := ip("2001:db8::66")
	for i := range 2 {
		if g.ReportAuthFailure(a) {
			t.Fatalf("banned too early (failure %d)", i+1)
		}
	}
	c.add(2 * time.Minute) // window passed: count restarts
	for i := range 2 {
		if g.ReportAuthFailure(a) {
			t.Fatalf("window not reset (failure %d)", i+1)
		}
	}
	if !g.ReportAuthFailure(a) {
		t.Fatal("not banned after 3 failures in window")
	}
	if r := g.Admit(LAN, a); r != ReasonBanned {
		t.Fatalf("Admit = %v", r)
	}
	if b := g.Bans(); len(b) != 1 || b[0].Reason != "auth_failure" {
		t.Fatal(b)
	}
}

func TestTableBoundedUnderSpoofedFlood(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, Config{RateLimit: RateLimit{PerIP: 1, Burst: 1}, TableSize: 4096, BanAfter: 1}, c)
	// one real offender, banned first
	bad := ip("198.51.100.1")
	g.Admit(LAN, bad)
	g.Admit(LAN, bad)
	if r := g.Admit(LAN, bad); r != ReasonBanned {
		t.Fatalf("offender: %v", r)
	}
	// 200,000 spoofed sources, one packet each
	var b [4]byte
	for i := 0; i < 200000; i++ {
		b[0], b[1], b[2], b[3] = 100, byte(i>>16), byte(i>>8), byte(i)
		if r := g.Admit(LAN, netip.AddrFrom4(b)); r != ReasonNone {
			t.Fatalf("spoofed source %d: %v", i, r)
		}
		c.add(time.Microsecond)
	}
	n, capacity := g.Sources()
	if n > capacity || capacity > 4096+shardCount*evictSample {
		t.Fatalf("table holds %d of %d", n, capacity)
	}
	if ev := testutil.ToFloat64(g.m.evictions); ev < 190000 {
		t.Errorf("evictions = %v", ev)
	}
	// banned entries are not evicted while unbanned ones exist
	if r := g.Admit(LAN, bad); r != ReasonBanned {
		t.Fatalf("offender after flood: %v", r)
	}
}

func TestMethodAllowedAndMaxForwards(t *testing.T) {
	g, _ := newGuard(t, Config{WAN: Rules{Methods: []string{"INVITE", "BYE", "OPTIONS"}}}, nil)
	for _, tt := range []struct {
		s    Side
		m    string
		want bool
	}{
		{WAN, "INVITE", true}, {WAN, "ACK", true}, {WAN, "CANCEL", true},
		{WAN, "REGISTER", false}, {WAN, "invite", false}, {LAN, "REGISTER", true},
	} {
		if got := g.MethodAllowed(tt.s, tt.m); got != tt.want {
			t.Errorf("MethodAllowed(%v,%s) = %v", tt.s, tt.m, got)
		}
	}
	if g.AllowHeader(WAN) != "INVITE, BYE, OPTIONS" || g.AllowHeader(LAN) != "" {
		t.Error(g.AllowHeader(WAN))
	}
	for _, tt := range []struct {
		in, out int
		ok      bool
	}{{-1, 70, true}, {0, 0, false}, {1, 0, true}, {70, 69, true}} {
		out, ok := NextMaxForwards(tt.in)
		if out != tt.out || ok != tt.ok {
			t.Errorf("NextMaxForwards(%d) = %d %v", tt.in, out, ok)
		}
	}
}

func TestBansHandler(t *testing.T) {
	g, _ := newGuard(t, Config{Trusted: pfx("10.0.0.0/8")}, nil)
	h := g.Handler()
	do := func(method, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
		return w
	}
	if w := do("POST", "/api/v1/bans/192.0.2.9?for=1h"); w.Code != http.StatusNoContent {
		t.Fatal(w.Code, w.Body)
	}
	if w := do("POST", "/api/v1/bans/10.1.1.1"); w.Code != http.StatusConflict {
		t.Fatal("trusted", w.Code)
	}
	w := do("GET", "/api/v1/bans")
	var body struct{ Bans []BanInfo }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Bans) != 1 || body.Bans[0].Addr != ip("192.0.2.9") || body.Bans[0].Reason != "manual" {
		t.Fatalf("GET: %d %s %v", w.Code, w.Body, err)
	}
	if w := do("DELETE", "/api/v1/bans/192.0.2.9"); w.Code != http.StatusNoContent {
		t.Fatal(w.Code)
	}
	if w := do("DELETE", "/api/v1/bans/192.0.2.9"); w.Code != http.StatusNotFound {
		t.Fatal(w.Code)
	}
	if w := do("DELETE", "/api/v1/bans/nope"); w.Code != http.StatusBadRequest {
		t.Fatal(w.Code)
	}
	if w := do("GET", "/api/v1/bans"); w.Body.String() != "{\"bans\":[]}\n" {
		t.Fatal(w.Body)
	}
}

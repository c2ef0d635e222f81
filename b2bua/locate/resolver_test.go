package locate

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTestResolver returns a resolver on the given servers with a fake clock
// and a seeded random source.
func newTestResolver(t *testing.T, servers ...string) (*Resolver, *fakeClock) {
	t.Helper()
	r := NewResolver(Config{Servers: servers, Timeout: 500 * time.Millisecond}, nil, nil)
	clk := newFakeClock()
	r.now = clk.Now
	r.rnd = rand.New(rand.NewPCG(1, 2))
	t.Cleanup(func() { _ = r.Close() })
	return r, clk
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func addrs(ts []Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Addr.String()
	}
	return out
}

func lookup(t *testing.T, r *Resolver, domain, tr string, static []string) []Target {
	t.Helper()
	ts, err := r.Lookup(context.Background(), domain, tr, static)
	if err != nil {
		t.Fatalf("Lookup(%s, %s): %v", domain, tr, err)
	}
	return ts
}

var trunkZone = []string{
	"_sips._tcp.trunk.test. 300 IN SRV 10 50 5061 primary.trunk.test.",
	"_sips._tcp.trunk.test. 300 IN SRV 20 50 5062 secondary.trunk.test.",
	"_sip._tcp.trunk.test. 300 IN SRV 10 0 5070 primary.trunk.test.",
	"_sip._udp.trunk.test. 300 IN SRV 10 0 5080 secondary.trunk.test.",
	"primary.trunk.test. 300 IN A 127.0.0.11",
	"secondary.trunk.test. 300 IN A 127.0.0.12",
	"secondary.trunk.test. 300 IN AAAA ::1",
}

func TestLookupSRVByTransportAndPriority(t *testing.T) {
	s := startDNS(t, "127.0.0.1", trunkZone...)
	r, _ := newTestResolver(t, s.addr)
	tests := []struct {
		transport string
		want      []Target
	}{
		{"tls", []Target{
			{Host: "primary.trunk.test", Addr: netip.MustParseAddrPort("127.0.0.11:5061"), Transport: "tls", Priority: 10, Weight: 50},
			{Host: "secondary.trunk.test", Addr: netip.MustParseAddrPort("127.0.0.12:5062"), Transport: "tls", Priority: 20, Weight: 50},
			{Host: "secondary.trunk.test", Addr: netip.MustParseAddrPort("[::1]:5062"), Transport: "tls", Priority: 20, Weight: 50},
		}},
		{"TCP", []Target{
			{Host: "primary.trunk.test", Addr: netip.MustParseAddrPort("127.0.0.11:5070"), Transport: "tcp", Priority: 10},
		}},
		{"udp", []Target{
			{Host: "secondary.trunk.test", Addr: netip.MustParseAddrPort("127.0.0.12:5080"), Transport: "udp", Priority: 10},
			{Host: "secondary.trunk.test", Addr: netip.MustParseAddrPort("[::1]:5080"), Transport: "udp", Priority: 10},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.transport, func(t *testing.T) {
			// Priority order must hold on every draw, not just once.
			for range 20 {
				got := lookup(t, r, "trunk.test.", tc.transport, nil)
				if len(got) != len(tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
				for i := range got {
					if got[i] != tc.want[i] {
						t.Fatalf("target %d = %+v, want %+v", i, got[i], tc.want[i])
					}
				}
			}
		})
	}
	if n := s.count("_sips._tcp.trunk.test.", dns.TypeSRV); n != 1 {
		t.Errorf("SRV queried %d times, want 1 (cached)", n)
	}
}

// TestWeightedOrderStatistics checks the RFC 2782 weighted selection: the
// share of lookups in which each record comes first must follow its weight.
// With zero-weight records first and a draw in [0, sum], record i comes first
// with probability (w_i + [i is first in the list]) / (sum + 1).
func TestWeightedOrderStatistics(t *testing.T) {
	s := startDNS(t, "127.0.0.1",
		"_sips._tcp.w.test. 300 IN SRV 10 60 5061 a.w.test.",
		"_sips._tcp.w.test. 300 IN SRV 10 30 5061 b.w.test.",
		"_sips._tcp.w.test. 300 IN SRV 10 10 5061 c.w.test.",
		"_sips._tcp.w.test. 300 IN SRV 10 0 5061 z.w.test.",
		"_sips._tcp.w.test. 300 IN SRV 20 100 5061 backup.w.test.",
		"a.w.test. 300 IN A 127.0.0.21",
		"b.w.test. 300 IN A 127.0.0.22",
		"c.w.test. 300 IN A 127.0.0.23",
		"z.w.test. 300 IN A 127.0.0.24",
		"backup.w.test. 300 IN A 127.0.0.25",
	)
	r, _ := newTestResolver(t, s.addr)
	const n = 3000
	first := map[string]int{}
	second := map[string]int{}
	for range n {
		ts := lookup(t, r, "w.test", "tls", nil)
		if len(ts) != 5 {
			t.Fatalf("got %d targets, want 5", len(ts))
		}
		if ts[4].Host != "backup.w.test" {
			t.Fatalf("priority 20 target not last: %v", addrs(ts))
		}
		first[ts[0].Host]++
		second[ts[1].Host]++
	}
	// Expected P(first): z (weight 0, placed first) 1/101, others w/101.
	want := map[string]float64{"z.w.test": 1, "a.w.test": 60, "b.w.test": 30, "c.w.test": 10}
	chi := 0.0
	for host, w := range want {
		exp := float64(n) * w / 101
		d := float64(first[host]) - exp
		chi += d * d / exp
	}
	// 3 degrees of freedom: P(chi2 > 16.27) = 0.001.
	if chi > 16.27 {
		t.Errorf("first-position counts %v: chi-square %.2f > 16.27", first, chi)
	}
	// The heaviest record must lead most often, and every record must
	// sometimes come second (it is a permutation, not a pick).
	if first["a.w.test"] <= first["b.w.test"] || first["b.w.test"] <= first["c.w.test"] {
		t.Errorf("first-position counts not ordered by weight: %v", first)
	}
	for host := range want {
		if second[host] == 0 {
			t.Errorf("%s never second: %v", host, second)
		}
	}
	t.Logf("n=%d first=%v chi2=%.2f second=%v", n, first, chi, second)
}

// TestOrderSRVUnit checks the permutation itself with a scripted draw.
func TestOrderSRVUnit(t *testing.T) {
	mk := func(p, w uint16, target string) *dns.SRV {
		return &dns.SRV{Priority: p, Weight: w, Target: target}
	}
	in := []*dns.SRV{mk(20, 5, "d."), mk(10, 10, "a."), mk(10, 0, "z."), mk(10, 20, "b.")}
	// Draws: first 15 of [0,30] -> z(0) a(10) b(30): b; then 5 of [0,10]: z(0) a(10): a; last is z.
	draws := []int{15, 5}
	intn := func(n int) int { v := draws[0]; draws = draws[1:]; return v }
	got := orderSRV(in, intn)
	var names []string
	for _, rr := range got {
		names = append(names, rr.Target)
	}
	if strings.Join(names, " ") != "b. a. z. d." {
		t.Fatalf("order = %v, want b. a. z. d.", names)
	}
	if in[0].Target != "d." {
		t.Fatal("input modified")
	}
}

func TestNAPTRPreference(t *testing.T) {
	s := startDNS(t, "127.0.0.1",
		// order 5 beats order 10; within order 10 preference 10 beats 20.
		`n.test. 300 IN NAPTR 10 20 "S" "SIPS+D2T" "" _sips._tcp.late.n.test.`,
		`n.test. 300 IN NAPTR 10 10 "s" "sips+d2t" "" _sips._tcp.mid.n.test.`,
		`n.test. 300 IN NAPTR 5 50 "S" "SIPS+D2T" "" _sips._tcp.early.n.test.`,
		`n.test. 300 IN NAPTR 1 1 "S" "SIP+D2T" "" _sip._tcp.tcp.n.test.`,
		`n.test. 300 IN NAPTR 1 1 "S" "SIP+D2U" "!^(.*)$!_sip._udp.rx.\\1!" .`,
		"_sips._tcp.early.n.test. 300 IN SRV 0 0 5061 early.n.test.",
		"_sips._tcp.mid.n.test. 300 IN SRV 0 0 5062 mid.n.test.",
		"_sips._tcp.late.n.test. 300 IN SRV 0 0 5063 late.n.test.",
		"_sip._tcp.tcp.n.test. 300 IN SRV 0 0 5064 mid.n.test.",
		"_sip._udp.rx.n.test. 300 IN SRV 0 0 5065 late.n.test.",
		"_sips._tcp.n.test. 300 IN SRV 0 0 5099 wrong.n.test.",
		"early.n.test. 300 IN A 127.0.0.31",
		"mid.n.test. 300 IN A 127.0.0.32",
		"late.n.test. 300 IN A 127.0.0.33",
		"wrong.n.test. 300 IN A 127.0.0.39",
		// A domain whose NAPTR offers only UDP: TLS falls back to SRV.
		`u.test. 300 IN NAPTR 1 1 "S" "SIP+D2U" "" _sip._udp.u.test.`,
		"_sips._tcp.u.test. 300 IN SRV 0 0 5061 early.n.test.",
	)
	r, _ := newTestResolver(t, s.addr)
	tests := []struct {
		domain, transport string
		want              []string
	}{
		{"n.test", "tls", []string{"127.0.0.31:5061", "127.0.0.32:5062", "127.0.0.33:5063"}},
		{"n.test", "tcp", []string{"127.0.0.32:5064"}},
		{"n.test", "udp", []string{"127.0.0.33:5065"}},
		{"u.test", "tls", []string{"127.0.0.31:5061"}},
	}
	for _, tc := range tests {
		got := addrs(lookup(t, r, tc.domain, tc.transport, nil))
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s %s: got %v, want %v", tc.domain, tc.transport, got, tc.want)
		}
	}
	if n := s.count("_sips._tcp.n.test.", dns.TypeSRV); n != 0 {
		t.Errorf("plain SRV name queried %d times though NAPTR matched", n)
	}
}

func TestStaticServersBypassSRV(t *testing.T) {
	s := startDNS(t, "127.0.0.1", append(trunkZone,
		"sbc1.static.test. 300 IN A 127.0.0.41",
		"sbc1.static.test. 300 IN AAAA ::1",
	)...)
	r, _ := newTestResolver(t, s.addr)
	got := lookup(t, r, "trunk.test", "tls", []string{"sbc1.static.test:5071", "127.0.0.42:5072", "[::1]:5073", "127.0.0.43", "sbc1.static.test:5071"})
	want := []Target{
		{Host: "sbc1.static.test", Addr: netip.MustParseAddrPort("127.0.0.41:5071"), Transport: "tls", Priority: 0},
		{Host: "sbc1.static.test", Addr: netip.MustParseAddrPort("[::1]:5071"), Transport: "tls", Priority: 0},
		{Host: "127.0.0.42", Addr: netip.MustParseAddrPort("127.0.0.42:5072"), Transport: "tls", Priority: 1},
		{Host: "::1", Addr: netip.MustParseAddrPort("[::1]:5073"), Transport: "tls", Priority: 2},
		{Host: "127.0.0.43", Addr: netip.MustParseAddrPort("127.0.0.43:5061"), Transport: "tls", Priority: 3},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("target %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, k := range []struct {
		name  string
		qtype uint16
	}{{"trunk.test", dns.TypeNAPTR}, {"_sips._tcp.trunk.test", dns.TypeSRV}} {
		if n := s.count(k.name, k.qtype); n != 0 {
			t.Errorf("%s %s queried %d times with static servers", k.name, dns.TypeToString[k.qtype], n)
		}
	}
	if _, err := r.Lookup(context.Background(), "trunk.test", "tls", []string{"bad:port:x"}); err == nil {
		t.Error("bad static server: no error")
	}
}

func TestAddressFallbackAndLiterals(t *testing.T) {
	s := startDNS(t, "127.0.0.1",
		"plain.test. 300 IN A 127.0.0.51",
		"plain.test. 300 IN AAAA ::1",
		"_sips._tcp.off.test. 300 IN SRV 0 0 0 .",
	)
	r, _ := newTestResolver(t, s.addr)
	tests := []struct {
		domain, transport string
		want              []string
	}{
		{"plain.test", "tls", []string{"127.0.0.51:5061", "[::1]:5061"}},
		{"plain.test", "udp", []string{"127.0.0.51:5060", "[::1]:5060"}},
		{"127.0.0.52", "tcp", []string{"127.0.0.52:5060"}},
		{"[::1]", "tls", []string{"[::1]:5061"}},
	}
	for _, tc := range tests {
		got := addrs(lookup(t, r, tc.domain, tc.transport, nil))
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s %s: got %v, want %v", tc.domain, tc.transport, got, tc.want)
		}
	}
	for _, domain := range []string{"off.test", "missing.test"} {
		if _, err := r.Lookup(context.Background(), domain, "tls", nil); !errors.Is(err, ErrNoTargets) {
			t.Errorf("%s: err = %v, want ErrNoTargets", domain, err)
		}
	}
	if _, err := r.Lookup(context.Background(), "plain.test", "sctp", nil); !errors.Is(err, ErrTransport) {
		t.Errorf("sctp: err = %v, want ErrTransport", err)
	}
}

// TestIPv6Server resolves through a DNS server listening on ::1.
func TestIPv6Server(t *testing.T) {
	if ln, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	s := startDNS(t, "::1",
		"_sips._tcp.v6.test. 300 IN SRV 0 0 5061 host.v6.test.",
		"host.v6.test. 300 IN AAAA ::1",
	)
	r, _ := newTestResolver(t, s.addr)
	got := lookup(t, r, "v6.test", "tls", nil)
	if len(got) != 1 || got[0].Addr != netip.MustParseAddrPort("[::1]:5061") || got[0].Host != "host.v6.test" {
		t.Fatalf("got %+v", got)
	}
}

func TestTTLExpiryAndRefreshAhead(t *testing.T) {
	s := startDNS(t, "127.0.0.1",
		"_sips._tcp.ttl.test. 10 IN SRV 0 0 5061 host.ttl.test.",
		"host.ttl.test. 3600 IN A 127.0.0.61",
	)
	r, clk := newTestResolver(t, s.addr)
	refreshed := make(chan string, 16)
	r.mu.Lock()
	r.onRefresh = func(name string, qtype uint16) { refreshed <- name + " " + dns.TypeToString[qtype] }
	r.mu.Unlock()
	const srvName = "_sips._tcp.ttl.test."
	port := func() uint16 { return lookup(t, r, "ttl.test", "tls", nil)[0].Addr.Port() }

	if p := port(); p != 5061 {
		t.Fatalf("port %d", p)
	}
	// Inside the TTL, outside the refresh window: served from cache.
	clk.Advance(5 * time.Second)
	s.set(t, "_sips._tcp.ttl.test. 10 IN SRV 0 0 5062 host.ttl.test.")
	if p := port(); p != 5061 || s.count(srvName, dns.TypeSRV) != 1 {
		t.Fatalf("port %d after 5s, %d SRV queries; want cached 5061, 1", p, s.count(srvName, dns.TypeSRV))
	}
	// In the last 20 % of the TTL: the cached answer is returned at once and
	// a background refresh fetches the new one.
	clk.Advance(3500 * time.Millisecond)
	if p := port(); p != 5061 {
		t.Fatalf("refresh-ahead lookup returned %d, want the cached 5061", p)
	}
	if got := <-refreshed; got != srvName+" SRV" {
		t.Fatalf("refreshed %q", got)
	}
	if n := s.count(srvName, dns.TypeSRV); n != 2 {
		t.Fatalf("%d SRV queries after refresh, want 2", n)
	}
	// Past the old expiry the refreshed answer is there without a query.
	clk.Advance(2 * time.Second)
	if p := port(); p != 5062 || s.count(srvName, dns.TypeSRV) != 2 {
		t.Fatalf("port %d, %d queries; want refreshed 5062 from cache, 2", p, s.count(srvName, dns.TypeSRV))
	}
	// Past the refreshed answer's expiry with nothing in between: a plain
	// miss queries again.
	s.set(t, "_sips._tcp.ttl.test. 10 IN SRV 0 0 5063 host.ttl.test.")
	clk.Advance(20 * time.Second)
	if p := port(); p != 5063 || s.count(srvName, dns.TypeSRV) != 3 {
		t.Fatalf("after expiry: port %d, %d queries; want 5063, 3", p, s.count(srvName, dns.TypeSRV))
	}
	if n := s.count("host.ttl.test", dns.TypeA); n != 1 {
		t.Errorf("A (TTL 1h) queried %d times, want 1", n)
	}
}

func TestNegativeAnswerCached(t *testing.T) {
	s := startDNS(t, "127.0.0.1", "plain.neg.test. 300 IN A 127.0.0.71")
	r, clk := newTestResolver(t, s.addr)
	for range 3 {
		lookup(t, r, "plain.neg.test", "udp", nil)
	}
	if n := s.count("_sip._udp.plain.neg.test", dns.TypeSRV); n != 1 {
		t.Fatalf("NXDOMAIN SRV queried %d times, want 1", n)
	}
	clk.Advance(61 * time.Second) // SOA minimum 60 s
	lookup(t, r, "plain.neg.test", "udp", nil)
	if n := s.count("_sip._udp.plain.neg.test", dns.TypeSRV); n != 2 {
		t.Fatalf("after negative TTL: %d queries, want 2", n)
	}
}

func TestServerFallback(t *testing.T) {
	zone := []string{"_sip._udp.fb.test. 300 IN SRV 0 0 5060 h.fb.test.", "h.fb.test. 300 IN A 127.0.0.81"}

	// A socket that never answers: queries to it time out.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A server that has been shut down: its port refuses.
	dead := startDNS(t, "127.0.0.1")
	dead.stop()
	// A server that answers SERVFAIL.
	broken := startDNS(t, "127.0.0.1")
	broken.setRcode(dns.RcodeServerFailure)

	for _, tc := range []struct {
		name, bad, result string
	}{
		{"timeout", silent.LocalAddr().String(), "timeout"},
		{"refused", dead.addr, "error"},
		{"servfail", broken.addr, "servfail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := startDNS(t, "127.0.0.1", zone...)
			r, _ := newTestResolver(t, tc.bad, good.addr)
			got := addrs(lookup(t, r, "fb.test", "udp", nil))
			if len(got) != 1 || got[0] != "127.0.0.81:5060" {
				t.Fatalf("got %v", got)
			}
			bad := counterValue(t, r.m.queries.WithLabelValues("NAPTR", tc.result))
			if bad != 1 {
				t.Errorf("NAPTR %s = %v, want 1 (first query only)", tc.result, bad)
			}
			// Later queries start at the server that answered.
			for _, qt := range []string{"SRV", "A", "AAAA"} {
				if v := counterValue(t, r.m.queries.WithLabelValues(qt, tc.result)); v != 0 {
					t.Errorf("%s went to the bad server %v times", qt, v)
				}
			}
		})
	}
}

func TestStaleAnswerWhenDNSDown(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(*testDNS)
	}{
		{"servfail", func(s *testDNS) { s.setRcode(dns.RcodeServerFailure) }},
		{"refused", func(s *testDNS) { s.stop() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startDNS(t, "127.0.0.1",
				"_sips._tcp.st.test. 30 IN SRV 0 0 5061 h.st.test.",
				"h.st.test. 30 IN A 127.0.0.91",
			)
			r, clk := newTestResolver(t, s.addr)
			r.SetConfig(Config{Servers: []string{s.addr}, Timeout: 500 * time.Millisecond, Stale: 10 * time.Minute})
			want := addrs(lookup(t, r, "st.test", "tls", nil))
			tc.down(s)
			clk.Advance(time.Minute)
			got, err := r.Lookup(context.Background(), "st.test", "tls", nil)
			if err != nil || strings.Join(addrs(got), " ") != strings.Join(want, " ") {
				t.Fatalf("with DNS down: %v, %v; want stale %v", addrs(got), err, want)
			}
			if v := counterValue(t, r.m.cache.WithLabelValues("stale")); v == 0 {
				t.Error("stale answers not counted")
			}
			// Within staleRetry the stale answer is served without asking.
			before := s.total()
			lookup(t, r, "st.test", "tls", nil)
			if s.total() != before {
				t.Errorf("asked DNS again within staleRetry")
			}
			// Beyond the stale window: an error naming DNS.
			clk.Advance(15 * time.Minute)
			if _, err := r.Lookup(context.Background(), "st.test", "tls", nil); !errors.Is(err, ErrDNSUnavailable) {
				t.Fatalf("past stale window: err = %v, want ErrDNSUnavailable", err)
			}
		})
	}
}

// TestNAPTRFailureDoesNotBlockSRV: a server that fails NAPTR queries (some
// middleboxes do) must not stop SRV or A resolution.
func TestNAPTRFailureDoesNotBlockSRV(t *testing.T) {
	s := startDNS(t, "127.0.0.1",
		"_sips._tcp.nf.test. 300 IN SRV 0 0 5061 h.nf.test.",
		"h.nf.test. 300 IN A 127.0.0.97",
		"plain.nf.test. 300 IN A 127.0.0.98",
	)
	s.mu.Lock()
	s.failType = map[uint16]bool{dns.TypeNAPTR: true}
	s.mu.Unlock()
	r, _ := newTestResolver(t, s.addr)
	for domain, want := range map[string]string{"nf.test": "127.0.0.97:5061", "plain.nf.test": "127.0.0.98:5061"} {
		got := addrs(lookup(t, r, domain, "tls", nil))
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s: got %v, want %s", domain, got, want)
		}
	}
}

// TestFailureRemembered: with DNS down and nothing stale, a failure is
// remembered for failRetry so that calls do not each wait for dead servers.
func TestFailureRemembered(t *testing.T) {
	s := startDNS(t, "127.0.0.1", "_sips._tcp.fr.test. 30 IN SRV 0 0 5061 h.fr.test.", "h.fr.test. 30 IN A 127.0.0.99")
	s.setRcode(dns.RcodeServerFailure)
	r, clk := newTestResolver(t, s.addr)
	if _, err := r.Lookup(context.Background(), "fr.test", "tls", nil); !errors.Is(err, ErrDNSUnavailable) {
		t.Fatalf("err = %v, want ErrDNSUnavailable", err)
	}
	asked := s.total()
	if _, err := r.Lookup(context.Background(), "fr.test", "tls", nil); !errors.Is(err, ErrDNSUnavailable) || s.total() != asked {
		t.Fatalf("second lookup: err %v, %d new queries; want the remembered failure, 0", err, s.total()-asked)
	}
	s.setRcode(0)
	clk.Advance(failRetry)
	if got := addrs(lookup(t, r, "fr.test", "tls", nil)); len(got) != 1 || got[0] != "127.0.0.99:5061" {
		t.Fatalf("after failRetry: %v", got)
	}
}

func TestTruncatedAnswerRetriedOverTCP(t *testing.T) {
	s := startDNS(t, "127.0.0.1", "_sip._tcp.tc.test. 300 IN SRV 0 0 5060 h.tc.test.", "h.tc.test. 300 IN A 127.0.0.95")
	s.mu.Lock()
	s.truncUDP = true
	s.mu.Unlock()
	r, _ := newTestResolver(t, s.addr)
	got := addrs(lookup(t, r, "tc.test", "tcp", nil))
	if len(got) != 1 || got[0] != "127.0.0.95:5060" {
		t.Fatalf("got %v", got)
	}
	// Each record type was asked twice: UDP (truncated) then TCP.
	if n := s.count("_sip._tcp.tc.test", dns.TypeSRV); n != 2 {
		t.Errorf("SRV asked %d times, want 2", n)
	}
}

func TestConcurrentLookupsShareOneQuery(t *testing.T) {
	s := startDNS(t, "127.0.0.1", trunkZone...)
	r, _ := newTestResolver(t, s.addr)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts, err := r.Lookup(context.Background(), "trunk.test", "tls", nil)
			if err == nil && len(ts) != 3 {
				err = errors.New("wrong target count")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := s.count("_sips._tcp.trunk.test", dns.TypeSRV); n != 1 {
		t.Errorf("SRV asked %d times by 32 concurrent lookups, want 1", n)
	}
}

func TestLookupCanceled(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	r, _ := newTestResolver(t, silent.LocalAddr().String())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Lookup(ctx, "x.test", "tls", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestSetConfigAndCloseIdempotent(t *testing.T) {
	r := NewResolver(Config{Servers: []string{"127.0.0.1", "::1", "[::1]:5353", "ns.test"}}, nil, prometheus.NewRegistry())
	cfg := r.cfg.Load()
	want := []string{"127.0.0.1:53", "[::1]:53", "[::1]:5353", "ns.test:53"}
	if strings.Join(cfg.servers, " ") != strings.Join(want, " ") || cfg.timeout != DefaultTimeout || cfg.stale != DefaultStale {
		t.Errorf("config = %+v", cfg)
	}
	r.SetConfig(Config{})
	if len(r.cfg.Load().servers) == 0 {
		t.Error("no servers from resolv.conf fallback")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// FuzzSplitHostPort: a static server entry either parses into a non-empty
// host and a non-zero port or is rejected; it never panics.
func FuzzSplitHostPort(f *testing.F) {
	for _, s := range []string{"sip.example.com:5061", "sip.example.com", "[::1]:5061", "::1", "127.0.0.1:0", "host:99999", ":5060", "a:b:c", " sbc.test. "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := splitHostPort(s, 5061)
		if err == nil && (host == "" || port == 0) {
			t.Fatalf("%q: host %q port %d without error", s, host, port)
		}
		_ = serverAddr(s)
	})
}

// TestCloseStopsRefresh: a background refresh stuck on a silent server ends
// with Close (goleak in TestMain checks that nothing is left).
func TestCloseStopsRefresh(t *testing.T) {
	s := startDNS(t, "127.0.0.1", "_sips._tcp.cl.test. 10 IN SRV 0 0 5061 h.cl.test.", "h.cl.test. 10 IN A 127.0.0.100")
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	r, clk := newTestResolver(t, s.addr)
	lookup(t, r, "cl.test", "tls", nil)
	r.SetConfig(Config{Servers: []string{silent.LocalAddr().String()}, Timeout: time.Hour})
	clk.Advance(9 * time.Second)        // refresh window
	lookup(t, r, "cl.test", "tls", nil) // cached answer; refreshes start and hang
	// Readiness: a refresh query reached the silent server.
	buf := make([]byte, 512)
	if _, _, err := silent.ReadFrom(buf); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close, lookups still answer from cache and start no refresh.
	n := counterValue(t, r.m.refresh)
	lookup(t, r, "cl.test", "tls", nil)
	if counterValue(t, r.m.refresh) != n {
		t.Error("refresh started after Close")
	}
}

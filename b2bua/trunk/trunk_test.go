package trunk

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/esbc/esbc/b2bua/locate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Rarely (1 run in ~6 under -race) a test peer's sipgo server cannot
		// find the socket a request came in on and answers from a fresh UDP
		// socket ("Creating server connection" in sipgo's transport layer)
		// whose reader outlives UA.Close. It belongs to sipgo and to the peer
		// UA, never to a Trunk, which owns no socket: the Trunk's own loops
		// are still checked.
		goleak.IgnoreAnyFunction("github.com/emiago/sipgo/sip.(*TransportUDP).readUDPConnection"),
	)
}

// env is one trunk wired to a client UA, a resolver and a health table.
type env struct {
	c      *client
	res    *locate.Resolver
	health *locate.Health
	reg    *prometheus.Registry
}

func newEnv(t *testing.T, network string) *env {
	t.Helper()
	e := &env{
		c:      newClient(t, network),
		res:    locate.NewResolver(locate.Config{}, nil, nil),
		health: locate.NewHealth(nil, nil),
		reg:    prometheus.NewRegistry(),
	}
	t.Cleanup(func() { _ = e.res.Close() })
	return e
}

func (e *env) deps(t *testing.T) Deps {
	return Deps{Client: e.c.client, UA: e.c.ua, Resolver: e.res, Health: e.health, Log: zaptest.NewLogger(t), Reg: e.reg}
}

func (e *env) config(network string, servers ...string) Config {
	return Config{
		Name: "skype", Domain: "sip.example.test", Transport: network, Servers: servers,
		AuthMethod: AuthDigest, Username: "990500000231", Password: "s3cr3t", Register: true,
		RegisterExpires: 60 * time.Second, OptionsInterval: -1, KeepaliveInterval: -1,
		FailoverTimeout: 300 * time.Millisecond, FailbackHoldDown: 300 * time.Millisecond,
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		ContactHost: e.c.host, ContactPort: e.c.port, UserAgent: "esbc-test",
	}
}

func (e *env) start(t *testing.T, cfg Config) *Trunk {
	t.Helper()
	tr, err := New(cfg, e.deps(t))
	if err != nil {
		t.Fatal(err)
	}
	tr.Start(context.Background())
	t.Cleanup(func() { _ = closeTrunk(t, tr) })
	return tr
}

func registered(tr *Trunk) func() bool {
	return func() bool { return tr.Registration().State == StateRegistered }
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// Registration answers 401 and 407 challenges, MD5 and SHA-256, with
// credentials the registrar verifies on its own; refreshes reuse the nonce
// with a higher nonce count; Close removes the binding.
func TestRegisterChallengeRefreshUnregister(t *testing.T) {
	for _, tc := range []struct{ network, mode, alg string }{
		{"udp", "auth401", "MD5"},
		{"udp", "auth407", "SHA-256"},
		{"tcp", "auth401", "SHA-256"},
		{"tcp", "auth407", "MD5"},
	} {
		t.Run(tc.network+"/"+tc.mode+"/"+tc.alg, func(t *testing.T) {
			r := newRegistrar(t, tc.network, "127.0.0.1")
			r.mode.Store(tc.mode)
			r.algorithm.Store(tc.alg)
			r.grant.Store(2) // refresh after 1 s
			e := newEnv(t, tc.network)
			tr := e.start(t, e.config(tc.network, r.addr))

			waitFor(t, "registered", registered(tr))
			st := tr.Registration()
			if st.Expires != 2*time.Second || st.NAT || !strings.Contains(st.Target, r.addr) {
				t.Fatalf("state after register: %+v", st)
			}
			if v, _ := gauge(t, e.reg, "esbc_trunk_registrations", map[string]string{"trunk": "skype", "state": StateRegistered}); v != 1 {
				t.Fatalf("esbc_trunk_registrations{state=registered} = %v", v)
			}
			// The refresh is authorized pre-emptively with nc=2 on the same nonce.
			waitFor(t, "refresh", func() bool { return len(r.goodRegisters()) >= 2 })
			if bad := r.badCreds(); len(bad) > 0 {
				t.Fatalf("registrar rejected credentials: %v", bad)
			}
			good := r.goodRegisters()
			hdr := "Authorization"
			if tc.mode == "auth407" {
				hdr = "Proxy-Authorization"
			}
			if v := good[1].GetHeader(hdr).Value(); !strings.Contains(v, "nc=00000002") {
				t.Fatalf("refresh credentials %q: want nc=00000002", v)
			}
			first := good[0]
			if got := first.Contact().Address; got.Host != "127.0.0.1" || got.Port != e.c.port || got.User != "990500000231" {
				t.Fatalf("Contact %s: want the advertised address", got.String())
			}
			if tc.network == "tcp" {
				if v, _ := first.Contact().Address.UriParams.Get("transport"); v != "tcp" {
					t.Fatalf("Contact %s: want transport=tcp", first.Contact().Address.String())
				}
			}
			if first.From().Address.User != "990500000231" || first.To().Address.Host != "sip.example.test" {
				t.Fatalf("From/To %s / %s", first.From().Value(), first.To().Value())
			}
			if ua := first.GetHeader("User-Agent"); ua == nil || ua.Value() != "esbc-test" {
				t.Fatalf("User-Agent %v", ua)
			}
			if first.CallID().Value() != good[1].CallID().Value() || good[1].CSeq().SeqNo <= first.CSeq().SeqNo {
				t.Fatal("refresh must keep the Call-ID and increase the CSeq (RFC 3261 §10.2)")
			}

			if err := closeTrunk(t, tr); err != nil {
				t.Fatalf("close: %v", err)
			}
			good = r.goodRegisters()
			last := good[len(good)-1]
			if last.GetHeader("Expires").Value() != "0" {
				t.Fatalf("last REGISTER has Expires %s: want 0 on Close", last.GetHeader("Expires").Value())
			}
			if st := tr.Registration(); st.State != StateUnregistered {
				t.Fatalf("state after Close: %s", st.State)
			}
			if _, ok := gauge(t, e.reg, "esbc_trunk_registrations", map[string]string{"trunk": "skype"}); ok {
				t.Fatal("registration series left after Close")
			}
		})
	}
}

// Wrong credentials: the second challenge ends the attempt (no loop), the
// state is failed with ErrAuth, retries back off exponentially to RetryMax.
func TestRegisterBackoff(t *testing.T) {
	r := newRegistrar(t, "udp", "127.0.0.1")
	e := newEnv(t, "udp")
	cfg := e.config("udp", r.addr)
	cfg.Password = "wrong"
	tr := e.start(t, cfg)

	// Failures n → RetryIn as observed; polling may miss some n under load.
	seen := map[int]time.Duration{}
	waitFor(t, "four failed attempts", func() bool {
		st := tr.Registration()
		if st.State == StateFailed {
			seen[st.Failures] = st.RetryIn
		}
		return st.Failures >= 4
	})
	st := tr.Registration()
	if !strings.Contains(st.LastError, ErrAuth.Error()) {
		t.Fatalf("last error %q: want %q", st.LastError, ErrAuth)
	}
	// Attempts are 2 REGISTERs each (challenge, then rejected answer).
	if n, f := r.registerCount(), st.Failures; n > 2*f+2 {
		t.Fatalf("%d REGISTERs for %d failed attempts: the client loops on challenges", n, f)
	}
	if len(r.badCreds()) == 0 {
		t.Fatal("registrar never saw credentials")
	}
	if len(seen) == 0 {
		t.Fatal("never saw the failed state")
	}
	for n, d := range seen {
		if want := min(50*time.Millisecond<<(n-1), 200*time.Millisecond); d != want {
			t.Fatalf("retry delay after failure %d = %s, want %s (50ms doubling up to 200ms); all: %v", n, d, want, seen)
		}
	}
	if v, _ := gauge(t, e.reg, "esbc_trunk_registrations", map[string]string{"trunk": "skype", "state": StateFailed}); v != 1 {
		t.Fatalf("esbc_trunk_registrations{state=failed} = %v", v)
	}
}

// 423 Interval Too Brief: the client asks again with Min-Expires.
func TestRegisterIntervalTooBrief(t *testing.T) {
	r := newRegistrar(t, "udp", "127.0.0.1")
	r.mode.Store("open")
	r.minExp.Store(3600)
	e := newEnv(t, "udp")
	tr := e.start(t, e.config("udp", r.addr))
	waitFor(t, "registered", registered(tr))
	if st := tr.Registration(); st.Expires != time.Hour {
		t.Fatalf("expires %s: want 1h from Min-Expires", st.Expires)
	}
}

// received/rport in the 200 differing from the advertised Contact means NAT:
// the refresh comes after NATRefresh instead of near expiry.
func TestRegisterNAT(t *testing.T) {
	r := newRegistrar(t, "udp", "127.0.0.1")
	r.mode.Store("open")
	r.received.Store("198.51.100.7")
	e := newEnv(t, "udp")
	cfg := e.config("udp", r.addr)
	cfg.RegisterExpires = time.Hour
	cfg.NATRefresh = time.Second
	tr := e.start(t, cfg)
	waitFor(t, "registered", registered(tr))
	st := tr.Registration()
	if !st.NAT || !strings.HasPrefix(st.PublicAddr, "198.51.100.7:") {
		t.Fatalf("state %+v: want NAT with public address 198.51.100.7", st)
	}
	// With a 1 h expiry only the NAT refresh can bring a second REGISTER.
	waitFor(t, "NAT refresh", func() bool { return r.registerCount() >= 2 })
}

// Registration fails over when the primary does not answer, comes back to
// the primary once it answers OPTIONS again and its hold-down has passed,
// and then removes the binding at the secondary.
func TestRegisterFailoverFailback(t *testing.T) {
	primary := newRegistrar(t, "udp", "127.0.0.1")
	secondary := newRegistrar(t, "udp", "127.0.0.2")
	primary.mode.Store("drop")
	secondary.mode.Store("open")
	e := newEnv(t, "udp")
	cfg := e.config("udp", primary.addr, secondary.addr)
	cfg.OptionsInterval = 100 * time.Millisecond
	tr := e.start(t, cfg)

	waitFor(t, "registered at the secondary", func() bool {
		st := tr.Registration()
		return st.State == StateRegistered && strings.Contains(st.Target, secondary.addr)
	})
	if primary.registerCount() == 0 {
		t.Fatal("the primary was never tried")
	}
	if s, _ := tr.Serving(); !strings.Contains(s.String(), secondary.addr) {
		t.Fatalf("serving %s", s)
	}

	primary.mode.Store("open")
	waitFor(t, "fail-back to the primary", func() bool {
		st := tr.Registration()
		return st.State == StateRegistered && strings.Contains(st.Target, primary.addr)
	})
	// The move waited for the hold-down after the primary came back.
	for _, s := range e.health.Snapshot() {
		if strings.Contains(s.Target, primary.addr) && !s.Preferred {
			t.Fatalf("fail-back before the hold-down ended: %+v", s)
		}
	}
	waitFor(t, "binding removed at the secondary", func() bool {
		secondary.mu.Lock()
		defer secondary.mu.Unlock()
		last := secondary.registers[len(secondary.registers)-1]
		return last.GetHeader("Expires").Value() == "0"
	})
	if primary.optionsCount() == 0 {
		t.Fatal("the primary came back without an OPTIONS probe")
	}
}

// 503 from the registrar is a target failure too.
func TestRegisterFailover503(t *testing.T) {
	primary := newRegistrar(t, "udp", "127.0.0.1")
	secondary := newRegistrar(t, "udp", "127.0.0.2")
	primary.mode.Store("503")
	secondary.mode.Store("open")
	e := newEnv(t, "udp")
	tr := e.start(t, e.config("udp", primary.addr, secondary.addr))
	waitFor(t, "registered at the secondary", func() bool {
		st := tr.Registration()
		return st.State == StateRegistered && strings.Contains(st.Target, secondary.addr)
	})
	ts, err := tr.Targets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ts[0].String(), secondary.addr) {
		t.Fatalf("targets %v: the primary that answered 503 must be last", ts)
	}
}

// OPTIONS: the serving target gets keepalives; a down target that answers a
// probe is up again; a target that stops answering goes down. IP-auth trunks
// never REGISTER.
func TestOptionsKeepaliveAndProbe(t *testing.T) {
	a := newRegistrar(t, "udp", "127.0.0.1")
	b := newRegistrar(t, "udp", "127.0.0.2")
	e := newEnv(t, "udp")
	cfg := e.config("udp", a.addr, b.addr)
	cfg.AuthMethod, cfg.Register, cfg.Username, cfg.Password = AuthIP, false, "", ""
	cfg.OptionsInterval = 50 * time.Millisecond
	tb := locate.Target{Host: "127.0.0.2", Addr: netip.MustParseAddrPort(b.addr), Transport: "udp", Priority: 1}
	e.health.MarkDown("skype", tb, "test: start down")
	tr := e.start(t, cfg)

	waitFor(t, "probe brings b up", func() bool { return e.health.Up("skype", tb) })
	waitFor(t, "keepalive to a", func() bool { return a.optionsCount() >= 2 })
	if s, ok := tr.Serving(); !ok || !strings.Contains(s.String(), a.addr) {
		t.Fatalf("serving %v %v: want a", s, ok)
	}
	if st := tr.Registration(); st.State != StateDisabled {
		t.Fatalf("ip-auth trunk state %s", st.State)
	}
	if a.registerCount()+b.registerCount() != 0 {
		t.Fatal("ip-auth trunk sent REGISTER")
	}

	a.mode.Store("drop")
	ta := locate.Target{Host: "127.0.0.1", Addr: netip.MustParseAddrPort(a.addr), Transport: "udp"}
	waitFor(t, "a goes down", func() bool { return !e.health.Up("skype", ta) })
	waitFor(t, "keepalive moves to b", func() bool {
		s, _ := tr.Serving()
		return strings.Contains(s.String(), b.addr)
	})
}

// RFC 5626 CRLF keepalive on the registration's TCP connection.
func TestCRLFKeepaliveTCP(t *testing.T) {
	r := newRegistrar(t, "tcp", "127.0.0.1")
	r.mode.Store("open")
	e := newEnv(t, "tcp")
	cfg := e.config("tcp", r.addr)
	cfg.KeepaliveInterval = 50 * time.Millisecond
	tr := e.start(t, cfg)
	waitFor(t, "registered", registered(tr))
	waitFor(t, "two CRLF pings at the server", func() bool { return r.crlf.Load() >= 2 })
	if st := tr.Registration(); st.State != StateRegistered {
		t.Fatalf("pings disturbed the registration: %+v", st)
	}
}

// A registering trunk whose connection to the registrar is lost registers
// again at once, over a new connection (the registrar's binding must name
// the connection it can reach esbc over), and not before: while the
// connection lives, CRLF pings cause no REGISTER. The refresh (30 s here)
// cannot be what sends the second REGISTER within waitFor's patience.
func TestReRegisterWhenConnectionLost(t *testing.T) {
	r := newRegistrar(t, "tcp", "127.0.0.1")
	r.mode.Store("open")
	e := newEnv(t, "tcp")
	cfg := e.config("tcp", r.addr)
	cfg.KeepaliveInterval = 20 * time.Millisecond
	tr := e.start(t, cfg)
	waitFor(t, "registered", registered(tr))
	waitFor(t, "three CRLF pings at the server", func() bool { return r.crlf.Load() >= 3 })
	if n := r.registerCount(); n != 1 {
		t.Fatalf("%d REGISTERs over a connection that stayed up, want 1", n)
	}

	r.dropConnections()
	waitFor(t, "a REGISTER over a new connection", func() bool { return r.registerCount() >= 2 })
	src := r.registerSources()
	if src[1] == src[0] {
		t.Errorf("second REGISTER came over the lost connection (%s)", src[0])
	}
	if n := r.accepted(); n != 2 {
		t.Errorf("registrar accepted %d connections, want 2", n)
	}
	if st := tr.Registration(); st.State != StateRegistered || st.Failures != 0 {
		t.Errorf("registration after the new connection: %+v", st)
	}
}

func TestChannels(t *testing.T) {
	e := newEnv(t, "udp")
	cfg := e.config("udp", "127.0.0.1:9")
	cfg.Register = false
	cfg.Channels = 3
	tr, err := New(cfg, e.deps(t))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tr.Acquire() {
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if got != 3 || tr.Active() != 3 {
		t.Fatalf("acquired %d (active %d) of 20 with channels 3", got, tr.Active())
	}
	tr.Release()
	if !tr.Acquire() || tr.Acquire() {
		t.Fatal("after one Release exactly one Acquire must succeed")
	}
	if v, _ := gauge(t, e.reg, "esbc_trunk_channels_rejected_total", map[string]string{"trunk": "skype"}); v != 18 {
		t.Fatalf("rejected = %v, want 18", v)
	}
	for range 3 {
		tr.Release()
	}
	tr.Release() // one too many: logged, not negative
	if tr.Active() != 0 {
		t.Fatalf("active %d after releasing all", tr.Active())
	}

	cfg.Channels = 0
	unlimited, err := New(cfg, e.deps(t))
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if !unlimited.Acquire() {
			t.Fatal("channels 0 must be unlimited")
		}
	}
}

func TestOwnsAddrs(t *testing.T) {
	e := newEnv(t, "udp")
	cfg := e.config("udp", "127.0.0.2:5999", "127.0.0.1:6001")
	cfg.Register = false
	tr, err := New(cfg, e.deps(t))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Owns(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("owns an address before resolving")
	}
	if _, err := tr.Targets(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.2", true},
		{"::ffff:127.0.0.1", true},
		{"127.0.0.3", false},
		{"10.0.0.10", false},
		{"::1", false},
	} {
		if got := tr.Owns(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Owns(%s) = %v", tc.addr, got)
		}
	}
	want := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	if got := tr.Addrs(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Addrs() = %v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{Name: "t", Domain: "d", Transport: "tls", AuthMethod: AuthDigest, Username: "u",
		Register: true, ContactHost: "203.0.113.5", ContactPort: 5061}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no name", func(c *Config) { c.Name = "" }, "name is empty"},
		{"transport", func(c *Config) { c.Transport = "sctp" }, "transport"},
		{"no domain", func(c *Config) { c.Domain = "" }, "neither domain nor servers"},
		{"auth", func(c *Config) { c.AuthMethod = "basic" }, "auth method"},
		{"no user", func(c *Config) { c.Username = "" }, "username"},
		{"no contact", func(c *Config) { c.ContactPort = 0 }, "contact"},
		{"channels", func(c *Config) { c.Channels = -1 }, "channels"},
		{"ip auth needs no user", func(c *Config) { c.AuthMethod, c.Username = AuthIP, "" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			c.setDefaults()
			err := c.validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// Set.Apply: unchanged trunks keep running, Channels changes apply in place,
// other changes replace the trunk (old binding removed, channel count kept),
// removed trunks are closed; an invalid config changes nothing.
func TestSetApply(t *testing.T) {
	r := newRegistrar(t, "udp", "127.0.0.1")
	r.mode.Store("open")
	e := newEnv(t, "udp")
	s := NewSet(e.deps(t))
	ctx := context.Background()
	t.Cleanup(func() { _ = s.Close(ctx) })

	a := e.config("udp", r.addr)
	b := e.config("udp", "127.0.0.2:5999")
	b.Name, b.AuthMethod, b.Register = "other", AuthIP, false
	if err := s.Apply(ctx, []Config{a, b}); err != nil {
		t.Fatal(err)
	}
	ta, _ := s.Get("skype")
	waitFor(t, "registered", registered(ta))
	if !ta.Acquire() {
		t.Fatal("acquire")
	}

	// Same configs: same objects.
	if err := s.Apply(ctx, []Config{a, b}); err != nil {
		t.Fatal(err)
	}
	if x, _ := s.Get("skype"); x != ta {
		t.Fatal("unchanged trunk was replaced")
	}
	// Channels only: in place.
	a.Channels = 1
	if err := s.Apply(ctx, []Config{a, b}); err != nil {
		t.Fatal(err)
	}
	if x, _ := s.Get("skype"); x != ta || x.Config().Channels != 1 || x.Acquire() {
		t.Fatal("channels change must apply in place, with the call up counted")
	}
	// Invalid: nothing changes.
	bad := a
	bad.Transport = "sctp"
	if err := s.Apply(ctx, []Config{bad, b}); err == nil {
		t.Fatal("invalid config accepted")
	}
	if x, _ := s.Get("skype"); x != ta {
		t.Fatal("failed Apply changed the set")
	}
	// Expires changed: replaced; the old binding is removed, the new one made.
	a.RegisterExpires = 120 * time.Second
	before := r.registerCount()
	if err := s.Apply(ctx, []Config{a, b}); err != nil {
		t.Fatal(err)
	}
	tn, _ := s.Get("skype")
	if tn == ta {
		t.Fatal("changed trunk was not replaced")
	}
	waitFor(t, "new trunk registered", registered(tn))
	r.mu.Lock()
	sawUnregister := false
	for _, req := range r.registers[before:] {
		if req.GetHeader("Expires").Value() == "0" {
			sawUnregister = true
		}
	}
	r.mu.Unlock()
	if !sawUnregister {
		t.Fatal("replaced trunk did not unregister")
	}
	if tn.Active() != 1 || tn.Acquire() {
		t.Fatal("the call up on the old trunk must count against the new one's limit")
	}
	ta.Release() // the old call ends: frees the shared channel
	if !tn.Acquire() {
		t.Fatal("channel not freed by the old trunk's Release")
	}
	if got := s.Addrs(); len(got) != 2 {
		t.Fatalf("Addrs %v", got)
	}
	if x, ok := s.ByAddr(netip.MustParseAddr("127.0.0.2")); !ok || x.Name() != "other" {
		t.Fatal("ByAddr(127.0.0.2) must be the other trunk")
	}
	if regs := s.Registrations(); len(regs) != 2 || regs[0].State != StateDisabled || regs[1].State != StateRegistered {
		t.Fatalf("registrations %+v", regs)
	}
	// Removed.
	if err := s.Apply(ctx, []Config{a}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("other"); ok || len(s.All()) != 1 {
		t.Fatal("removed trunk still in the set")
	}
	// Duplicate names are refused.
	if err := s.Apply(ctx, []Config{a, a}); err == nil {
		t.Fatal("duplicate names accepted")
	}
}

func TestNewErrors(t *testing.T) {
	_, err := New(Config{Name: "x", Domain: "d", Transport: "udp", AuthMethod: AuthIP}, Deps{})
	if err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("New without deps: %v", err)
	}
}

func TestRegStateJSON(t *testing.T) {
	b, err := RegState{Trunk: "skype", State: StateRegistered, Expires: 600 * time.Second}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"trunk":"skype"`, `"state":"registered"`, `"expires_seconds":600`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("%s: missing %s", b, want)
		}
	}
}

// A registrar that dies while serving: the OPTIONS keepalive takes it down
// and the registration moves to the next target before its refresh is due.
func TestRegisterMovesWhenServingDies(t *testing.T) {
	primary := newRegistrar(t, "udp", "127.0.0.1")
	secondary := newRegistrar(t, "udp", "127.0.0.2")
	primary.mode.Store("open")
	secondary.mode.Store("open")
	e := newEnv(t, "udp")
	cfg := e.config("udp", primary.addr, secondary.addr)
	cfg.RegisterExpires = time.Hour // no refresh during the test
	cfg.OptionsInterval = 100 * time.Millisecond
	cfg.FailbackHoldDown = time.Hour // and no fail-back
	tr := e.start(t, cfg)
	waitFor(t, "registered at the primary", func() bool {
		st := tr.Registration()
		return st.State == StateRegistered && strings.Contains(st.Target, primary.addr)
	})
	primary.mode.Store("drop")
	waitFor(t, "registered at the secondary", func() bool {
		st := tr.Registration()
		return st.State == StateRegistered && strings.Contains(st.Target, secondary.addr)
	})
	if n := secondary.registerCount(); n != 1 {
		t.Fatalf("secondary saw %d REGISTERs, want 1", n)
	}
}

// Deps.UDPClient: a udp trunk sends from the listening socket, so the
// registrar's rport matches the Contact; with only a plain client sipgo
// sends each request from a fresh ephemeral socket, which reads as NAT.
func TestUDPClient(t *testing.T) {
	for _, bound := range []bool{true, false} {
		t.Run(fmt.Sprintf("bound=%v", bound), func(t *testing.T) {
			r := newRegistrar(t, "udp", "127.0.0.1")
			r.mode.Store("open")
			e := newEnv(t, "udp")
			plain, err := sipgo.NewClient(e.c.ua, sipgo.WithClientHostname("127.0.0.1"))
			if err != nil {
				t.Fatal(err)
			}
			deps := e.deps(t)
			deps.Client, deps.UDPClient = plain, nil
			if bound {
				deps.UDPClient = e.c.client
			}
			tr, err := New(e.config("udp", r.addr), deps)
			if err != nil {
				t.Fatal(err)
			}
			tr.Start(context.Background())
			t.Cleanup(func() { _ = closeTrunk(t, tr) })
			waitFor(t, "registered", registered(tr))
			if st := tr.Registration(); st.NAT == bound {
				t.Fatalf("bound=%v: NAT=%v (public %s, contact port %d)", bound, st.NAT, st.PublicAddr, e.c.port)
			}
		})
	}
}

// options_interval: 0 means no OPTIONS (config.example.yaml: "0 = off"):
// New keeps 0, and the trunk still resolves its servers for Owns.
func TestOptionsOff(t *testing.T) {
	r := newRegistrar(t, "udp", "127.0.0.1")
	e := newEnv(t, "udp")
	cfg := e.config("udp", r.addr)
	cfg.AuthMethod, cfg.Register, cfg.OptionsInterval = AuthIP, false, 0
	tr := e.start(t, cfg)
	if got := tr.Config().OptionsInterval; got != 0 {
		t.Fatalf("OptionsInterval %s after New, want 0 (off)", got)
	}
	waitFor(t, "servers resolved", func() bool { return tr.Owns(netip.MustParseAddr("127.0.0.1")) })
	if err := closeTrunk(t, tr); err != nil {
		t.Fatal(err)
	}
	if n := r.optionsCount(); n != 0 {
		t.Fatalf("%d OPTIONS with options_interval 0", n)
	}
}

// Deps.AddrsChanged tells the app when Set.Addrs() changes: the first
// resolution of each trunk, and a trunk removed at reload.
func TestAddrsChanged(t *testing.T) {
	e := newEnv(t, "udp")
	var calls atomic.Int64
	deps := e.deps(t)
	deps.AddrsChanged = func() { calls.Add(1) }
	s := NewSet(deps)
	ctx := context.Background()
	t.Cleanup(func() { _ = s.Close(ctx) })
	a := e.config("udp", "127.0.0.3:5999")
	a.Name, a.AuthMethod, a.Register = "a", AuthIP, false
	b := a
	b.Name, b.Servers = "b", []string{"127.0.0.4:5999"}
	if err := s.Apply(ctx, []Config{a, b}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both trunks resolved", func() bool { return len(s.Addrs()) == 2 })
	waitFor(t, "a notification per trunk", func() bool { return calls.Load() >= 2 })
	before := calls.Load()
	if _, err := s.All()[0].Targets(ctx); err != nil { // same addresses: no notification
		t.Fatal(err)
	}
	if calls.Load() != before {
		t.Fatal("notified without a change")
	}
	if err := s.Apply(ctx, []Config{a}); err != nil {
		t.Fatal(err)
	}
	if calls.Load() == before {
		t.Fatal("no notification when a trunk was removed")
	}
	if got := s.Addrs(); len(got) != 1 || got[0] != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("Addrs after removal: %v", got)
	}
}

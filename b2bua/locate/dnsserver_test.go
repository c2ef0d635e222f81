package locate

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testDNS is a real DNS server on loopback (UDP and TCP on the same port)
// serving a mutable zone. It counts the queries it receives.
type testDNS struct {
	addr string

	mu       sync.Mutex
	zone     map[cacheKey][]dns.RR // guarded by mu
	names    map[string]bool       // guarded by mu; names that exist (NODATA vs NXDOMAIN)
	counts   map[cacheKey]int      // guarded by mu
	rcode    int                   // guarded by mu; != 0: answer every query with it
	truncUDP bool                  // guarded by mu; answer UDP with TC=1 and no records
	failType map[uint16]bool       // guarded by mu; SERVFAIL for these query types

	udp, tcp *dns.Server
	stopped  sync.Once
}

// startDNS starts a server on host ("127.0.0.1" or "::1") port 0.
func startDNS(t testing.TB, host string, records ...string) *testDNS {
	t.Helper()
	// UDP and TCP on the same port: the UDP port may be taken over TCP by
	// someone else on this shared machine, so try a few ports.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		pc, err = net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatalf("listen udp: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("listen tcp: %v", err)
	}
	s := &testDNS{
		addr:   pc.LocalAddr().String(),
		zone:   make(map[cacheKey][]dns.RR),
		names:  make(map[string]bool),
		counts: make(map[cacheKey]int),
	}
	s.set(t, records...)
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: ln, Handler: s, NotifyStartedFunc: notify}
	errc := make(chan error, 2)
	go func() { errc <- s.udp.ActivateAndServe() }()
	go func() { errc <- s.tcp.ActivateAndServe() }()
	for range 2 {
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("dns server: %v", err)
		}
	}
	t.Cleanup(s.stop)
	return s
}

// stop shuts the server down; later queries to its port are refused.
func (s *testDNS) stop() {
	s.stopped.Do(func() {
		_ = s.udp.Shutdown()
		_ = s.tcp.Shutdown()
	})
}

// set replaces every record set named in records (zone file syntax).
func (s *testDNS) set(t testing.TB, records ...string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := make(map[cacheKey]bool)
	for _, txt := range records {
		rr, err := dns.NewRR(txt)
		if err != nil {
			t.Fatalf("record %q: %v", txt, err)
		}
		k := cacheKey{name: dns.CanonicalName(rr.Header().Name), qtype: rr.Header().Rrtype}
		if !fresh[k] {
			s.zone[k] = nil
			fresh[k] = true
		}
		s.zone[k] = append(s.zone[k], rr)
		s.names[k.name] = true
	}
}

func (s *testDNS) setRcode(rc int) {
	s.mu.Lock()
	s.rcode = rc
	s.mu.Unlock()
}

func (s *testDNS) count(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[cacheKey{name: dns.CanonicalName(name), qtype: qtype}]
}

func (s *testDNS) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.counts {
		n += c
	}
	return n
}

func (s *testDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	k := cacheKey{name: dns.CanonicalName(q.Name), qtype: q.Qtype}
	_, isUDP := w.LocalAddr().(*net.UDPAddr)
	s.mu.Lock()
	s.counts[k]++
	rcode, trunc := s.rcode, s.truncUDP && isUDP
	if s.failType[q.Qtype] {
		rcode = dns.RcodeServerFailure
	}
	rrs := make([]dns.RR, 0, len(s.zone[k]))
	for _, rr := range s.zone[k] {
		rrs = append(rrs, dns.Copy(rr))
	}
	exists := s.names[k.name]
	s.mu.Unlock()
	switch {
	case rcode != 0:
		m.Rcode = rcode
	case trunc:
		m.Truncated = true
	case len(rrs) > 0:
		m.Answer = rrs
	default:
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		soa, _ := dns.NewRR(zoneApex(k.name) + " 60 IN SOA ns.test. admin.test. 1 60 60 60 60")
		m.Ns = []dns.RR{soa}
	}
	_ = w.WriteMsg(m)
}

func zoneApex(name string) string {
	labels := dns.SplitDomainName(name)
	if len(labels) < 2 {
		return "test."
	}
	return strings.Join(labels[len(labels)-2:], ".") + "."
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

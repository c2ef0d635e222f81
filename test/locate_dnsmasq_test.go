package test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esbc/esbc/b2bua/locate"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

// locDnsmasq is a real dnsmasq serving only the records it is given.
type locDnsmasq struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for
	once   sync.Once
}

// locStartDnsmasq runs dnsmasq on a free loopback port and waits until it
// answers. TTL 0 (--local-ttl=0) so that every Lookup asks it.
func locStartDnsmasq(t *testing.T, bin string, records ...string) *locDnsmasq {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		port := locFreePort(t)
		args := []string{"--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
			"--port=" + port, "--listen-address=127.0.0.1", "--bind-interfaces",
			"--local=/test/", "--local-ttl=0", "--log-facility=-", "--user=" + locDnsmasqUser()}
		args = append(args, records...)
		cmd := exec.Command(bin, args...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("dnsmasq: %v", err)
		}
		d := &locDnsmasq{addr: net.JoinHostPort("127.0.0.1", port), cmd: cmd, exited: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(d.exited) }()
		if err := d.ready(); err != nil {
			d.stop()
			if strings.Contains(out.String(), "in use") {
				continue // the port was taken between locFreePort and bind
			}
			t.Fatalf("dnsmasq not ready: %v\n%s", err, out.String())
		}
		t.Cleanup(d.stop)
		return d
	}
	t.Fatal("dnsmasq: no free port")
	return nil
}

func locDnsmasqUser() string {
	if os.Geteuid() == 0 {
		return "root" // stay able to be killed by the test and avoid "nobody" lookups
	}
	return fmt.Sprint(os.Getuid())
}

func locFreePort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	return port
}

// ready polls with real queries (bounded in count) until dnsmasq answers.
// It uses the standard library's resolver: b2bua/locate stays the only
// importer of miekg/dns.
func (d *locDnsmasq) ready() error {
	var dialer net.Dialer
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialer.DialContext(ctx, "udp", d.addr)
	}}
	var err error
	for range 50 {
		select {
		case <-d.exited:
			return errors.New("dnsmasq exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err = res.LookupHost(ctx, "ready.test")
		cancel()
		var de *net.DNSError
		if err == nil || errors.As(err, &de) && de.IsNotFound {
			return nil // an answer, even NXDOMAIN, means it serves
		}
		// Refused: not bound yet. Give the process a moment (bounded
		// retries; this is a readiness probe, not a timed assertion).
		select {
		case <-d.exited:
			return errors.New("dnsmasq exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return err
}

// stop kills dnsmasq (the process this test started) and waits for it.
func (d *locDnsmasq) stop() {
	d.once.Do(func() {
		_ = d.cmd.Process.Kill()
		<-d.exited
	})
}

func TestLocateAgainstDnsmasq(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore)
	bin := e2eRequireTool(t, "dnsmasq")
	d := locStartDnsmasq(t, bin,
		"--srv-host=_sips._tcp.trunk.test,primary.trunk.test,5061,10,50",
		"--srv-host=_sips._tcp.trunk.test,secondary.trunk.test,5062,20,50",
		"--srv-host=_sip._udp.trunk.test,secondary.trunk.test,5080,0,0",
		"--host-record=primary.trunk.test,127.0.0.11",
		"--host-record=secondary.trunk.test,127.0.0.12,::1",
		"--host-record=plain.test,127.0.0.13",
		"--naptr-record=naptr.test,10,10,S,SIPS+D2T,,_sips._tcp.trunk.test",
		"--naptr-record=naptr.test,20,10,S,SIP+D2U,,_sip._udp.trunk.test",
	)
	// A dead server first: the resolver falls back to dnsmasq.
	dead := locFreePort(t)
	reg := prometheus.NewRegistry()
	r := locate.NewResolver(locate.Config{Servers: []string{"127.0.0.1:" + dead, d.addr}, Timeout: time.Second}, nil, reg)
	defer r.Close()
	ctx := context.Background()

	tests := []struct {
		domain, transport string
		static            []string
		want              []string
	}{
		{"trunk.test", "tls", nil, []string{"primary.trunk.test/127.0.0.11:5061/tls", "secondary.trunk.test/127.0.0.12:5062/tls", "secondary.trunk.test/[::1]:5062/tls"}},
		{"trunk.test", "udp", nil, []string{"secondary.trunk.test/127.0.0.12:5080/udp", "secondary.trunk.test/[::1]:5080/udp"}},
		{"naptr.test", "tls", nil, []string{"primary.trunk.test/127.0.0.11:5061/tls", "secondary.trunk.test/127.0.0.12:5062/tls", "secondary.trunk.test/[::1]:5062/tls"}},
		{"plain.test", "tcp", nil, []string{"plain.test/127.0.0.13:5060/tcp"}},
		{"trunk.test", "tls", []string{"secondary.trunk.test:7000", "primary.trunk.test"}, []string{"secondary.trunk.test/127.0.0.12:7000/tls", "secondary.trunk.test/[::1]:7000/tls", "primary.trunk.test/127.0.0.11:5061/tls"}},
	}
	for _, tc := range tests {
		ts, err := r.Lookup(ctx, tc.domain, tc.transport, tc.static)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.domain, tc.transport, err)
		}
		var got []string
		for _, x := range ts {
			got = append(got, x.String())
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s %s %v:\n got %v\nwant %v", tc.domain, tc.transport, tc.static, got, tc.want)
		}
	}
	if _, err := r.Lookup(ctx, "missing.test", "tls", nil); !errors.Is(err, locate.ErrNoTargets) {
		t.Errorf("missing.test: err = %v, want ErrNoTargets", err)
	}

	// dnsmasq dies: with TTL 0 every answer has expired, so the resolver
	// must serve the stale ones.
	d.stop()
	ts, err := r.Lookup(ctx, "trunk.test", "tls", nil)
	if err != nil || len(ts) != 3 || ts[0].Addr != netip.MustParseAddrPort("127.0.0.11:5061") {
		t.Fatalf("with dnsmasq down: %v, %v; want the stale targets", ts, err)
	}
	if n := locMetricValue(t, reg, "esbc_dns_cache_total", "result", "stale"); n == 0 {
		t.Error("no stale answer counted: the targets came from a live cache, not the stale path")
	}
}

func locMetricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

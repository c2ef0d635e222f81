package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/acl"
)

// secFlood sends one OPTIONS datagram after another from c to dst at about
// rate messages per second until dur has passed or ctx ends; it never
// sends more than rate×dur messages. It returns how many it sent.
//
// The same generator serves against the whole app: set
// ESBC_FLOOD_TARGET=ip:port (a running esbc's UDP listener) and
// ESBC_FLOOD_ADMIN=http://ip:port (its admin API) to run
// TestSecurityFloodAgainstRunningSBC.
func secFlood(ctx context.Context, c *net.UDPConn, dst *net.UDPAddr, rate int, dur time.Duration) int {
	msg := secRawOptions(c.LocalAddr().String(), "User-Agent: flood")
	limit := int(float64(rate) * dur.Seconds())
	const tick = 5 * time.Millisecond
	perTick := max(rate*int(tick)/int(time.Second), 1)
	start := time.Now()
	sent := 0
	t := time.NewTicker(tick)
	defer t.Stop()
	for sent < limit && time.Since(start) < dur {
		// catch up to the schedule, in bounded bursts
		due := min(int(float64(rate)*time.Since(start).Seconds())+perTick, limit)
		for ; sent < due; sent++ {
			if _, err := c.WriteTo(msg, dst); err != nil {
				return sent
			}
		}
		select {
		case <-ctx.Done():
			return sent
		case <-t.C:
		}
	}
	return sent
}

// secLegit runs do every interval until stop is
// closed, counting answers and failures.
func secLegit(t *testing.T, do func() error, interval time.Duration, stop <-chan struct{}, ok, failed *atomic.Int64) {
	for {
		if err := do(); err != nil {
			failed.Add(1)
			t.Logf("legitimate request failed: %v", err)
		} else {
			ok.Add(1)
		}
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
	}
}

func TestSecurityFloodBannedOthersServed(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s flood")
	}
	secLeakCheck(t)
	cfg := acl.Config{
		RateLimit:     acl.RateLimit{PerIP: 30, Burst: 60, Ban: 10 * time.Minute},
		PBXAddrs:      []netip.Addr{netip.MustParseAddr("127.0.0.1")}, // the PBX: trusted, never limited
		TableSize:     1024,
		UserAgentDeny: []string{"friendly-scanner"},
	}
	e := secStartEdge(t, acl.LAN, cfg)
	pbx := secClient(t, "127.0.0.1", e.roots, "pbx")
	phone := secClient(t, "127.0.0.6", e.roots, "phone") // untrusted, under its rate
	flooder := secUDP(t, "127.0.0.5")
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(e.udp))

	var okPBX, failPBX, okPhone, failPhone atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		secLegit(t, func() error { return secOK(secOptions(t, pbx, e.udp, "UDP")) }, 20*time.Millisecond, stop, &okPBX, &failPBX)
	}()
	go func() {
		defer wg.Done()
		secLegit(t, func() error { return secOK(secOptions(t, phone, e.udp, "UDP")) }, 200*time.Millisecond, stop, &okPhone, &failPhone)
	}()

	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	sent := secFlood(context.Background(), flooder, dst, 20000, 3*time.Second)
	floodTime := time.Since(start)
	close(stop)
	wg.Wait()

	bans := e.g.Bans()
	var ban *acl.BanInfo
	for i := range bans {
		if bans[i].Addr == netip.MustParseAddr("127.0.0.5") {
			ban = &bans[i]
		}
	}
	if ban == nil {
		t.Fatalf("flooder not banned; bans: %+v", bans)
	}
	if len(bans) != 1 {
		t.Errorf("legitimate sources banned too: %+v", bans)
	}
	if failPBX.Load() != 0 || failPhone.Load() != 0 || okPBX.Load() == 0 || okPhone.Load() == 0 {
		t.Fatalf("legitimate traffic: PBX %d ok %d failed, phone %d ok %d failed", okPBX.Load(), failPBX.Load(), okPhone.Load(), failPhone.Load())
	}
	legit := okPBX.Load() + okPhone.Load()
	fromFlooder := e.handled.Load() - legit
	if fromFlooder > 2*60 {
		t.Errorf("%d flood messages reached the SIP stack (burst 60)", fromFlooder)
	}
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	t.Logf("flood: %d datagrams in %v (%.0f/s); banned %v after the flood started; %d reached the SIP stack; dropped banned=%v rate_limit=%v; legit ok: PBX %d, phone %d; heap %d → %d KiB",
		sent, floodTime.Round(time.Millisecond), float64(sent)/floodTime.Seconds(), ban.Since.Sub(start).Round(time.Millisecond),
		fromFlooder, e.dropped(acl.LAN, acl.ReasonBanned), e.dropped(acl.LAN, acl.ReasonRateLimit),
		okPBX.Load(), okPhone.Load(), m0.HeapAlloc>>10, m1.HeapAlloc>>10)

	// A spoofed-source flood (thousands of addresses, one datagram each)
	// stays within the table's fixed size, and the real flooder stays banned.
	n := 0
	for i := 0; i < 4000; i++ {
		src := fmt.Sprintf("127.1.%d.%d", i/250, 1+i%250)
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
		if err != nil {
			t.Skipf("cannot bind %s: %v", src, err)
		}
		if _, err := c.WriteTo(secRawOptions(c.LocalAddr().String(), "User-Agent: friendly-scanner"), dst); err == nil {
			n++
		}
		c.Close()
		if i%100 == 99 {
			// a round trip after every 100 datagrams: the edge processed
			// them all (one receive queue, in order) and none overflowed it
			secMustOK(t, pbx, e.udp, "UDP")
		}
	}
	sources, capacity := e.g.Sources()
	if sources > capacity || capacity > 2048 {
		t.Fatalf("source table holds %d (capacity %d) after %d spoofed sources", sources, capacity, n)
	}
	t.Logf("spoofed: %d sent, dropped{user_agent}=%v, table %d/%d", n, e.dropped(acl.LAN, acl.ReasonUserAgent), sources, capacity)
	if v := e.dropped(acl.LAN, acl.ReasonUserAgent); v != float64(n) {
		t.Errorf("dropped{user_agent} = %v, want %d", v, n)
	}
	if ev := secMetric(e.reg, "esbc_acl_table_evictions_total", nil); ev < float64(n-capacity) {
		t.Errorf("evictions = %v for %d sources over a capacity of %d", ev, n, capacity)
	}
	if e.g.Unban(netip.MustParseAddr("127.0.0.5")) == false {
		t.Fatal("the flooder's ban was lost under the spoofed flood")
	}
}

// secOK turns a non-200 final response into an error.
func secOK(res *sip.Response, err error) error {
	if err != nil {
		return err
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// TestSecurityFloodAgainstRunningSBC floods a running esbc (whole app)
// and waits for the ban to show in its admin API. It runs only when
// ESBC_FLOOD_TARGET and ESBC_FLOOD_ADMIN are set; the legitimate-calls
// half of the scenario (20 calls/s from the PBX) needs the B2BUA and SIPp.
func TestSecurityFloodAgainstRunningSBC(t *testing.T) {
	target, admin := os.Getenv("ESBC_FLOOD_TARGET"), os.Getenv("ESBC_FLOOD_ADMIN")
	if target == "" || admin == "" {
		t.Skip("set ESBC_FLOOD_TARGET=ip:port and ESBC_FLOOD_ADMIN=http://ip:port to flood a running esbc")
	}
	src := os.Getenv("ESBC_FLOOD_SOURCE")
	if src == "" {
		src = "127.0.0.5"
	}
	c := secUDP(t, src)
	dst, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	sent := secFlood(context.Background(), c, dst, 20000, 3*time.Second)
	bans := secBans(t, admin)
	for _, b := range bans {
		if b.Addr.String() == src {
			t.Logf("%d datagrams sent; %s banned until %v", sent, src, b.Until)
			return
		}
	}
	t.Fatalf("%s not banned after %d datagrams: %+v", src, sent, bans)
}

// secBans is the ban list of the esbc whose admin API is at admin
// (http://host:port).
func secBans(t *testing.T, admin string) []acl.BanInfo {
	t.Helper()
	res, err := http.Get(strings.TrimSuffix(admin, "/") + acl.BansPath)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct{ Bans []acl.BanInfo }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Bans
}

//go:build e2e

package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/esbc/esbc/acl"
)

// TestSecurityFloodDuringCalls is issue 7's load scenario through the
// whole SBC: SIPp as the PBX places 20 calls/s to a SIPp trunk through
// esbc while 127.0.0.5 floods esbc's LAN port with 20,000 OPTIONS/s for
// 3 s. Every call must complete; the flooder must be banned (admin API).
func TestSecurityFloodDuringCalls(t *testing.T) {
	e2eRequireTool(t, "sipp")
	e2eLeakCheck(t)
	n := newE2ENet(t, "udp")
	n.uas(t, "trunk", "uas_answer.xml", "udp", n.trunk, n.trunkMedia)
	base := n.config()
	cfg := strings.Replace(base, "rate_limit: { per_ip: 100000, burst: 200000, ban: 1s }",
		"rate_limit: { per_ip: 30, burst: 60, ban: 10m }", 1)
	if cfg == base {
		t.Fatal("e2e config no longer carries the rate_limit line this test tightens")
	}
	p := e2eStartESBC(t, n.dir, cfg, fmt.Sprintf("127.0.0.1:%d", n.admin))
	rss0, _ := p.rssKiB(t)

	flooder := secUDP(t, "127.0.0.5")
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: n.lan}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	start := time.Now()
	go func() { done <- secFlood(ctx, flooder, dst, 20000, 3*time.Second) }()

	const calls = 100
	n.uac(t, "pbx", "uac_call.xml", "udp", "lan", dialled, calls, 20, time.Second) // fails the test on any failed call
	sent := <-done
	floodTime := time.Since(start)

	bans := secBans(t, fmt.Sprintf("http://127.0.0.1:%d", n.admin))
	var ban *acl.BanInfo
	for i := range bans {
		if bans[i].Addr.String() == "127.0.0.5" {
			ban = &bans[i]
		} else {
			t.Errorf("a legitimate source was banned: %+v", bans[i])
		}
	}
	if ban == nil {
		t.Fatalf("flooder not banned after %d datagrams: %+v", sent, bans)
	}
	checkMedia(t, n.waitCDRs(t, calls))
	rss1, peak := p.rssKiB(t)
	t.Logf("flood: %d datagrams from 127.0.0.5 (%.0f/s over the first %v) during %d calls at 20/s: all calls completed; banned %v after the flood started; dropped banned=%v rate_limit=%v; esbc RSS %d → %d KiB (peak %d)",
		sent, float64(sent)/min(floodTime, 3*time.Second).Seconds(), 3*time.Second, calls,
		ban.Since.Sub(start).Round(time.Millisecond),
		p.metric(t, "esbc_acl_dropped_total", "reason=banned"), p.metric(t, "esbc_acl_dropped_total", "reason=rate_limit"),
		rss0, rss1, peak)
}

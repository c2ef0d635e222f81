package test

// Issue 6 "Done when", black-box: the esbc binary between a PBX (sipgo UA,
// plain RTP) and two trunk servers (sipgo UAs on 127.0.0.2 and 127.0.0.3,
// over UDP or TCP, each with an RTP echo) that a real dnsmasq publishes as SRV primary (priority 10) and secondary
// (priority 20) of trunk.test. The tests kill and restart the primary and
// count what the PBX sees. Timings are reported with t.Logf, never asserted
// tightly: only a generous upper bound (failover_timeout + 5 s) on the set-up
// of a call that had to fail over.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const (
	failoverTimeout  = time.Second     // trunks[].failover_timeout in the tests
	failoverHoldDown = 4 * time.Second // trunks[].failback_holddown in the tests
	failoverDialled  = "916502530000"  // access code 9 + a NANP number
	failoverTrunkKey = "geo"           // trunks[].name
	failoverPrimary  = "primary.trunk.test"
	failoverSecond   = "secondary.trunk.test"
)

// failoverLeakCheck verifies, after every other cleanup of the test, that
// no goroutine of the test is left. sipgo's peer-side UDP fallback reader
// is ignored as in b2bua/trunk (see its TestMain): it belongs to a test
// peer's UA, not to esbc, which runs in its own process here.
func failoverLeakCheck(t *testing.T) {
	t.Helper()
	opts := []goleak.Option{goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/emiago/sipgo/sip.(*TransportUDP).readUDPConnection")}
	t.Cleanup(func() {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		goleak.VerifyNone(t, opts...)
	})
}

// failoverTrunkPort finds a port free for network ("udp" or "tcp") on
// both 127.0.0.2 and 127.0.0.3 (the two trunk servers listen on the same
// port, as SRV records often have it).
func failoverTrunkPort(t *testing.T, network string) int {
	t.Helper()
	bind := func(addr string) (io.Closer, int, error) {
		if network == "tcp" {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, 0, err
			}
			return ln, ln.Addr().(*net.TCPAddr).Port, nil
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, 0, err
		}
		return pc, pc.LocalAddr().(*net.UDPAddr).Port, nil
	}
	for range 50 {
		a, port, err := bind("127.0.0.2:0")
		if err != nil {
			t.Fatalf("127.0.0.2 is not usable (Linux routes 127/8 to lo): %v", err)
		}
		b, _, err := bind("127.0.0.3:" + strconv.Itoa(port))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		if port != 5060 && port != 5061 {
			return port
		}
	}
	t.Fatalf("no %s port free on 127.0.0.2 and 127.0.0.3", network)
	return 0
}

// failoverRTPRange is a media port range for esbc, below the ephemeral
// range and apart from the SIPp e2e tests' 20000-25999.
func failoverRTPRange() string {
	lo := 26000 + 2*(os.Getpid()%1500)
	return fmt.Sprintf("%d-%d", lo, lo+399)
}

// failoverDNSRecords are dnsmasq options: SRV primary/secondary for
// _sip._udp (or _sip._tcp).trunk.test on port, and their A records.
func failoverDNSRecords(network string, port int) []string {
	p := strconv.Itoa(port)
	return []string{
		"--srv-host=_sip._" + network + ".trunk.test," + failoverPrimary + "," + p + ",10,50",
		"--srv-host=_sip._" + network + ".trunk.test," + failoverSecond + "," + p + ",20,50",
		"--host-record=" + failoverPrimary + ",127.0.0.2",
		"--host-record=" + failoverSecond + ",127.0.0.3",
	}
}

// failoverConfig is esbc's configuration: LAN UDP toward the PBX, WAN UDP
// or TCP (network) toward trunk.test found by SRV through dns, digest registration, SRTP
// off (UDP signalling), OPTIONS every second, fail-back after 4 s.
// wanAllow is the WAN ACL allow list ("" = empty: the trunks' resolved
// addresses only, SPEC §4).
func failoverConfig(network, dns string, pbxPort int, wanAllow string) []byte {
	return []byte(fmt.Sprintf(`
log: { level: info, format: json }
admin: { listen: "127.0.0.1:0" }
shutdown_grace: 5s
lan:
  listen: ["udp://127.0.0.1:0"]
  advertise: 127.0.0.1
  pbx: { uri: "sip:127.0.0.1:%d;transport=udp", trusted: true }
  acl: { allow: ["127.0.0.0/8"] }
wan:
  listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]
  advertise: 127.0.0.1
  acl: { allow: [%s] }
dns: { servers: ["%s"], timeout: 1s }
trunks:
  - name: %s
    domain: trunk.test
    transport: %s
    auth: { method: digest, username: "990500000231", password: "s3cr3t", register: true, register_expires: 60s }
    from_user: "990500000231"
    caller_id: "+14155550100"
    allowed_caller_ids: ["+14155550100"]
    srtp: "off"
    codecs: [PCMU, telephone-event]
    options_interval: 1s
    failover_timeout: %s
    failback_holddown: %s
numbering: { country_code: "1", national_prefix: "1", international_prefix: "011" }
routes:
  outbound:
    - { match: '^9(\d+)$', number: '$1', trunk: %s }
security:
  rate_limit: { per_ip: 10000, burst: 20000, ban: 1s }
media:
  rtp_ports: "%s"
  inactivity_timeout: 30s
cdr: { file: "" }
`, pbxPort, wanAllow, dns, failoverTrunkKey, network, failoverTimeout, failoverHoldDown, failoverTrunkKey, failoverRTPRange()))
}

// failoverEnv is one esbc process between a PBX and two trunk servers.
type failoverEnv struct {
	p                  *serviceProc
	admin              failoverAdmin
	pbx                *failoverPBX
	primary, secondary *failoverTrunk
	pt, st             string // health keys of the primary and the secondary
}

// newFailoverEnv starts dnsmasq, the trunk servers' media, the PBX and
// esbc (edits: old/new string pairs applied to failoverConfig); the trunk SIP servers are started by the caller (before or after
// esbc, as the case needs) through startPrimary/startSecondary.
func newFailoverEnv(t *testing.T, network, wanAllow string, before func(e *failoverEnv), edits ...string) *failoverEnv {
	t.Helper()
	dnsmasq := e2eRequireTool(t, "dnsmasq")
	port := failoverTrunkPort(t, network)
	e := &failoverEnv{
		primary:   newFailoverTrunk(t, "primary", network, "127.0.0.2", port),
		secondary: newFailoverTrunk(t, "secondary", network, "127.0.0.3", port),
	}
	e.pt, e.st = e.primary.target(failoverPrimary), e.secondary.target(failoverSecond)
	d := locStartDnsmasq(t, dnsmasq, failoverDNSRecords(network, port)...)
	e.pbx = newFailoverPBX(t)
	if before != nil {
		before(e)
	}
	dir := t.TempDir()
	bin := serviceBuild(t, dir)
	cfg := filepath.Join(dir, "esbc.yaml")
	conf := string(failoverConfig(network, d.addr, e.pbx.port(), wanAllow))
	for i := 0; i+1 < len(edits); i += 2 { // old, new pairs: a case's own keys
		if !strings.Contains(conf, edits[i]) {
			t.Fatalf("config edit: %q not in the config", edits[i])
		}
		conf = strings.Replace(conf, edits[i], edits[i+1], 1)
	}
	serviceWrite(t, cfg, []byte(conf))
	e.p = serviceStart(t, bin, cfg)
	e.admin = failoverAdmin{base: "http://" + e.p.addr("admin")}
	e.pbx.dialTo(e.p.addr("lan/udp"))
	return e
}

// stop ends esbc with SIGTERM (it unregisters) and waits for its exit.
func (e *failoverEnv) stop(t *testing.T) {
	t.Helper()
	if err := e.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-e.p.exit:
		if err != nil {
			t.Errorf("esbc exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("esbc did not stop 20 s after SIGTERM")
	}
}

// landed places a call and reports which trunk server answered it (by its
// answered counter: the tests place calls one at a time).
func (e *failoverEnv) landed(t *testing.T) (*failoverCall, string) {
	t.Helper()
	_, pa, _ := e.primary.counts()
	_, sa, _ := e.secondary.counts()
	c, err := e.pbx.call(failoverDialled)
	if err != nil {
		t.Errorf("PBX call failed: %v\nesbc log tail:\n%s", err, failoverTail(e.p.logs(), 30))
		return nil, ""
	}
	_, pa2, _ := e.primary.counts()
	_, sa2, _ := e.secondary.counts()
	switch {
	case pa2 == pa+1 && sa2 == sa:
		return c, "primary"
	case sa2 == sa+1 && pa2 == pa:
		return c, "secondary"
	}
	return c, fmt.Sprintf("unclear (primary %d→%d, secondary %d→%d)", pa, pa2, sa, sa2)
}

func failoverTail(logs string, n int) string {
	lines := strings.Split(logs, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// failoverCount counts esbc's "failover to next target" log lines (INVITEs
// that were retried at the next target within one call).
func failoverCount(logs string) int {
	return strings.Count(logs, `"msg":"failover to next target"`)
}

// mediaOK (the reload and robustness tests use it too; hence no failover
// prefix) checks that RTP crosses esbc both ways on a call: at least half
// of 20 packets come back from the trunk's echo (loopback loses none; the
// slack is for the relay's first-packet latching).
func mediaOK(t *testing.T, what string, c rtpCall) int {
	t.Helper()
	n := c.echoes(20)
	if n < 10 {
		t.Errorf("%s: %d of 20 RTP packets came back through esbc", what, n)
	}
	return n
}

// TestFailoverInProcess walks one esbc through the cases in order:
// primary dead before the first call; primary back → fail-back after the
// hold-down; primary killed with calls up; 503 from the primary. The PBX
// must see 0 failed calls throughout.
func TestFailoverInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) { failoverWalk(t, network) })
	}
}

// failoverWalk is TestFailoverInProcess with the trunk over network: on
// UDP a dead server is a silent one (failover after failover_timeout), on
// TCP its port refuses the connection (transport error, at once).
func failoverWalk(t *testing.T, network string) {
	e := newFailoverEnv(t, network, `"127.0.0.0/8"`, func(e *failoverEnv) { e.secondary.start() })
	defer e.stop(t)

	// 1. Primary dead before the call: the call completes on the secondary.
	// The first call waits for the registration to settle on the
	// secondary: a request sent at "esbc ready" may meet app's start-up
	// race (sipgo not yet holding the UDP listener; reported and tested in
	// d561f86), which is not what this test is about. So the primary is
	// known down here; the INVITE-level failover (no answer within
	// failover_timeout, transport error) is case 3.
	if !failoverPoll(15*time.Second, func() bool { return e.admin.state(t).registeredAt(failoverTrunkKey) == e.st }) {
		t.Fatalf("registration not on the secondary: %+v", e.admin.state(t).Registrations)
	}
	c, where := e.landed(t)
	if c == nil {
		t.FailNow()
	}
	t.Logf("primary dead before the call (registration already on the secondary): answered by the %s in %s (INVITE failovers logged so far: %d)",
		where, c.setup.Round(time.Millisecond), failoverCount(e.p.logs()))
	if where != "secondary" {
		t.Errorf("first call answered by the %s, want the secondary", where)
	}
	// The proceeding timeout (10 s here) plus a generous margin.
	if bound := 10*time.Second + 5*time.Second; c.setup > bound {
		t.Errorf("call set-up took %s, more than the proceeding timeout + 5 s (%s)", c.setup, bound)
	}
	mediaOK(t, "call on the secondary", c)
	if err := c.hangup(); err != nil {
		t.Errorf("BYE: %v", err)
	}
	if up := e.admin.targetUp(t, e.pt); up != 0 {
		t.Errorf("esbc_trunk_target_up{target=%q} = %v, want 0", e.pt, up)
	}

	// 2. Primary back: up again at the next OPTIONS probe, preferred (new
	// calls, registration) only after the hold-down.
	e.primary.start()
	back := time.Now()
	if !failoverPoll(15*time.Second, func() bool { return e.admin.targetUp(t, e.pt) == 1 }) {
		t.Fatalf("primary not seen up again in esbc_trunk_target_up:\n%s", failoverTail(e.p.logs(), 20))
	}
	upAfter := time.Since(back)
	// A call while the primary is in its hold-down and the secondary is
	// preferred (checked before and after the call; when both are in a
	// hold-down, e.g. after a start-up failure took both down, priority
	// decides and the primary is right) stays on the secondary.
	holding := func() bool {
		st := e.admin.state(t)
		_, pp, _ := st.target(e.pt)
		_, sp, _ := st.target(e.st)
		return !pp && sp
	}
	if holding() {
		c, where := e.landed(t)
		if holding() && c != nil {
			t.Logf("call during the hold-down: answered by the %s", where)
			if where != "secondary" {
				t.Errorf("call during the primary's hold-down answered by the %s, want the secondary", where)
			}
		}
		if c != nil {
			mediaOK(t, "call during the hold-down", c)
			if err := c.hangup(); err != nil {
				t.Errorf("BYE: %v", err)
			}
		}
	}
	if !failoverPoll(failoverHoldDown+15*time.Second, func() bool {
		_, pref, _ := e.admin.state(t).target(e.pt)
		return pref
	}) {
		t.Fatalf("primary never preferred again: %+v", e.admin.state(t).Targets)
	}
	t.Logf("primary restarted: up after %s, preferred (fail-back) after %s (hold-down %s)",
		upAfter.Round(time.Millisecond), time.Since(back).Round(time.Millisecond), failoverHoldDown)
	if c, where := e.landed(t); c != nil {
		if where != "primary" {
			t.Errorf("call after fail-back answered by the %s, want the primary", where)
		}
		mediaOK(t, "call after fail-back", c)
		if err := c.hangup(); err != nil {
			t.Errorf("BYE: %v", err)
		}
	}
	if !failoverPoll(15*time.Second, func() bool { return e.admin.state(t).registeredAt(failoverTrunkKey) == e.pt }) {
		t.Fatalf("registration not back on the primary: %+v", e.admin.state(t).Registrations)
	}
	if !failoverPoll(10*time.Second, func() bool { _, unbind := e.secondary.registrations(); return unbind > 0 }) {
		t.Errorf("the binding at the secondary was not removed (no REGISTER Expires: 0) after fail-back")
	}
	pb, _ := e.primary.registrations()
	sb, su := e.secondary.registrations()
	t.Logf("registrations: primary %d, secondary %d (+%d removals)", pb, sb, su)

	// 3. Primary killed with calls up: new calls go to the secondary, the
	// calls up keep their media and end normally.
	var up []*failoverCall
	for range 3 {
		c, where := e.landed(t)
		if c == nil {
			continue
		}
		if where != "primary" {
			t.Errorf("call before the kill answered by the %s, want the primary", where)
		}
		mediaOK(t, "call up before the kill", c)
		up = append(up, c)
	}
	before := failoverCount(e.p.logs())
	e.primary.kill()
	for i := range 3 {
		c, where := e.landed(t)
		if c == nil {
			continue
		}
		t.Logf("new call %d after the primary was killed: answered by the %s in %s", i+1, where, c.setup.Round(time.Millisecond))
		if where != "secondary" {
			t.Errorf("new call after the kill answered by the %s, want the secondary", where)
		}
		if c.setup > failoverTimeout+5*time.Second {
			t.Errorf("call set-up took %s, more than failover_timeout + 5 s", c.setup)
		}
		mediaOK(t, "new call on the secondary", c)
		if err := c.hangup(); err != nil {
			t.Errorf("BYE: %v", err)
		}
	}
	t.Logf("INVITE failovers after the kill: %d", failoverCount(e.p.logs())-before)
	for i, c := range up {
		n := mediaOK(t, "call up on the killed primary", c)
		t.Logf("call %d up on the killed primary: %d/20 RTP echoes", i+1, n)
	}
	if !failoverPoll(15*time.Second, func() bool { return e.admin.state(t).registeredAt(failoverTrunkKey) == e.st }) {
		t.Errorf("registration did not move to the secondary: %+v", e.admin.state(t).Registrations)
	}
	if up := e.admin.targetUp(t, e.pt); up != 0 {
		t.Errorf("esbc_trunk_target_up{target=%q} = %v after the kill, want 0", e.pt, up)
	}
	// The PBX hangs up two of them while the primary is dead (esbc closes
	// the trunk leg locally); the last one stays up until the primary is back.
	var survivor *failoverCall
	if len(up) > 0 {
		survivor, up = up[len(up)-1], up[:len(up)-1]
	}
	for i, c := range up {
		if err := c.hangup(); err != nil {
			t.Errorf("BYE of call %d up on the killed primary: %v", i+1, err)
		}
	}

	// 4. 503 from the primary: retried on the secondary in the same call.
	e.primary.mode.Store("503")
	e.primary.start()
	if !failoverPoll(failoverHoldDown+20*time.Second, func() bool {
		_, pref, _ := e.admin.state(t).target(e.pt)
		return pref
	}) {
		t.Fatalf("primary never preferred again: %+v", e.admin.state(t).Targets)
	}
	// The call that stayed up through the primary's death and restart still
	// has media, and its BYE goes to the primary, which serves its dialog.
	if survivor != nil {
		_, _, byes := e.primary.counts()
		n := mediaOK(t, "call up through the primary's death and restart", survivor)
		if err := survivor.hangup(); err != nil {
			t.Errorf("BYE of the call up through the restart: %v", err)
		}
		if !failoverPoll(10*time.Second, func() bool { _, _, b := e.primary.counts(); return b > byes }) {
			t.Errorf("the BYE of the call up through the restart did not reach the restarted primary")
		}
		t.Logf("call up through the primary's death and restart: %d/20 RTP echoes, BYE relayed to the primary", n)
	}
	pi, _, _ := e.primary.counts()
	if c, where := e.landed(t); c != nil {
		pi2, _, _ := e.primary.counts()
		t.Logf("503 from the primary: answered by the %s in %s (primary INVITEs %d→%d)", where, c.setup.Round(time.Millisecond), pi, pi2)
		if where != "secondary" || pi2 != pi+1 {
			t.Errorf("503 case: answered by the %s, primary INVITEs %d→%d; want the primary tried once, then the secondary", where, pi, pi2)
		}
		mediaOK(t, "call after a 503", c)
		if err := c.hangup(); err != nil {
			t.Errorf("BYE: %v", err)
		}
	}

	for _, l := range strings.Split(e.p.logs(), "\n") {
		if strings.Contains(l, `"msg":"trunk target down"`) || strings.Contains(l, `"msg":"trunk target up"`) {
			t.Logf("esbc: %s", l)
		}
	}
	placed, ok, failed := e.pbx.placed.Load(), e.pbx.ok.Load(), e.pbx.failed.Load()
	t.Logf("PBX: %d calls placed, %d answered, %d failed", placed, ok, failed)
	if failed != 0 {
		t.Errorf("the PBX saw %d failed calls, want 0", failed)
	}
}

// TestFailoverWANACLFollowsDNS: with an empty wan.acl.allow, the WAN
// accepts only the trunks' own server addresses (SPEC §4), and for a trunk
// found by DNS SRV those are the resolved ones (issue 6: "The WAN ACL with
// an empty allow list follows the resolved addresses of the trunks"). The
// trunk servers' answers to REGISTER, OPTIONS and INVITE must get through.
// Found by this test (app never fed acl.Guard.SetTrunkAddrs); fixed in
// cb4ede3 (trunk.Deps.AddrsChanged) and c29ef4a (app feeds the guard).
func TestFailoverWANACLFollowsDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	e := newFailoverEnv(t, "udp", "", func(e *failoverEnv) { e.primary.start(); e.secondary.start() })
	defer e.stop(t)
	if !failoverPoll(10*time.Second, func() bool { return e.admin.state(t).registeredAt(failoverTrunkKey) == e.pt }) {
		// esbc sends toward UDP trunks from its WAN listener: the trunks'
		// answers arrive there too and meet the same ACL.
		t.Fatalf("the resolved trunk addresses are not admitted by the WAN ACL (acl.Guard.SetTrunkAddrs): "+
			"not registered at the primary with wan.acl.allow empty\nregistrations/targets: %s\n%s",
			e.admin.get(t, "/api/v1/registrations"),
			failoverMetricLines(e.admin.get(t, "/metrics"), `esbc_acl_dropped_total{reason="denied",side="wan"}`))
	}
	c, where := e.landed(t)
	if c == nil {
		t.FailNow()
	}
	if where != "primary" {
		t.Errorf("call answered by the %s, want the primary", where)
	}
	mediaOK(t, "call with the WAN ACL following DNS", c)
	if err := c.hangup(); err != nil {
		t.Errorf("BYE: %v", err)
	}

	// Requests to the WAN listener (inbound calls, the trunk's OPTIONS):
	// from a resolved trunk address answered, from any other address not.
	// The answers above came back on sockets sipgo dialled itself, so they
	// do not show what the listener admits.
	wan := e.p.addr("wan/udp")
	stranger, trunkSrc := secUDP(t, "127.0.0.9"), secUDP(t, "127.0.0.2")
	secSend(t, stranger, wan)
	if !secAnswered(t, trunkSrc, wan) {
		t.Fatalf("the resolved trunk addresses are not admitted by the WAN ACL (acl.Guard.SetTrunkAddrs): "+
			"OPTIONS from the primary's address %s to the WAN listener dropped with wan.acl.allow empty\n%s",
			trunkSrc.LocalAddr(), failoverMetricLines(e.admin.get(t, "/metrics"), `esbc_acl_dropped_total{reason="denied",side="wan"}`))
	}
	secNoDatagram(t, stranger)
}

// failoverMetricLines returns the lines of a /metrics body for one family.
func failoverMetricLines(body, name string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestFailoverAfterTrying: the primary answers an INVITE with 100 Trying
// and then nothing (it hung, or died between the 100 and the answer). 100
// is hop-by-hop and says nothing about the call; nothing has reached the
// callee, so the secondary can still take the call and the PBX need not
// see a failure.
//
// esbc gives a target that sent only 100 Trying its proceeding timeout
// (5 × failover_timeout, at least 10 s: b2bua proceedingTimeout) to send
// 18x or a final response, then CANCELs and moves to the next target, so
// ordinary post-dial delay is not mistaken for a dead server. (It used to
// wait for the transaction's Timer B and fail the call after ~32 s.)
func TestFailoverAfterTrying(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	e := newFailoverEnv(t, "udp", `"127.0.0.0/8"`, func(e *failoverEnv) { e.primary.start(); e.secondary.start() })
	defer e.stop(t)
	if !failoverPoll(15*time.Second, func() bool { return e.admin.state(t).registeredAt(failoverTrunkKey) == e.pt }) {
		t.Fatalf("not registered at the primary: %+v", e.admin.state(t).Registrations)
	}
	e.primary.mode.Store("trying")
	start := time.Now()
	c, where := e.landed(t)
	t.Logf("primary sends 100 then nothing: PBX result after %s: answered by %q", time.Since(start).Round(time.Millisecond), where)
	if c == nil {
		return // e.landed reported the failed call
	}
	if where != "secondary" {
		t.Errorf("answered by the %s, want the secondary", where)
	}
	// The proceeding timeout (10 s here) plus a generous margin.
	if bound := 10*time.Second + 5*time.Second; c.setup > bound {
		t.Errorf("call set-up took %s, more than the proceeding timeout + 5 s (%s)", c.setup, bound)
	}
	if err := c.hangup(); err != nil {
		t.Errorf("BYE: %v", err)
	}
}

// TestFailoverWANClientSocketACL: the socket esbc's requests toward a UDP
// trunk (REGISTER, OPTIONS, INVITE) leave from is the source the trunk sees
// (rport), and anyone who learns it can send there. The WAN ACL must hold
// on it too: a source outside wan.acl.allow gets no answer, a trunk does.
// Found by this test (a stranger's OPTIONS to esbc's REGISTER source port
// was answered: sipgo's ephemeral client sockets bypassed the edge filter);
// fixed in 0d667dd (UDP requests leave from the wrapped listener).
func TestFailoverWANClientSocketACL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	e := newFailoverEnv(t, "udp", `"127.0.0.2", "127.0.0.3"`, func(e *failoverEnv) { e.primary.start(); e.secondary.start() })
	defer e.stop(t)
	if !failoverPoll(15*time.Second, func() bool { return e.admin.state(t).registeredAt(failoverTrunkKey) == e.pt }) {
		t.Fatalf("not registered at the primary: %+v", e.admin.state(t).Registrations)
	}
	e.primary.mu.Lock()
	src := e.primary.registers[0].Source
	e.primary.mu.Unlock()
	t.Logf("esbc's REGISTER came from %s; its WAN UDP listener is %s", src, e.p.addr("wan/udp"))
	// The stranger first; then an allowed trunk address, answered (the
	// socket serves); the edge handles datagrams in arrival order, so an
	// answer to the stranger would be waiting by then.
	stranger, allowed := secUDP(t, "127.0.0.9"), secUDP(t, "127.0.0.2")
	secSend(t, stranger, src)
	if !secAnswered(t, allowed, src) {
		t.Fatalf("OPTIONS from the trunk's address to %s not answered: that socket does not serve requests", src)
	}
	_ = stranger.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 4096)
	if n, _, err := stranger.ReadFrom(buf); err == nil {
		msg := fmt.Sprintf("the WAN ACL is not applied on the socket esbc's requests toward trunks leave from: OPTIONS from 127.0.0.9, outside wan.acl.allow, to esbc's REGISTER source %s answered:\n%s", src, buf[:n])
		t.Fatal(msg)
	}
}

// TestFailoverOptionsOff: options_interval: 0 means "no OPTIONS" (SPEC
// §4 / config.example.yaml: "0 = off"). A trunk with IP authentication
// then gets no request from esbc but the calls.
//
// Found by this test (0 reached trunk.Config.OptionsInterval, where it
// meant the 30 s default); fixed in 06f0a54 (0 = off in b2bua/trunk).
func TestFailoverOptionsOff(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	e := newFailoverEnv(t, "udp", `"127.0.0.0/8"`, func(e *failoverEnv) { e.primary.start(); e.secondary.start() },
		"options_interval: 1s", "options_interval: 0s",
		`auth: { method: digest, username: "990500000231", password: "s3cr3t", register: true, register_expires: 60s }`,
		"auth: { method: ip }")
	defer e.stop(t)
	// A call through the trunk: by its end, the OPTIONS round a running
	// keepalive sends at start has arrived.
	c, where := e.landed(t)
	if c == nil {
		t.FailNow()
	}
	if where != "primary" {
		t.Errorf("call answered by the %s, want the primary", where)
	}
	if err := c.hangup(); err != nil {
		t.Errorf("BYE: %v", err)
	}
	e.primary.mu.Lock()
	n := e.primary.options
	e.primary.mu.Unlock()
	if n > 0 {
		msg := fmt.Sprintf("options_interval 0 taken as a default interval: "+
			"%d OPTIONS reached the primary with options_interval: 0s", n)
		t.Fatal(msg)
	}
}

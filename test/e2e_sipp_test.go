//go:build e2e

package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The e2e setup: SIPp plays the PBX on the LAN side (UDP) and the trunk on
// the WAN side (UDP or TCP; SIPp 3.6.1 has no TLS, so srtp is off), esbc runs
// as a built binary between them with ephemeral ports.
//
//	PBX (SIPp) ──udp── esbc LAN │ esbc WAN ──udp/tcp── trunk (SIPp)

const (
	pcapG711a = "/usr/share/sip-tester/g711a.pcap" // Debian sip-tester: 236 PCMA packets
	dialled   = "916502530000"                     // access code 9 + a valid NANP number
	e164      = "+16502530000"
	fromUser  = "990500000231"
	callerID  = "+14155550100"
)

// e2eNet holds the ports of one test.
type e2eNet struct {
	dir                 string
	admin, lan, wan     int
	pbx, pbxMedia       int
	trunk, trunkMedia   int
	caller, callerMedia int // the SIPp UAC (PBX side for outbound, trunk side for inbound)
	rtpLo, rtpHi        int
	trunkTransport      string
	register            bool // the trunk uses digest auth and registers
}

func newE2ENet(t *testing.T, trunkTransport string) *e2eNet {
	t.Helper()
	n := &e2eNet{dir: t.TempDir(), trunkTransport: trunkTransport}
	n.admin, n.lan, n.wan = e2eFreePort(t), e2eFreePort(t), e2eFreePort(t)
	n.pbx, n.trunk, n.caller = e2eFreePort(t), e2eFreePort(t), e2eFreePort(t)
	n.pbxMedia, n.trunkMedia, n.callerMedia = e2eFreeMediaPort(t), e2eFreeMediaPort(t), e2eFreeMediaPort(t)
	// A media range of 2,000 ports above the ephemeral range's usual start
	// is unlikely to be taken; esbc reports a clash at start-up anyway.
	n.rtpLo = 20000 + 2*(os.Getpid()%2000)
	n.rtpHi = n.rtpLo + 1999
	return n
}

func (n *e2eNet) config() string {
	return fmt.Sprintf(`
log: { level: info, format: json }
admin: { listen: "127.0.0.1:%[1]d" }
shutdown_grace: 5s
lan:
  listen: ["udp://127.0.0.1:%[2]d"]
  advertise: 127.0.0.1
  pbx: { uri: "sip:127.0.0.1:%[4]d;transport=udp", trusted: true }
  acl: { allow: ["127.0.0.0/8"] }
wan:
  listen: ["udp://127.0.0.1:%[3]d", "tcp://127.0.0.1:%[3]d"]
  advertise: 127.0.0.1
trunks:
  - name: sipp
    domain: trunk.example.test
    transport: %[6]s
    servers: ["127.0.0.1:%[5]d"]
    auth: %[12]s
    from_user: "%[9]s"
    caller_id: "%[10]s"
    allowed_caller_ids: ["%[10]s"]
    trust_pai: true
    channels: 300
    srtp: "off"
    codecs: [PCMA, PCMU, telephone-event]
    emergency: false
    options_interval: 1h
    failover_timeout: 2s
numbering: { country_code: "1", national_prefix: "1", international_prefix: "011" }
routes:
  outbound:
    - { match: '^9(\d+)$', number: '$1', trunk: sipp }
  inbound:
    - { match: '^\+16502530000$', extension: "200" }
    - { match: '.*', extension: "100" }
security:
  rate_limit: { per_ip: 100000, burst: 200000, ban: 1s }
media:
  rtp_ports: "%[7]d-%[8]d"
  inactivity_timeout: 30s
cdr: { file: "%[11]s" }
`, n.admin, n.lan, n.wan, n.pbx, n.trunk, n.trunkTransport, n.rtpLo, n.rtpHi, fromUser, callerID,
		filepath.Join(n.dir, "cdr.jsonl"), n.auth())
}

// auth is the trunk's auth key: ip, or digest registration when n.register.
func (n *e2eNet) auth() string {
	if !n.register {
		return "{ method: ip }"
	}
	return `{ method: digest, username: "` + fromUser + `", password: "s3cr3t", register: true, register_expires: 60s }`
}

func sippTransport(tr string) string {
	if tr == "tcp" {
		return "t1"
	}
	return "u1"
}

// uas starts a SIPp UAS (answering side) on port/media with scenario sf.
func (n *e2eNet) uas(t *testing.T, name, sf, transport string, port, media int) *e2eSIPp {
	t.Helper()
	s := e2eStartSIPp(t, n.dir, name, true,
		"-sf", e2eScenario(t, sf), "-t", sippTransport(transport),
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-mp", strconv.Itoa(media), "-rtp_echo",
		"-max_socket", "1000")
	waitSIPpListening(t, s, transport, port)
	return s
}

// waitSIPpListening waits until SIPp has bound its SIP port.
func waitSIPpListening(t *testing.T, s *e2eSIPp, transport string, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			t.Fatalf("sipp %s exited: %v\n%s", s.name, s.err, s.file(filepath.Join(s.dir, "stdout.log"), 20))
		default:
		}
		if e2ePortBound(transport, port) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("sipp %s did not bind %s/%d", s.name, transport, port)
}

// uac runs a SIPp UAC toward target until it has placed calls calls at rate
// per second, each held hold; it returns the SIPp process after it exited.
func (n *e2eNet) uac(t *testing.T, name, sf, transport string, target, service string, calls, rate int, hold time.Duration, keys ...string) *e2eSIPp {
	t.Helper()
	args := []string{
		fmt.Sprintf("127.0.0.1:%d", targetPort(n, target)),
		"-sf", e2eScenario(t, sf), "-t", sippTransport(transport),
		"-i", "127.0.0.1", "-p", strconv.Itoa(n.caller), "-mp", strconv.Itoa(n.callerMedia),
		"-s", service, "-m", strconv.Itoa(calls), "-r", strconv.Itoa(rate),
		"-d", strconv.Itoa(int(hold / time.Millisecond)),
		"-recv_timeout", "10000", "-timeout", "120", "-timeout_error",
	}
	// SIPp keeps the first value of a -key: the caller's keys go first.
	args = append(args, keys...)
	args = append(args, "-key", "pcap", pcapG711a, "-key", "pai", "4155550100", "-key", "privacy", "none")
	s := e2eStartSIPp(t, n.dir, name, true, args...)
	err := s.wait(t, 150*time.Second)
	c := s.counts(t)
	t.Logf("sipp %s: %d created, %d successful, %d failed (exit %v)", name,
		c["Outgoing calls created"], c["Successful call"], c["Failed call"], err)
	if err != nil || c["Successful call"] != calls || c["Failed call"] != 0 {
		t.Errorf("sipp %s: want %d successful and 0 failed calls, got %v (exit %v)\nerrors:\n%s\nscreen:\n%s",
			name, calls, c, err, s.file(s.errFile, 30), s.file(s.screenFile, 30))
	}
	return s
}

func targetPort(n *e2eNet, target string) int {
	if target == "wan" {
		return n.wan
	}
	return n.lan
}

// cdrs reads esbc's CDR file.
func (n *e2eNet) cdrs(t *testing.T) []map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join(n.dir, "cdr.jsonl"))
	if err != nil {
		t.Fatalf("cdr: %v", err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("cdr line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// waitCDRs waits until esbc has written want CDR lines (its writer is
// asynchronous) and returns them.
func (n *e2eNet) waitCDRs(t *testing.T, want int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got []map[string]any
		if _, err := os.Stat(filepath.Join(n.dir, "cdr.jsonl")); err == nil {
			got = n.cdrs(t)
		}
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func legPackets(cdr map[string]any, leg string) float64 {
	l, _ := cdr[leg].(map[string]any)
	v, _ := l["packets"].(float64)
	return v
}

// checkMedia: RTP crossed esbc on both legs of most calls. A call's first
// packets race its 200 OK, so a few calls may miss some; none may have none
// on both legs.
func checkMedia(t *testing.T, cdrs []map[string]any) {
	t.Helper()
	withMedia := 0
	for _, c := range cdrs {
		if legPackets(c, "lan") > 0 && legPackets(c, "wan") > 0 {
			withMedia++
		}
	}
	t.Logf("CDRs: %d, with RTP relayed on both legs: %d", len(cdrs), withMedia)
	if withMedia < len(cdrs)*9/10 || withMedia == 0 {
		t.Errorf("only %d of %d calls relayed RTP on both legs", withMedia, len(cdrs))
	}
}

// Outbound: PBX → esbc → trunk, 200 calls at 20 calls/s with G.711 played
// and echoed for 1 s each, 0 failed; over UDP and over TCP toward the trunk.
// The INVITEs the trunk received carry the trunk's identity rules and
// nothing of the LAN.
func TestSIPpOutbound(t *testing.T) {
	e2eRequireTool(t, "sipp")
	e2eLeakCheck(t)
	for _, tr := range []string{"udp", "tcp"} {
		t.Run(tr, func(t *testing.T) {
			n := newE2ENet(t, tr)
			trunk := n.uas(t, "trunk", "uas_answer.xml", tr, n.trunk, n.trunkMedia)
			p := e2eStartESBC(t, n.dir, n.config(), fmt.Sprintf("127.0.0.1:%d", n.admin))
			pbx := n.uac(t, "pbx", "uac_call.xml", "udp", "lan", dialled, 200, 20, time.Second)
			checkTrunkInvites(t, n, pbx, trunk, false)
			checkCallee(t, trunk, 200)
			checkMedia(t, n.waitCDRs(t, 200))
			if v := p.metric(t, "esbc_trunk_channels_active", "trunk=sipp"); v != 0 {
				t.Errorf("esbc_trunk_channels_active = %v after all calls ended", v)
			}
		})
	}
}

// Inbound: trunk → esbc → PBX, the same load; the PBX gets the extension
// the inbound route maps the number to.
func TestSIPpInbound(t *testing.T) {
	e2eRequireTool(t, "sipp")
	e2eLeakCheck(t)
	for _, tr := range []string{"udp", "tcp"} {
		t.Run(tr, func(t *testing.T) {
			n := newE2ENet(t, tr)
			// The trunk's SIPp sends from its server address (the trunk's
			// "servers" entry), as inbound calls are accepted only from there.
			n.caller = n.trunk
			pbx := n.uas(t, "pbx", "uas_answer.xml", "udp", n.pbx, n.pbxMedia)
			e2eStartESBC(t, n.dir, n.config(), fmt.Sprintf("127.0.0.1:%d", n.admin))
			n.uac(t, "trunk", "uac_call.xml", tr, "wan", e164, 200, 20, time.Second)
			pbx.stop()
			checkCallee(t, pbx, 200)
			invites := requests(pbx.messages(t), "INVITE", false)
			if len(invites) < 200 {
				t.Fatalf("PBX received %d INVITEs, want 200", len(invites))
			}
			for _, inv := range invites[:1] {
				if u := requestUser(inv.StartLine); u != "200" {
					t.Errorf("PBX Request-URI %q: want extension 200 (routes.inbound)", inv.StartLine)
				}
				if strings.Contains(inv.Raw, "X-PBX-Internal") {
					t.Errorf("an X- header crossed to the PBX:\n%s", inv.Raw)
				}
			}
			checkMedia(t, n.waitCDRs(t, 200))
		})
	}
}

// Hold and resume by re-INVITE from the PBX, 20 calls, media before and
// after; the trunk checks the hold offer (sendonly) and the resume offer
// (sendrecv), the PBX checks the answers (recvonly, sendrecv).
func TestSIPpHoldResume(t *testing.T) {
	e2eRequireTool(t, "sipp")
	e2eLeakCheck(t)
	n := newE2ENet(t, "udp")
	trunk := n.uas(t, "trunk", "uas_hold.xml", "udp", n.trunk, n.trunkMedia)
	e2eStartESBC(t, n.dir, n.config(), fmt.Sprintf("127.0.0.1:%d", n.admin))
	n.uac(t, "pbx", "uac_hold.xml", "udp", "lan", dialled, 20, 10, 500*time.Millisecond)
	trunk.stop()
	if c := trunk.counts(t); c["Successful call"] < 20 || c["Failed call"] != 0 {
		t.Errorf("trunk side: %v (the hold/resume offers did not arrive as expected)\n%s", c, trunk.file(trunk.errFile, 20))
	}
	checkMedia(t, n.waitCDRs(t, 20))
}

// CANCEL before answer: the PBX cancels while the trunk rings; the trunk
// gets the CANCEL, answers 487, and the PBX gets its 487. 20 calls.
func TestSIPpCancel(t *testing.T) {
	e2eRequireTool(t, "sipp")
	e2eLeakCheck(t)
	n := newE2ENet(t, "udp")
	trunk := n.uas(t, "trunk", "uas_cancel.xml", "udp", n.trunk, n.trunkMedia)
	p := e2eStartESBC(t, n.dir, n.config(), fmt.Sprintf("127.0.0.1:%d", n.admin))
	n.uac(t, "pbx", "uac_cancel.xml", "udp", "lan", dialled, 20, 10, 0)
	trunk.stop()
	if c := trunk.counts(t); c["Successful call"] < 20 || c["Failed call"] != 0 {
		t.Errorf("trunk side: %v\n%s", c, trunk.file(trunk.errFile, 20))
	}
	if v := p.metric(t, "esbc_trunk_channels_active", "trunk=sipp"); v != 0 {
		t.Errorf("esbc_trunk_channels_active = %v after cancelled calls", v)
	}
}

// Privacy: id from the PBX: the trunk gets an anonymous From, the caller
// ID only in P-Asserted-Identity (the trunk is trusted for it), and
// Privacy: id kept.
func TestSIPpPrivacy(t *testing.T) {
	e2eRequireTool(t, "sipp")
	e2eLeakCheck(t)
	n := newE2ENet(t, "udp")
	trunk := n.uas(t, "trunk", "uas_answer.xml", "udp", n.trunk, n.trunkMedia)
	e2eStartESBC(t, n.dir, n.config(), fmt.Sprintf("127.0.0.1:%d", n.admin))
	pbx := n.uac(t, "pbx", "uac_call.xml", "udp", "lan", dialled, 5, 5, 200*time.Millisecond, "-key", "privacy", "id")
	checkTrunkInvites(t, n, pbx, trunk, true)
}

// checkCallee: the answering SIPp (stopped) saw every call complete in
// order (an ACK overtaken by the BYE, for one, fails the call there).
// An OPTIONS keepalive counts as one more successful "call".
func checkCallee(t *testing.T, s *e2eSIPp, calls int) {
	t.Helper()
	c := s.counts(t)
	if c["Successful call"] < calls || c["Failed call"] != 0 {
		t.Errorf("sipp %s (callee): %v, want %d successful and 0 failed\n%s", s.name, c, calls, s.file(s.errFile, 20))
	}
}

// requests returns the requests with method that a SIPp process received
// (or sent).
func requests(msgs []e2eSIPMessage, method string, sent bool) []e2eSIPMessage {
	var out []e2eSIPMessage
	for _, m := range msgs {
		if m.Sent == sent && strings.HasPrefix(m.StartLine, method+" ") {
			out = append(out, m)
		}
	}
	return out
}

// requestUser is the user part of a request line's URI.
func requestUser(startLine string) string {
	f := strings.Fields(startLine)
	if len(f) < 2 {
		return ""
	}
	u := strings.TrimPrefix(strings.TrimPrefix(f[1], "sips:"), "sip:")
	user, _, ok := strings.Cut(u, "@")
	if !ok {
		return ""
	}
	return user
}

// uriUser is the user part of the URI in a name-addr header value.
func uriUser(v string) string {
	if i := strings.Index(v, "<"); i >= 0 {
		v = v[i+1:]
		if j := strings.Index(v, ">"); j >= 0 {
			v = v[:j]
		}
	}
	return requestUser("X " + v)
}

// checkTrunkInvites checks the INVITEs the trunk received (issue 4 e2e):
// E.164 Request-URI, From user = from_user at the trunk domain (anonymous
// with privacy), P-Asserted-Identity = the caller ID, Privacy, and nothing
// of the LAN: no internal header, no PBX User-Agent, no LAN Call-ID, no LAN
// port.
func checkTrunkInvites(t *testing.T, n *e2eNet, pbx, trunk *e2eSIPp, privacy bool) {
	t.Helper()
	trunk.stop() // flush its message log
	invites := requests(trunk.messages(t), "INVITE", false)
	if len(invites) == 0 {
		t.Fatal("the trunk received no INVITE")
	}
	lanCallIDs := map[string]bool{}
	for _, m := range requests(pbx.messages(t), "INVITE", true) {
		lanCallIDs[m.Header("call-id")] = true
	}
	bad := 0
	for i, inv := range invites {
		var errs []string
		if u := requestUser(inv.StartLine); u != e164 {
			errs = append(errs, fmt.Sprintf("Request-URI user %q, want %q", u, e164))
		}
		from := inv.Header("from")
		if privacy {
			if !strings.Contains(strings.ToLower(from), "anonymous") {
				errs = append(errs, fmt.Sprintf("From %q, want anonymous (Privacy: id)", from))
			}
			if pv := inv.Header("privacy"); !strings.Contains(pv, "id") {
				errs = append(errs, fmt.Sprintf("Privacy %q, want id", pv))
			}
		} else if u := uriUser(from); u != fromUser || !strings.Contains(from, "@trunk.example.test") {
			errs = append(errs, fmt.Sprintf("From %q, want user %s at the trunk domain", from, fromUser))
		}
		pais := inv.Headers["p-asserted-identity"]
		if len(pais) == 0 {
			errs = append(errs, "no P-Asserted-Identity")
		}
		for _, pai := range pais {
			if uriUser(pai) != callerID && !strings.Contains(pai, "tel:"+callerID) {
				errs = append(errs, fmt.Sprintf("P-Asserted-Identity %q, want %s (the PBX's own must not cross)", pai, callerID))
			}
		}
		for _, h := range []string{"from", "to", "call-id", "cseq", "max-forwards", "content-type", "content-length", "privacy", "user-agent"} {
			if n := len(inv.Headers[h]); n > 1 {
				errs = append(errs, fmt.Sprintf("%d %s headers: %q", n, h, inv.Headers[h]))
			}
		}
		for _, h := range []string{"x-pbx-internal"} {
			if v := inv.Header(h); v != "" {
				errs = append(errs, fmt.Sprintf("internal header %s: %s crossed", h, v))
			}
		}
		if strings.Contains(inv.Raw, "PBX-SIPp") {
			errs = append(errs, "the PBX's User-Agent crossed")
		}
		if lanCallIDs[inv.Header("call-id")] {
			errs = append(errs, "the LAN Call-ID crossed")
		}
		for _, port := range []int{n.lan, n.caller, n.callerMedia} {
			if strings.Contains(inv.Raw, ":"+strconv.Itoa(port)) || strings.Contains(inv.Raw, " "+strconv.Itoa(port)+" ") {
				errs = append(errs, fmt.Sprintf("LAN port %d appears", port))
			}
		}
		if len(errs) > 0 {
			bad++
			if bad <= 3 {
				t.Errorf("trunk INVITE %d:\n  %s\n%s", i, strings.Join(errs, "\n  "), inv.Raw)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d trunk INVITEs broke the identity/topology rules", bad, len(invites))
	}
}

var registeredRE = regexp.MustCompile(`"state":\s*"registered"`)

// Registration through the binary: esbc registers with the trunk's
// registrar (SIPp, challenging with 401 and checking the digest with its own
// verifyauth), /api/v1/registrations shows it, and SIGTERM removes the
// binding (REGISTER with Expires: 0, also authenticated).
func TestSIPpRegister(t *testing.T) {
	e2eRequireTool(t, "sipp")
	e2eLeakCheck(t)
	n := newE2ENet(t, "udp")
	n.register = true
	reg := e2eStartSIPp(t, n.dir, "registrar", true,
		"-sf", e2eScenario(t, "uas_registrar.xml"), "-t", "u1", "-i", "127.0.0.1",
		"-p", strconv.Itoa(n.trunk), "-mp", strconv.Itoa(n.trunkMedia),
		"-key", "user", fromUser, "-key", "password", "s3cr3t", "-deadcall_wait", "0")
	waitSIPpListening(t, reg, "udp", n.trunk)
	p := e2eStartESBC(t, n.dir, n.config(), fmt.Sprintf("127.0.0.1:%d", n.admin))

	deadline := time.Now().Add(15 * time.Second)
	var body string
	for time.Now().Before(deadline) {
		body = failoverAdmin{base: p.admin}.get(t, "/api/v1/registrations")
		if registeredRE.MatchString(body) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !registeredRE.MatchString(body) {
		t.Fatalf("/api/v1/registrations: %s\nregistrar errors:\n%s", body, reg.file(reg.errFile, 20))
	}
	if v := p.metric(t, "esbc_trunk_registrations", "trunk=sipp", "state=registered"); v != 1 {
		t.Errorf("esbc_trunk_registrations{state=registered} = %v", v)
	}
	p.stop(t)
	reg.stop()

	// The registrar's 200 repeats the Expires it granted: 0 confirms the
	// unregistration. Pre-emptive credentials with an old nonce draw a new
	// 401 first, so there are more REGISTERs than 200s.
	var regOK, unregOK, forbidden int
	for _, m := range reg.messages(t) {
		switch {
		case !m.Sent && strings.HasPrefix(m.StartLine, "REGISTER "):
			if c := m.Header("contact"); !strings.Contains(c, fmt.Sprintf("127.0.0.1:%d", n.wan)) {
				t.Errorf("Contact %q: want the advertised WAN address 127.0.0.1:%d", c, n.wan)
			}
		case m.Sent && strings.HasPrefix(m.StartLine, "SIP/2.0 200") && strings.Contains(m.Header("cseq"), "REGISTER"):
			if strings.TrimSpace(m.Header("expires")) == "0" {
				unregOK++
			} else {
				regOK++
			}
		case m.Sent && strings.HasPrefix(m.StartLine, "SIP/2.0 403"):
			forbidden++
		}
	}
	t.Logf("registrar: %d registrations and %d unregistrations accepted, %d digests refused", regOK, unregOK, forbidden)
	if regOK == 0 || unregOK != 1 || forbidden != 0 {
		t.Errorf("want registrations, one unregistration on SIGTERM, every digest verified by SIPp\n%s", reg.file(reg.errFile, 20))
	}
}

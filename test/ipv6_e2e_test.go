//go:build e2e

package test

// IPv6 entry points of the built binary, and the call peer that the
// IPv6, TLS rotation and reload storm tests share: a sipgo UA on one
// address (127.0.0.1 or ::1) and transport (udp, tcp or tls) that both
// places calls (with an RTP socket and an echo check) and answers them
// (200 with an SDP of its own family and an RTP echo), so that one type
// plays the PBX and the trunk of outbound and inbound calls.
//
//	go test -race -tags e2e -run 'IPv6|Rotation|ReloadStorm' -count=1 ./test/

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// edgeUA is a call peer at ip over network (udp|tcp|tls).
type edgeUA struct {
	t       *testing.T
	name    string
	ip      string // "127.0.0.1" or "::1"
	network string // "udp" | "tcp" | "tls"
	port    int    // its SIP server port
	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	cli     *sipgo.Client
	dua     *sipgo.DialogUA
	pc      net.PacketConn // udp
	ln      net.Listener   // tcp, tls
	done    chan struct{}
	media   *net.UDPConn // the answering side's RTP echo
	echo    chan struct{}

	invites, answered, byes atomic.Int64 // calls it answered; BYEs of those calls

	mu    sync.Mutex
	last  *sip.Request   // guarded by mu: the last initial INVITE it received
	users map[string]int // guarded by mu: initial INVITEs by Request-URI user
}

// newEdgeUA starts the peer's SIP server (cert: its TLS certificate for
// network tls) and media echo; roots verify esbc's certificate when it
// dials esbc over TLS. Everything is closed by t.Cleanup.
func newEdgeUA(t *testing.T, name, ip, network string, cert *cryptotls.Certificate, roots *x509.CertPool) *edgeUA {
	t.Helper()
	m, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatalf("%s media: %v", name, err)
	}
	u := &edgeUA{t: t, name: name, ip: ip, network: network, done: make(chan struct{}), media: m, echo: make(chan struct{})}
	go func() {
		defer close(u.echo)
		buf := make([]byte, 1500)
		for {
			n, from, err := m.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = m.WriteToUDP(buf[:n], from)
		}
	}()
	bind := net.JoinHostPort(ip, "0")
	switch network {
	case "udp":
		u.pc, err = net.ListenPacket("udp", bind)
	case "tcp":
		u.ln, err = net.Listen("tcp", bind)
	case "tls":
		u.ln, err = cryptotls.Listen("tcp", bind, &cryptotls.Config{Certificates: []cryptotls.Certificate{*cert}})
	}
	if err != nil {
		m.Close()
		t.Fatalf("%s: %v", name, err)
	}
	if u.pc != nil {
		u.port = u.pc.LocalAddr().(*net.UDPAddr).Port
	} else {
		u.port = u.ln.Addr().(*net.TCPAddr).Port
	}
	opts := []sipgo.UserAgentOption{sipgo.WithUserAgent(name), sipgo.WithUserAgentHostname(ip)}
	if roots != nil {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(&cryptotls.Config{RootCAs: roots}))
	}
	if u.ua, err = sipgo.NewUA(opts...); err != nil {
		t.Fatal(err)
	}
	u.srv, _ = sipgo.NewServer(u.ua)
	copts := []sipgo.ClientOption{sipgo.WithClientHostname(ip)}
	if u.pc != nil {
		copts = append(copts, sipgo.WithClientConnectionAddr(u.pc.LocalAddr().String()))
	}
	if u.cli, err = sipgo.NewClient(u.ua, copts...); err != nil {
		t.Fatal(err)
	}
	// In-dialog requests go to where the answer came from (sipgo's
	// Request.Destination writes an IPv6 Contact host without brackets).
	u.dua = &sipgo.DialogUA{Client: u.cli, ContactHDR: sip.ContactHeader{Address: u.contact("caller")}, RewriteContact: true}
	u.srv.OnInvite(u.onInvite)
	u.srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	u.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) { // the callers in these tests always hang up first
		u.byes.Add(1)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	u.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() {
		defer close(u.done)
		switch network {
		case "udp":
			_ = u.srv.ServeUDP(u.pc)
		case "tcp":
			_ = u.srv.ServeTCP(u.ln)
		case "tls":
			_ = u.srv.ServeTLS(u.ln)
		}
	}()
	if u.pc != nil && !failoverServing(u.ua, u.pc.LocalAddr().String()) {
		t.Fatalf("%s: sipgo did not take the socket", name)
	}
	t.Cleanup(func() {
		_ = u.srv.Close()
		_ = u.ua.Close()
		if u.pc != nil {
			_ = u.pc.Close()
		} else {
			_ = u.ln.Close()
		}
		<-u.done
		_ = m.Close()
		<-u.echo
	})
	return u
}

// edgePKI is the certificates of an edge test, made by b2buaE2ECA in one
// directory: the CA (ca.pem), esbc's WAN certificate (esbc.crt, esbc.key)
// and the trunk's.
type edgePKI struct {
	ca          *b2buaE2ETestCA
	esbc, trunk cryptotls.Certificate
	roots       *x509.CertPool // holds the CA
}

// newEdgePKI makes the CA in dir, esbc's certificate for esbcHosts and the
// trunk's for trunkIP and trunk.example.test.
func newEdgePKI(t *testing.T, dir, trunkIP string, esbcHosts ...string) edgePKI {
	t.Helper()
	k := edgePKI{ca: b2buaE2ECA(t, dir), roots: x509.NewCertPool()}
	k.esbc = k.ca.leaf(t, dir, "esbc", esbcHosts...)
	k.trunk = k.ca.leaf(t, dir, "trunk", trunkIP, "trunk.example.test")
	k.roots.AddCert(k.ca.cert)
	return k
}

// ipv6Require skips the test in -short mode (it builds and runs the
// binary) and where the machine has no IPv6 loopback.
func ipv6Require(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("this machine has no IPv6 loopback (::1): %v", err)
	}
	ln.Close()
}

// addr is the peer's SIP address (host:port, brackets for IPv6).
func (u *edgeUA) addr() string { return net.JoinHostPort(u.ip, strconv.Itoa(u.port)) }

// contact is a URI of the peer's SIP server with its transport.
func (u *edgeUA) contact(user string) sip.Uri {
	uri := sip.Uri{Scheme: "sip", User: user, Host: u.ip, Port: u.port}
	if u.network != "udp" {
		uri.UriParams = sip.HeaderParams{{K: "transport", V: u.network}}
	}
	return uri
}

func (u *edgeUA) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	body := failoverSDP(u.ip, u.media.LocalAddr().(*net.UDPAddr).Port)
	if req.To().Params.Has("tag") { // re-INVITE: same media
		res := sip.NewResponseFromRequest(req, 200, "OK", body)
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
		return
	}
	u.invites.Add(1)
	u.mu.Lock()
	u.last = req
	if u.users == nil {
		u.users = map[string]int{}
	}
	u.users[req.Recipient.User]++
	u.mu.Unlock()
	_ = tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil))
	res := sip.NewResponseFromRequest(req, 200, "OK", body)
	res.To().Params.Add("tag", sip.GenerateTagN(10))
	res.AppendHeader(&sip.ContactHeader{Address: u.contact("callee")})
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	u.answered.Add(1)
	_ = tx.Respond(res)
	if u.network != "udp" {
		<-tx.Done() // keep the transaction until the ACK (sipgo over TCP/TLS)
	}
}

// lastInvite is the last initial INVITE the peer answered.
func (u *edgeUA) lastInvite() *sip.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// options sends an OPTIONS to esbc's listener target over the peer's
// transport and returns the status code.
func (u *edgeUA) options(target string) (int, error) {
	host, p, _ := net.SplitHostPort(target)
	port, _ := strconv.Atoi(p)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host, Port: port})
	req.SetTransport(strings.ToUpper(u.network))
	req.SetDestination(target)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := u.cli.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}

// requestUsers is how many initial INVITEs the peer received per
// Request-URI user.
func (u *edgeUA) requestUsers() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[string]int, len(u.users))
	for k, v := range u.users {
		m[k] = v
	}
	return m
}

// callThrough places a call to number at esbc's listener target, checks
// media both ways and hangs up (the BYE must succeed); what names the call
// in failures.
func (u *edgeUA) callThrough(t *testing.T, p *serviceProc, target, number, what string) {
	t.Helper()
	c, err := u.call(target, number)
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, failoverTail(p.logs(), 30))
	}
	mediaOK(t, what, c)
	if err := c.hangup(); err != nil {
		t.Errorf("%s: BYE: %v", what, err)
	}
}

// edgeCall is a call the peer placed.
type edgeCall struct {
	u      *edgeUA
	sess   *sipgo.DialogClientSession
	media  *net.UDPConn
	remote *net.UDPAddr // esbc's media address from the answer
	family string       // the answer's c= address type (IP4 | IP6)
	seq    uint16
}

// call places a call to number at esbc's listener target (host:port)
// over the peer's transport and waits (bounded) for the answer.
func (u *edgeUA) call(target, number string) (*edgeCall, error) {
	m, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(u.ip)})
	if err != nil {
		return nil, err
	}
	host, p, _ := net.SplitHostPort(target)
	port, _ := strconv.Atoi(p)
	uri := sip.Uri{Scheme: "sip", User: number, Host: host, Port: port}
	if u.network != "udp" {
		uri.UriParams = sip.HeaderParams{{K: "transport", V: u.network}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+14155550199", Host: u.ip},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}}
	req := sip.NewRequest(sip.INVITE, uri)
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: number, Host: host}})
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(failoverSDP(u.ip, m.LocalAddr().(*net.UDPAddr).Port))
	req.SetDestination(target) // sipgo would write an IPv6 host:port without brackets
	s, err := u.dua.WriteInvite(ctx, req)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("invite: %w", err)
	}
	if _, err := failoverEstablish(ctx, s, m); err != nil {
		return nil, err
	}
	remote, fam, err := failoverSDPAddr(s.InviteResponse.Body())
	if err != nil {
		c := &edgeCall{u: u, sess: s, media: m}
		_ = c.hangup()
		return nil, err
	}
	return &edgeCall{u: u, sess: s, media: m, remote: remote, family: fam}, nil
}

func (c *edgeCall) echoes(n int) int { return rtpEchoes(c.media, c.remote, &c.seq, 0xed6e, n) }

// hangup sends BYE from the caller over the connection the dialog lives
// on (sipgo issue #361: a BYE over TCP/TLS could open another one).
func (c *edgeCall) hangup() error {
	defer c.media.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if c.u.network == "udp" {
		return c.sess.Bye(ctx)
	}
	bye := sip.NewRequest(sip.BYE, c.sess.InviteResponse.Contact().Address)
	bye.Laddr = c.sess.InviteRequest.Laddr
	return c.sess.WriteBye(ctx, bye)
}

// edgeConfig is esbc on ip (127.0.0.1 or ::1): LAN udp+tcp toward the
// PBX at pbxPort (udp), WAN tls toward one trunk "edge" at trunkPort over
// TLS (srtp off: plain RTP that the peers echo), certificates made by
// b2buaE2ECA in dir, ACL lists as YAML flow-list items, admin on ip.
func edgeConfig(ip, dir string, pbxPort, trunkPort int, lanAllow, lanDeny, wanAllow, wanDeny, rtp string) []byte {
	host := ip
	if strings.Contains(ip, ":") {
		host = "[" + ip + "]"
	}
	return []byte(fmt.Sprintf(`
log: { level: info, format: json }
admin: { listen: "%[1]s:0" }
shutdown_grace: 5s
lan:
  listen: ["udp://%[1]s:0", "tcp://%[1]s:0"]
  advertise: "%[2]s"
  pbx: { uri: "sip:%[1]s:%[3]d;transport=udp", trusted: true }
  acl: { allow: [%[4]s], deny: [%[5]s] }
wan:
  listen: ["tls://%[1]s:0"]
  advertise: "%[2]s"
  tls: { cert_file: %[6]q, key_file: %[7]q, ca_file: %[8]q, min_version: "1.2" }
  acl: { allow: [%[9]s], deny: [%[10]s] }
trunks:
  - name: edge
    domain: trunk.example.test
    transport: tls
    servers: ["%[1]s:%[11]d"]
    auth: { method: ip }
    from_user: "990500000231"
    caller_id: "+14155550100"
    allowed_caller_ids: ["+14155550100"]
    trust_pai: true
    srtp: "off"
    codecs: [PCMU, telephone-event]
    options_interval: 1s
    failover_timeout: 2s
numbering: { country_code: "1", national_prefix: "1", international_prefix: "011" }
routes:
  outbound:
    - { match: '^9(\d+)$', number: '$1', trunk: edge }
  inbound:
    - { match: '.*', extension: "100" }
security:
  rate_limit: { per_ip: 10000, burst: 20000, ban: 1s }
media:
  rtp_ports: "%[12]s"
  inactivity_timeout: 30s
cdr: { file: "" }
`, host, ip, pbxPort, lanAllow, lanDeny, filepath.Join(dir, "esbc.crt"), filepath.Join(dir, "esbc.key"),
		filepath.Join(dir, "ca.pem"), wanAllow, wanDeny, trunkPort, rtp))
}

// ipv6Calls is /api/v1/calls.
type ipv6Calls struct {
	Calls []struct {
		Direction string
		Trunk     string
		Legs      []struct {
			Side        string
			Transport   string
			Peer        string
			MediaLocal  string `json:"media_local"`
			MediaRemote string `json:"media_remote"`
		}
	}
	Active int
}

// TestIPv6EntryPoints: esbc with its LAN (udp, tcp) and WAN (tls)
// listeners on [::1], a PBX (udp, and one over tcp) and a TLS trunk on
// ::1. Outbound calls complete with RTP relayed over ::1 and IPv6 SDP on
// both legs and show in /api/v1/calls with IPv6 peers; the trunk's TLS
// OPTIONS probe over ::1 marks it up; an inbound call from the trunk
// reaches the PBX at lan.pbx.uri "sip:[::1]:port" the same way. Then
// the LAN and WAN ACLs are reloaded to deny ::1/128 (a datagram from ::1
// gets nothing, a TCP connection is closed at accept, a TLS handshake
// fails; all counted in esbc_acl_dropped_total) and back to allow
// ::1/128 (admitted again).
func TestIPv6EntryPoints(t *testing.T) {
	ipv6Require(t)
	failoverLeakCheck(t)
	dir := t.TempDir()
	pki := newEdgePKI(t, dir, "::1", "::1")
	trunkCert, roots := pki.trunk, pki.roots

	pbx := newEdgeUA(t, "pbx", "::1", "udp", nil, nil)
	trunk := newEdgeUA(t, "trunk", "::1", "tls", &trunkCert, roots)
	rtpRange := reloadRTPRange()
	cfg := filepath.Join(dir, "esbc.yaml")
	write := func(lanAllow, lanDeny, wanDeny string) {
		serviceWrite(t, cfg, edgeConfig("::1", dir, pbx.port, trunk.port, lanAllow, lanDeny, `"::1/128"`, wanDeny, rtpRange))
	}
	// check-config refuses the PBX's IPv6 address without brackets, naming
	// the key (sipgo would read "sip:::1:port" as no host at all).
	bin := serviceBuild(t, dir)
	bad := strings.Replace(string(edgeConfig("::1", dir, pbx.port, trunk.port, `"::1/128"`, "", `"::1/128"`, "", rtpRange)),
		"sip:[::1]:", "sip:::1:", 1)
	serviceWrite(t, cfg, []byte(bad))
	if out, err := exec.Command(bin, "check-config", "--config", cfg).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "lan.pbx.uri: IPv6 address") {
		t.Errorf("check-config with lan.pbx.uri \"sip:::1:port\": %v\n%s", err, out)
	}
	write(`"::1/128"`, "", "")
	r := &reloadRig{bin: bin, cfg: cfg}
	p := r.start(t)
	for _, k := range []string{"admin", "lan/udp", "lan/tcp", "wan/tls"} {
		if a := p.addr(k); !strings.HasPrefix(a, "[::1]:") {
			t.Fatalf("%s listener bound at %q, want [::1]:port\n%s", k, a, failoverTail(p.logs(), 20))
		}
	}
	// Ready to call: both UDP/TCP LAN listeners answer OPTIONS from ::1 and
	// the trunk's server is up in the health table (OPTIONS over TLS on ::1).
	reloadWaitTrunkUp(t, p, "::1/"+trunk.addr()+"/tls", "lan/udp", "lan/tcp")
	admin := failoverAdmin{base: "http://" + p.addr("admin")}

	checkLeg := func(what string, c *edgeCall, callee *edgeUA) {
		t.Helper()
		if c.family != "IP6" || !c.remote.IP.Equal(net.IPv6loopback) {
			t.Errorf("%s: esbc's answer has c=IN %s %s, want IP6 ::1", what, c.family, c.remote.IP)
		}
		inv := callee.lastInvite()
		a, fam, err := failoverSDPAddr(inv.Body())
		if err != nil || fam != "IP6" || !a.IP.Equal(net.IPv6loopback) {
			t.Errorf("%s: esbc's offer to the %s: %v %s %v\n%s", what, callee.name, a, fam, err, inv.Body())
		}
		if via := inv.Via(); via == nil || via.Host != "::1" {
			t.Errorf("%s: Via of esbc's INVITE to the %s: %v", what, callee.name, via)
		}
		mediaOK(t, what, c)
	}
	showsCall := func(what, dir string) {
		t.Helper()
		var cs ipv6Calls
		body := admin.get(t, "/api/v1/calls")
		if err := json.Unmarshal([]byte(body), &cs); err != nil {
			t.Fatalf("/api/v1/calls: %v\n%s", err, body)
		}
		if cs.Active != 1 || len(cs.Calls) != 1 || cs.Calls[0].Direction != dir || len(cs.Calls[0].Legs) != 2 {
			t.Errorf("%s: /api/v1/calls does not show the one %s call:\n%s", what, dir, body)
			return
		}
		for _, l := range cs.Calls[0].Legs {
			for _, a := range []string{l.Peer, l.MediaLocal, l.MediaRemote} {
				if ap, err := netip.ParseAddrPort(a); err != nil || ap.Addr() != netip.IPv6Loopback() {
					t.Errorf("%s: %s leg address %q is not [::1]:port\n%s", what, l.Side, a, body)
				}
			}
		}
	}

	// call places a call from caller to number at esbc's listener key and
	// checks both legs (checkLeg); the caller hangs up.
	call := func(what string, caller *edgeUA, key, number string, callee *edgeUA) *edgeCall {
		t.Helper()
		c, err := caller.call(p.addr(key), number)
		if err != nil {
			t.Fatalf("%s over ::1: %v\n%s", what, err, failoverTail(p.logs(), 30))
		}
		checkLeg(what, c, callee)
		return c
	}

	// Outbound: PBX (udp ::1) → esbc LAN → trunk (tls ::1).
	out := call("outbound call", pbx, "lan/udp", "916502530000", trunk)
	if u := trunk.lastInvite().Recipient.User; u != "+16502530000" {
		t.Errorf("outbound call: Request-URI user at the trunk %q, want +16502530000", u)
	}
	showsCall("outbound call", "outbound")
	if err := out.hangup(); err != nil {
		t.Errorf("outbound call: BYE: %v", err)
	}
	// The same from a PBX over TCP on ::1 (LAN tcp listener).
	pbxTCP := newEdgeUA(t, "pbx-tcp", "::1", "tcp", nil, nil)
	overTCP := call("outbound call over TCP", pbxTCP, "lan/tcp", "916502530000", trunk)
	if err := overTCP.hangup(); err != nil {
		t.Errorf("outbound call over TCP: BYE: %v", err)
	}

	// Inbound: trunk (tls ::1, from an ephemeral port) → esbc WAN → PBX.
	in := call("inbound call", trunk, "wan/tls", "+14155550100", pbx)
	if u := pbx.lastInvite().Recipient.User; u != "100" {
		t.Errorf("inbound call: Request-URI user at the PBX %q, want extension 100", u)
	}
	showsCall("inbound call", "inbound")
	if err := in.hangup(); err != nil {
		t.Errorf("inbound call: BYE: %v", err)
	}
	if !failoverPoll(10*time.Second, func() bool { return pbx.byes.Load() == 1 }) {
		t.Errorf("BYEs at the PBX: %d; want 1", pbx.byes.Load())
	}
	if !failoverPoll(10*time.Second, func() bool { return trunk.byes.Load() == 2 }) {
		t.Errorf("BYEs at the trunk: %d; want 2", trunk.byes.Load())
	}

	// ACL: deny ::1/128 on both sides (reload), then allow it again.
	reload := func(lanAllow, lanDeny, wanDeny string) {
		t.Helper()
		reloadApply(t, p, "reload", func() { write(lanAllow, lanDeny, wanDeny) })
	}
	dropped := func(side string) float64 { return p.metricSum(t, "esbc_acl_dropped_total", `side="`+side+`"`) }
	reload(`"::1/128"`, `"::1/128"`, `"::1/128"`)
	lanBefore, wanBefore := dropped("lan"), dropped("wan")
	probe := secUDP(t, "::1")
	secSend(t, probe, p.addr("lan/udp"))
	if !failoverPoll(10*time.Second, func() bool { return dropped("lan") > lanBefore }) {
		t.Errorf("a datagram from ::1 with ::1/128 denied: esbc_acl_dropped_total{side=lan} stayed %v", lanBefore)
	}
	secNoDatagram(t, probe)
	// TCP (LAN) is closed at accept: EOF, not a read timeout.
	c, err := net.Dial("tcp", p.addr("lan/tcp"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write(secRawOptions(c.LocalAddr().String()))
	if n, err := c.Read(make([]byte, 100)); n != 0 || secTimeout(err) {
		t.Errorf("TCP from ::1 with ::1/128 denied: read %d bytes, %v; want the connection closed", n, err)
	}
	c.Close()
	// TLS (WAN): no handshake.
	if tc, err := cryptotls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", p.addr("wan/tls"),
		&cryptotls.Config{RootCAs: roots, ServerName: "::1"}); err == nil {
		tc.Close()
		t.Errorf("TLS handshake from ::1 with ::1/128 denied on the WAN succeeded")
	}
	if !failoverPoll(10*time.Second, func() bool { return dropped("wan") > wanBefore }) {
		t.Errorf("TLS from ::1 with ::1/128 denied: esbc_acl_dropped_total{side=wan} stayed %v", wanBefore)
	}

	reload(`"::1/128"`, "", "")
	if res := serviceOptions(t, p.addr("lan/tcp"), "TCP", nil); res.StatusCode != 200 {
		t.Errorf("OPTIONS over TCP from ::1 with ::1/128 allowed again: %s", res.StartLine())
	}
	if code, err := trunk.options(p.addr("wan/tls")); code != 200 {
		t.Errorf("OPTIONS over TLS from ::1 with ::1/128 allowed again: %d %v", code, err)
	}
	pbx.callThrough(t, p, p.addr("lan/udp"), "916502530000", "call from ::1 with ::1/128 allowed again")
	if strings.Contains(p.logs(), "panic") {
		t.Errorf("esbc logged a panic:\n%s", failoverTail(p.logs(), 40))
	}
}

// metricSum is the sum of the samples of a metric family whose line
// contains every given label text (e.g. `side="lan"`); 0 when absent.
func (p *serviceProc) metricSum(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	sum := 0.0
	for _, l := range strings.Split(p.get(t, "/metrics"), "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(l, lb)
		}
		if f := strings.Fields(l); ok && len(f) >= 2 {
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// TestIPv6WANIPv4LAN: the common dual-stack deployment, an IPv4 LAN
// (PBX on 127.0.0.1, udp) and an IPv6 WAN (TLS trunk on ::1). The LAN
// listener is the dual-stack wildcard [::] (IPv4 sources arrive as
// ::ffff:a.b.c.d) with an IPv4 ACL (127.0.0.0/8 allowed, 127.0.0.2
// denied), which must apply to them. An outbound and an inbound call
// complete with media; each leg's SDP carries its own side's family (IP4
// toward the PBX, IP6 toward the trunk). wan.acl.allow
// is empty (SPEC §4: only the trunks' own server addresses), so the
// trunk's IPv6 address from "servers: [[::1]:port]" is what admits it.
func TestIPv6WANIPv4LAN(t *testing.T) {
	ipv6Require(t)
	failoverLeakCheck(t)
	dir := t.TempDir()
	pki := newEdgePKI(t, dir, "::1", "::1", "127.0.0.1")
	trunkCert, roots := pki.trunk, pki.roots
	pbx := newEdgeUA(t, "pbx", "127.0.0.1", "udp", nil, nil)
	trunk := newEdgeUA(t, "trunk", "::1", "tls", &trunkCert, roots)
	c := string(edgeConfig("::1", dir, pbx.port, trunk.port, `"127.0.0.0/8"`, `"127.0.0.2/32"`, "", "", reloadRTPRange()))
	for _, e := range [][2]string{ // the LAN side: IPv4 PBX, dual-stack listener
		{`listen: ["udp://[::1]:0", "tcp://[::1]:0"]`, `listen: ["udp://[::]:0"]`},
		{"advertise: \"::1\"\n  pbx: { uri: \"sip:[::1]:", "advertise: \"127.0.0.1\"\n  pbx: { uri: \"sip:127.0.0.1:"},
	} {
		if !strings.Contains(c, e[0]) {
			t.Fatalf("config edit: %q not in the config", e[0])
		}
		c = strings.Replace(c, e[0], e[1], 1)
	}
	cfg := filepath.Join(dir, "esbc.yaml")
	serviceWrite(t, cfg, []byte(c))
	r := &reloadRig{bin: serviceBuild(t, dir), cfg: cfg}
	p := r.start(t)
	reloadWaitTrunkUp(t, p, "::1/"+trunk.addr()+"/tls")
	check := func(what string, c *edgeCall, wantAnswer string, callee *edgeUA, wantOffer string) {
		t.Helper()
		if c.family != wantAnswer {
			t.Errorf("%s: esbc's answer to the caller has c=IN %s, want %s", what, c.family, wantAnswer)
		}
		if _, fam, err := failoverSDPAddr(callee.lastInvite().Body()); err != nil || fam != wantOffer {
			t.Errorf("%s: esbc's offer to the %s has c=IN %s (%v), want %s", what, callee.name, fam, err, wantOffer)
		}
		mediaOK(t, what, c)
		if err := c.hangup(); err != nil {
			t.Errorf("%s: BYE: %v", what, err)
		}
	}
	_, lanPort, _ := net.SplitHostPort(p.addr("lan/udp")) // [::]:port
	lan := net.JoinHostPort("127.0.0.1", lanPort)
	out, err := pbx.call(lan, "916502530000")
	if err != nil {
		t.Fatalf("outbound call (IPv4 PBX → IPv6 trunk): %v\n%s", err, failoverTail(p.logs(), 30))
	}
	check("outbound call (IPv4 PBX → IPv6 trunk)", out, "IP4", trunk, "IP6")
	in, err := trunk.call(p.addr("wan/tls"), "+14155550100")
	if err != nil {
		t.Fatalf("inbound call (IPv6 trunk → IPv4 PBX): %v\n%s", err, failoverTail(p.logs(), 30))
	}
	check("inbound call (IPv6 trunk → IPv4 PBX)", in, "IP6", pbx, "IP4")
	if !failoverPoll(10*time.Second, func() bool { return trunk.byes.Load() == 1 && pbx.byes.Load() == 1 }) {
		t.Errorf("BYEs at the callees: trunk %d, PBX %d; want 1 each", trunk.byes.Load(), pbx.byes.Load())
	}

	// The IPv4 ACL on the dual-stack listener: 127.0.0.2 dropped (counted,
	// no answer), 127.0.0.3 answered.
	before := p.metricSum(t, "esbc_acl_dropped_total", `side="lan"`)
	denied := secUDP(t, "127.0.0.2")
	secSend(t, denied, lan)
	if !failoverPoll(10*time.Second, func() bool { return p.metricSum(t, "esbc_acl_dropped_total", `side="lan"`) > before }) {
		t.Errorf("127.0.0.2 (denied) to the [::] listener: esbc_acl_dropped_total{side=lan} stayed %v", before)
	}
	secNoDatagram(t, denied)
	allowed := secUDP(t, "127.0.0.3")
	secSend(t, allowed, lan)
	_ = allowed.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	if n, _, err := allowed.ReadFrom(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ") {
		t.Errorf("127.0.0.3 (allowed) to the [::] listener: %q %v", buf[:n], err)
	}
}

package b2bua_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/esbc/esbc/b2bua"
	"github.com/esbc/esbc/b2bua/locate"
	"github.com/esbc/esbc/b2bua/trunk"
)

// Addresses on loopback: the PBX, esbc's LAN and WAN sides and two trunk
// servers each on their own 127.0.0.x so that topology hiding can be
// asserted on what the trunk receives.
const (
	pbxIP    = "127.0.0.10"
	lanIP    = "127.0.0.2"
	wanIP    = "127.0.0.3"
	trunkIP  = "127.0.0.4"
	trunk2IP = "127.0.0.5"
)

// testCA is a certificate authority made for the test run.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t testing.TB) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "esbc test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) leaf(t testing.TB, ips ...string) cryptotls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: ips[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return cryptotls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// stack is one sipgo UA with a server, a client and one listener.
type stack struct {
	ua    *sipgo.UserAgent
	srv   *sipgo.Server
	cli   *sipgo.Client
	addr  string // host:port the listener is bound to
	ln    net.Listener
	pc    net.PacketConn
	serve chan struct{}
	uac   *uac // the caller on this stack, if any (it takes BYEs of its dialogs)
}

func newStack(t testing.TB, ip, network string, tlsConf *cryptotls.Config, name string, extra ...sipgo.UserAgentOption) *stack {
	t.Helper()
	opts := append([]sipgo.UserAgentOption{sipgo.WithUserAgent(name), sipgo.WithUserAgentHostname(ip)}, extra...)
	if tlsConf != nil {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(tlsConf))
	}
	ua, err := sipgo.NewUA(opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{ua: ua, srv: srv, serve: make(chan struct{})}
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		s.pc, s.addr = pc, pc.LocalAddr().String()
		s.cli, err = sipgo.NewClient(ua, sipgo.WithClientHostname(ip), sipgo.WithClientConnectionAddr(s.addr))
		if err != nil {
			t.Fatal(err)
		}
	case "tls":
		ln, err := cryptotls.Listen("tcp", ip+":0", tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		s.ln, s.addr = &closingListener{Listener: ln, conns: map[net.Conn]struct{}{}}, ln.Addr().String()
		// Connections to peers leave from ip (the trunk-source check).
		s.cli, err = sipgo.NewClient(ua, sipgo.WithClientHostname(ip), sipgo.WithClientConnectionAddr(ip+":0"))
		if err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *stack) start() {
	go func() {
		defer close(s.serve)
		if s.pc != nil {
			_ = s.srv.ServeUDP(s.pc)
		} else {
			_ = s.srv.ServeTLS(s.ln)
		}
	}()
	if s.pc != nil {
		// Ready when the transport knows the socket (client requests from
		// the listening socket need it).
		for i := 0; i < 1000; i++ {
			if c, err := s.ua.TransportLayer().GetConnection("udp", s.addr); err == nil && c != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func (s *stack) port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}

func (s *stack) close() {
	_ = s.ua.Close()
	if s.pc != nil {
		_ = s.pc.Close()
	}
	if s.ln != nil {
		_ = s.ln.Close()
	}
	<-s.serve
}

// closingListener closes every connection it accepted when it is closed.
// sipgo v1.7.2's UserAgent.Close closes only the pooled connections whose
// reference count is above zero, and its counting over-decrements (its
// "TCP ref went negative" warnings): now and then a TLS connection between
// two stacks of a test outlived both UserAgents, and its two reader
// goroutines failed the package's goleak check (about 1 run in 6). Closing
// the accepted end here ends both readers: sipgo's on ErrClosed, the
// dialling side's on EOF.
type closingListener struct {
	net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
	accepted []string // remote address of every connection accepted
}

// acceptedFrom returns how many connections the listener accepted from ip.
func (l *closingListener) acceptedFrom(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.accepted {
		if h, _, _ := net.SplitHostPort(a); h == ip {
			n++
		}
	}
	return n
}

func (l *closingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	l.accepted = append(l.accepted, c.RemoteAddr().String())
	return c, nil
}

func (l *closingListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for c := range l.conns {
		_ = c.Close()
	}
	l.conns = nil
	return err
}

// uas is a scripted callee on a stack: PBX (inbound calls) or trunk.
type uas struct {
	st      *stack
	dsc     *sipgo.DialogServerCache
	mu      sync.Mutex
	invites []*sip.Request // every INVITE received (retransmissions excluded)
	other   []*sip.Request // other requests received
	// onInvite scripts the answer; default: 180 then 200 with sdpAnswer.
	onInvite func(u *uas, req *sip.Request, tx sip.ServerTransaction)
	sessions chan *sipgo.DialogServerSession
	byes     chan *sip.Request
	// auth: challenge INVITEs without credentials (407) when set.
	authUser, authPass string
	authed             atomic.Int32
	contact            sip.ContactHeader
	answerSDP          func(offer []byte) []byte // in-dialog answers; nil mirrors the offer
	inAuthUser         string                    // challenge in-dialog requests when set
	inAuthPass         string
	challenged         chan struct{}
	// echoTimer: in-dialog 2xx echo a request's Session-Expires (RFC 4028
	// §9, refresher as asked); updateCode, when set, answers UPDATEs with it.
	echoTimer  atomic.Bool
	updateCode atomic.Int32
	// pracks gets every PRACK received (answered by inDialog: 200, or 407
	// under setInDialogAuth).
	pracks chan *sip.Request
}

func newUAS(st *stack, contactHost string) *uas {
	u := &uas{st: st, sessions: make(chan *sipgo.DialogServerSession, 2000), byes: make(chan *sip.Request, 2000),
		pracks: make(chan *sip.Request, 100)}
	ct := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "uas", Host: contactHost, Port: st.port()}}
	if st.ln != nil {
		ct.Address.UriParams = sip.HeaderParams{{K: "transport", V: "tls"}}
	}
	u.contact = ct
	u.dsc = sipgo.NewDialogServerCache(st.cli, ct)
	st.srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		if to := req.To(); to.Params.Has("tag") {
			u.record(req, false)
			u.inDialog(req, tx)
			return
		}
		u.record(req, true)
		if u.authUser != "" && !u.checkAuth(req, tx) {
			return
		}
		u.mu.Lock()
		script := u.onInvite
		u.mu.Unlock()
		if script != nil {
			script(u, req, tx)
			return
		}
		u.answer(req, tx, 0)
	})
	st.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		u.record(req, false)
		_ = u.dsc.ReadAck(req, tx)
	})
	st.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		u.record(req, false)
		u.byes <- req
		if c := st.uac; c != nil {
			if err := c.dcc.ReadBye(req, tx); err == nil {
				return
			}
		}
		if err := u.dsc.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "No dialog", nil))
		}
	})
	for _, m := range []sip.RequestMethod{sip.INFO, sip.UPDATE, sip.REFER, sip.OPTIONS, sip.PRACK} {
		st.srv.OnRequest(m, func(req *sip.Request, tx sip.ServerTransaction) {
			u.record(req, false)
			if req.Method == sip.PRACK {
				select {
				case u.pracks <- req:
				default:
				}
			}
			u.inDialog(req, tx)
		})
	}
	return u
}

func (u *uas) record(req *sip.Request, invite bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if invite {
		u.invites = append(u.invites, req)
	} else {
		u.other = append(u.other, req)
	}
}

func (u *uas) lastInvite() *sip.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.invites) == 0 {
		return nil
	}
	return u.invites[len(u.invites)-1]
}

func (u *uas) requests(m sip.RequestMethod) []*sip.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []*sip.Request
	for _, r := range u.other {
		if r.Method == m {
			out = append(out, r)
		}
	}
	return out
}

// setInDialogAuth makes the UA challenge in-dialog requests (407) until
// they carry valid credentials; challenged gets a signal per challenge.
func (u *uas) setInDialogAuth(user, pass string, challenged chan struct{}) {
	u.mu.Lock()
	u.inAuthUser, u.inAuthPass, u.challenged = user, pass, challenged
	u.mu.Unlock()
}

// inDialog answers re-INVITE/UPDATE with its SDP mirrored and the rest 200.
func (u *uas) inDialog(req *sip.Request, tx sip.ServerTransaction) {
	u.mu.Lock()
	user, pass, ch := u.inAuthUser, u.inAuthPass, u.challenged
	u.mu.Unlock()
	if user != "" && req.Method != sip.ACK && !verifyDigest(req, user, pass) {
		chal := &digest.Challenge{Realm: "trunk.test", Nonce: "d" + fmt.Sprint(time.Now().UnixNano()), Algorithm: "MD5", QOP: []string{"auth"}}
		res := sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil)
		res.AppendHeader(sip.NewHeader("Proxy-Authenticate", chal.String()))
		_ = tx.Respond(res)
		select {
		case ch <- struct{}{}:
		default:
		}
		return
	}
	if code := int(u.updateCode.Load()); code != 0 && req.Method == sip.UPDATE {
		_ = tx.Respond(sip.NewResponseFromRequest(req, code, "Refused", nil))
		return
	}
	var body []byte
	if req.Method == sip.INVITE || req.Method == sip.UPDATE {
		u.mu.Lock()
		ans := u.answerSDP
		u.mu.Unlock()
		if ans == nil {
			ans = answerFor
		}
		body = ans(req.Body())
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", body)
	if len(body) > 0 {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	if req.Method == sip.INVITE {
		res.AppendHeader(sip.HeaderClone(&u.contact))
	}
	if se := req.GetHeader("Session-Expires"); se != nil && u.echoTimer.Load() {
		res.AppendHeader(sip.NewHeader("Session-Expires", se.Value()))
		res.AppendHeader(sip.NewHeader("Require", "timer"))
	}
	_ = tx.Respond(res)
}

// verifyDigest checks Proxy-Authorization independently of esbc's code.
func verifyDigest(req *sip.Request, user, pass string) bool {
	h := req.GetHeader("Proxy-Authorization")
	if h == nil {
		return false
	}
	cred, err := digest.ParseCredentials(h.Value())
	if err != nil {
		return false
	}
	want, err := digest.Digest(&digest.Challenge{Realm: cred.Realm, Nonce: cred.Nonce, Algorithm: "MD5", QOP: []string{"auth"}},
		digest.Options{Method: string(req.Method), URI: cred.URI, Username: user, Password: pass, Cnonce: cred.Cnonce, Count: cred.Nc})
	return err == nil && want.Response == cred.Response && cred.Username == user
}

func (u *uas) checkAuth(req *sip.Request, tx sip.ServerTransaction) bool {
	chal := &digest.Challenge{Realm: "trunk.test", Nonce: "n0nce" + fmt.Sprint(time.Now().UnixNano()), Algorithm: "MD5", QOP: []string{"auth"}}
	if verifyDigest(req, u.authUser, u.authPass) {
		u.authed.Add(1)
		return true
	}
	res := sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil)
	res.AppendHeader(sip.NewHeader("Proxy-Authenticate", chal.String()))
	_ = tx.Respond(res)
	return false
}

// answer rings then answers with an SDP mirrored from the offer.
func (u *uas) answer(req *sip.Request, tx sip.ServerTransaction, ring time.Duration) {
	sess, err := u.dsc.ReadInvite(req, tx)
	if err != nil {
		return
	}
	_ = sess.Respond(180, "Ringing", nil)
	if ring > 0 {
		select {
		case <-time.After(ring):
		case <-tx.Done():
			return
		}
	}
	_ = sess.Respond(200, "OK", answerFor(req.Body()), sip.NewHeader("Content-Type", "application/sdp"))
	u.sessions <- sess // after Respond: the test reads the session's InviteResponse
}

// uac is a caller on a stack.
type uac struct {
	st  *stack
	dcc *sipgo.DialogClientCache
}

func newUAC(st *stack, contactHost string, tls bool) *uac {
	ct := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "uac", Host: contactHost, Port: st.port()}}
	if tls {
		ct.Address.UriParams = sip.HeaderParams{{K: "transport", V: "tls"}}
	}
	u := &uac{st: st, dcc: sipgo.NewDialogClientCache(st.cli, ct)}
	st.uac = u
	return u
}

// sdpOffer is a minimal audio offer from host:port.
func sdpOffer(host string, port int) []byte {
	return []byte("v=0\r\no=- 1 1 IN IP4 " + host + "\r\ns=-\r\nc=IN IP4 " + host + "\r\nt=0 0\r\n" +
		"m=audio " + fmt.Sprint(port) + " RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
}

// answerFor mirrors an offer (same codecs) from a fixed peer address.
func answerFor(offer []byte) []byte {
	if len(offer) == 0 {
		return nil
	}
	return []byte(strings.ReplaceAll(string(offer), "o=- 1 1", "o=- 2 2"))
}

// env is esbc between a PBX (UDP) and a trunk (TLS).
type env struct {
	t       testing.TB
	b       *b2bua.B2BUA
	lan     *stack
	wan     *stack
	pbx     *stack
	trk     *stack
	trk2    *stack
	pbxUAS  *uas
	trkUAS  *uas
	trk2UAS *uas
	pbxUAC  *uac
	trkUAC  *uac
	set     *trunk.Set
	health  *locate.Health
	res     *locate.Resolver
	ended   chan b2bua.CallInfo
	cfg     *b2bua.Config
	srvTLS  func(ip string) *cryptotls.Config
}

type envOpts struct {
	channels        int
	secondServer    bool
	deadPrimary     bool // the first trunk server is a socket that never answers
	failoverTimeout time.Duration
	referRelay      bool
	media           b2bua.MediaEngine
	auth            bool
	trunkFilter     sip.TransportReadFilter // raw-bytes filter on the trunk's transport
	primaryFilter   sip.TransportReadFilter // the same on the primary (secondServer)
	onEnd           func(b2bua.CallInfo)    // called from Deps.OnEnd before the CDR is queued
	reg             prometheus.Registerer   // Deps.Reg; nil: metrics not registered
	setup           func(e *env)            // called before the stacks serve (extra handlers)
}

// dialPlan is a Router for the tests: 9 + digits → trunk "itsp", inbound
// anything → extension 200.
type dialPlan struct{}

func (dialPlan) Outbound(d string) (b2bua.Route, error) {
	if d == "9911" {
		return b2bua.Route{}, b2bua.ErrEmergencyBlocked
	}
	if !strings.HasPrefix(d, "9") || len(d) < 3 {
		return b2bua.Route{}, b2bua.ErrNoRoute
	}
	return b2bua.Route{Trunk: "itsp", Number: "+1" + d[1:]}, nil
}

func (dialPlan) Inbound(user string) (string, error) {
	if user == "" {
		return "", b2bua.ErrNoRoute
	}
	return "200", nil
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	ca := newCA(t)
	clientTLS := &cryptotls.Config{RootCAs: ca.pool, MinVersion: cryptotls.VersionTLS12}
	e := &env{t: t, ended: make(chan b2bua.CallInfo, 4096)}
	srvTLS := func(ip string) *cryptotls.Config {
		return &cryptotls.Config{Certificates: []cryptotls.Certificate{ca.leaf(t, ip)}, RootCAs: ca.pool, MinVersion: cryptotls.VersionTLS12}
	}
	e.srvTLS = srvTLS
	wanConf := srvTLS(wanIP)
	wanConf.RootCAs = clientTLS.RootCAs
	e.lan = newStack(t, lanIP, "udp", nil, "esbc")
	e.wan = newStack(t, wanIP, "tls", wanConf, "esbc")
	e.pbx = newStack(t, pbxIP, "udp", nil, "pbx")
	trkConf := srvTLS(trunkIP)
	var trkOpts []sipgo.UserAgentOption
	if o.trunkFilter != nil {
		trkOpts = append(trkOpts, sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerReadFilter(o.trunkFilter)))
	}
	e.trk = newStack(t, trunkIP, "tls", trkConf, "trunk", trkOpts...)
	e.pbxUAS = newUAS(e.pbx, pbxIP)
	e.trkUAS = newUAS(e.trk, trunkIP)
	e.pbxUAC = newUAC(e.pbx, pbxIP, false)
	e.trkUAC = newUAC(e.trk, trunkIP, true)
	if o.auth {
		e.trkUAS.authUser, e.trkUAS.authPass = "990500000231", "s3cret"
	}
	servers := []string{e.trk.addr}
	var dead net.Listener
	if o.deadPrimary {
		// A TCP listener that accepts but never completes a TLS handshake
		// nor answers: the "no response" case.
		var err error
		dead, err = net.Listen("tcp", trunk2IP+":0")
		if err != nil {
			t.Fatal(err)
		}
		servers = []string{dead.Addr().String(), e.trk.addr}
	}
	if o.secondServer {
		var opts []sipgo.UserAgentOption
		if o.primaryFilter != nil {
			opts = append(opts, sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerReadFilter(o.primaryFilter)))
		}
		e.trk2 = newStack(t, trunk2IP, "tls", srvTLS(trunk2IP), "trunk2", opts...)
		e.trk2UAS = newUAS(e.trk2, trunk2IP)
		servers = []string{e.trk2.addr, e.trk.addr}
	}
	log := zap.NewNop()
	if testing.Verbose() {
		log = zaptest.NewLogger(t)
	}
	e.health = locate.NewHealth(log, nil)
	e.res = locate.NewResolver(locate.Config{}, log, nil)
	e.set = trunk.NewSet(trunk.Deps{Client: e.wan.cli, UA: e.wan.ua, Resolver: e.res, Health: e.health, Log: log})
	ft := o.failoverTimeout
	if ft == 0 {
		ft = 500 * time.Millisecond
	}
	err := e.set.Apply(context.Background(), []trunk.Config{{
		Name: "itsp", Domain: "trunk.test", Transport: "tls", Servers: servers,
		AuthMethod: "digest", Username: "990500000231", Password: "s3cret",
		OptionsInterval: -1, KeepaliveInterval: -1, FailoverTimeout: ft, Channels: o.channels,
	}})
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := e.set.Get("itsp")
	if _, err := tr.Targets(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.cfg = &b2bua.Config{
		LAN:          b2bua.Side{Advertise: lanIP, Ports: map[string]int{"udp": e.lan.port()}},
		WAN:          b2bua.Side{Advertise: wanIP, Ports: map[string]int{"tls": e.wan.port()}},
		PBX:          fmt.Sprintf("sip:%s:%d;transport=udp", pbxIP, e.pbx.port()),
		PBXTrusted:   true,
		ServerHeader: "esbc",
		RetryAfter:   7 * time.Second,
		Router:       dialPlan{},
		Trunks: map[string]b2bua.TrunkConfig{"itsp": {
			Name: "itsp", Domain: "trunk.test", Transport: "tls", FromUser: "990500000231",
			CallerID: "+14155550100", AllowedCallerIDs: []string{"+14155550100"}, TrustPAI: true,
			ReferRelay: o.referRelay, FailoverTimeout: ft,
		}},
	}
	b, err := b2bua.New(e.cfg, b2bua.Deps{
		Log: log, Reg: o.reg, Trunks: b2bua.TrunkSet(e.set), Health: e.health, Media: o.media,
		OnEnd: func(ci b2bua.CallInfo) {
			if o.onEnd != nil {
				o.onEnd(ci)
			}
			e.ended <- ci
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Register(b2bua.Endpoint{Server: e.lan.srv, Client: e.lan.cli}, b2bua.Endpoint{Server: e.wan.srv, Client: e.wan.cli}); err != nil {
		t.Fatal(err)
	}
	e.b = b
	if o.setup != nil {
		o.setup(e)
	}
	for _, s := range []*stack{e.lan, e.wan, e.pbx, e.trk, e.trk2} {
		if s != nil {
			s.start()
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
		_ = e.set.Close(ctx)
		_ = e.res.Close()
		// esbc's two stacks first, as in production (its UserAgents close
		// before its peers go): the peers closing first made esbc's readers
		// hard-close their connections under transactions still holding
		// references, and sipgo logged ~2,400 "TCP ref went negative" per run.
		for _, s := range []*stack{e.lan, e.wan, e.pbx, e.trk, e.trk2} {
			if s != nil {
				s.close()
			}
		}
		if dead != nil {
			_ = dead.Close()
		}
	})
	return e
}

// call places a call from the PBX to number through esbc.
func (e *env) outbound(ctx context.Context, number string) (*sipgo.DialogClientSession, error) {
	uri := sip.Uri{Scheme: "sip", User: number, Host: lanIP, Port: e.lan.port()}
	hdrs := []sip.Header{
		&sip.FromHeader{DisplayName: "Alice", Address: sip.Uri{Scheme: "sip", User: "+14155550100", Host: "pbx.corp.local"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}},
		sip.NewHeader("X-Internal-Secret", "lan-only"),
		sip.NewHeader("Content-Type", "application/sdp"),
	}
	s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000), hdrs...)
	if err != nil {
		return nil, err
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		return s, err
	}
	return s, s.Ack(ctx)
}

// inbound places a call from the trunk to number through esbc (TLS).
func (e *env) inbound(ctx context.Context, number string) (*sipgo.DialogClientSession, error) {
	uri := sip.Uri{Scheme: "sip", User: number, Host: wanIP, Port: e.wan.port(), UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}
	hdrs := []sip.Header{
		&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+442071234567", Host: "trunk.test"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}},
		sip.NewHeader("Content-Type", "application/sdp"),
	}
	s, err := e.trkUAC.dcc.Invite(ctx, uri, sdpOffer(trunkIP, 50000), hdrs...)
	if err != nil {
		return nil, err
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		return s, err
	}
	return s, s.Ack(ctx)
}

// waitEnded waits for n ended calls (CDRs).
func (e *env) waitEnded(n int) []b2bua.CallInfo {
	e.t.Helper()
	var out []b2bua.CallInfo
	timeout := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case ci := <-e.ended:
			out = append(out, ci)
		case <-timeout:
			e.t.Fatalf("only %d of %d calls ended", len(out), n)
		}
	}
	return out
}

func statusOf(err error) int {
	var de *sipgo.ErrDialogResponse
	if errors.As(err, &de) {
		return de.Res.StatusCode
	}
	return 0
}

// headersOf is a request without its body.
func headersOf(req *sip.Request) string {
	s := req.String()
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// setScript replaces the INVITE script (safe while the stack serves).
func (u *uas) setScript(f func(u *uas, req *sip.Request, tx sip.ServerTransaction)) {
	u.mu.Lock()
	u.onInvite = f
	u.mu.Unlock()
}

// setAnswer sets how in-dialog offers are answered.
func (u *uas) setAnswer(f func([]byte) []byte) {
	u.mu.Lock()
	u.answerSDP = f
	u.mu.Unlock()
}

// hangUp sends the caller's BYE from the socket of its INVITE (sipgo's own
// Bye leaves Laddr empty and so opens a fresh UDP socket per BYE).
func hangUp(ctx context.Context, s *sipgo.DialogClientSession) error {
	bye := sip.NewRequest(sip.BYE, s.InviteResponse.Contact().Address)
	bye.Laddr = s.InviteRequest.Laddr
	return s.WriteBye(ctx, bye)
}

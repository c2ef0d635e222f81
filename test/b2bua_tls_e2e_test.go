//go:build e2e

package test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// TestB2BUATLSSRTPThroughBinary: the built esbc between a PBX (sipgo, UDP,
// plain RTP) and a trunk (sipgo, TLS with certificates from a CA made here,
// SRTP/SDES). An outbound call is placed, RTP checked both ways (the trunk
// side with an independent pion/srtp context keyed from the SDP), and hung
// up; the CDR records it.
func TestB2BUATLSSRTPThroughBinary(t *testing.T) {
	e2eLeakCheck(t)
	dir := t.TempDir()
	ca := b2buaE2ECA(t, dir)
	ca.leaf(t, dir, "esbc", "127.0.0.1")
	trunkCert := ca.leaf(t, dir, "trunk", "127.0.0.1", "trunk.example.test")

	k := newB2BUAE2ETLSTrunk(t, trunkCert)
	trunkPort, trk := k.port, k.srtp

	admin, lan, wan := e2eFreePort(t), e2eFreePort(t), e2eFreePort(t)
	pbx := newB2BUAE2EPBX(t)
	rtpLo := 24000 + 2*(os.Getpid()%1500)
	cdrPath := filepath.Join(dir, "cdr.jsonl")
	cfg := b2buaE2ETLSConfig(dir, admin, lan, wan, pbx.addr(), trunkPort, rtpLo, rtpLo+99, cdrPath, "")
	p := e2eStartESBC(t, dir, cfg, fmt.Sprintf("127.0.0.1:%d", admin))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, pbxRTP := pbx.call(t, ctx, p, lan, "call through esbc")
	inv := k.lastInvite()
	if inv.Recipient.User != "+14155550123" || inv.From().Address.User != "990500000231" {
		t.Errorf("INVITE at the trunk: R-URI %s, From %s", inv.Recipient.User, inv.From().Address.User)
	}
	if strings.Contains(string(inv.Body()), "RTP/AVP ") || !strings.Contains(string(inv.Body()), "RTP/SAVP") {
		t.Errorf("offer toward the trunk is not SRTP:\n%s", inv.Body())
	}
	b2buaE2EExchange(t, pbxRTP, b2buaE2ESDPAddr(t, s.InviteResponse.Body()), trk, b2buaE2ESDPAddr(t, inv.Body()))

	k.hungUp(t, ctx, s)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(cdrPath)
		if bytes.Contains(b, []byte(`"disposition":"answered"`)) {
			if !bytes.Contains(b, []byte("AES_CM_128_HMAC_SHA1_80")) {
				t.Errorf("CDR without the SRTP suite: %s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CDR for the call: %q", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type b2buaE2ETestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func b2buaE2ECA(t *testing.T, dir string) *b2buaE2ETestCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "b2bua e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &b2buaE2ETestCA{cert: cert, key: key}
}

// leaf writes name.crt/name.key signed by the CA for the given IPs/names.
func (ca *b2buaE2ETestCA) leaf(t *testing.T, dir, name string, hosts ...string) cryptotls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	_ = os.WriteFile(filepath.Join(dir, name+".crt"), certPEM, 0o600)
	_ = os.WriteFile(filepath.Join(dir, name+".key"), keyPEM, 0o600)
	c, err := cryptotls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// b2buaE2EPeer is the trunk's media: its own key, and a decrypt context
// built (pion/srtp) from the key esbc offered in its SDP.
type b2buaE2EPeer struct {
	conn *net.UDPConn
	key  []byte
	mu   sync.Mutex
	enc  *srtp.Context
	dec  *srtp.Context
}

var b2buaE2ECrypto = regexp.MustCompile(`(?m)^a=crypto:(\d+) AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)`)

func b2buaE2ESRTPPeer(t *testing.T) *b2buaE2EPeer {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 30)
	_, _ = rand.Read(key)
	enc, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	return &b2buaE2EPeer{conn: conn, key: key, enc: enc}
}

func (p *b2buaE2EPeer) answer(t *testing.T, offer []byte) []byte {
	m := b2buaE2ECrypto.FindSubmatch(offer)
	if m == nil {
		t.Errorf("no AES_CM_128_HMAC_SHA1_80 offered toward the trunk:\n%s", offer)
		return nil
	}
	k, err := base64.StdEncoding.DecodeString(string(m[2]))
	if err != nil || len(k) != 30 {
		t.Errorf("bad inline key %q", m[2])
		return nil
	}
	dec, err := srtp.CreateContext(k[:16], k[16:], srtp.ProtectionProfileAes128CmHmacSha1_80, srtp.SRTPReplayProtection(64))
	if err != nil {
		t.Error(err)
		return nil
	}
	p.mu.Lock()
	p.dec = dec
	p.mu.Unlock()
	port := p.conn.LocalAddr().(*net.UDPAddr).Port
	return []byte(fmt.Sprintf("v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"+
		"a=crypto:%s AES_CM_128_HMAC_SHA1_80 inline:%s\r\na=sendrecv\r\n", port, m[1], base64.StdEncoding.EncodeToString(p.key)))
}

var (
	b2buaE2EConn  = regexp.MustCompile(`(?m)^c=IN IP4 (\S+)`)
	b2buaE2EAudio = regexp.MustCompile(`(?m)^m=audio (\d+) `)
)

func b2buaE2ESDPAddr(t *testing.T, body []byte) netip.AddrPort {
	c, m := b2buaE2EConn.FindSubmatch(body), b2buaE2EAudio.FindSubmatch(body)
	if c == nil || m == nil {
		t.Fatalf("no media address in SDP:\n%s", body)
	}
	return netip.MustParseAddrPort(string(c[1]) + ":" + string(m[1]))
}

// b2buaE2EExchange sends RTP both ways until each end got one packet with
// the other's payload (bounded).
func b2buaE2EExchange(t *testing.T, pbx *net.UDPConn, esbcLAN netip.AddrPort, trk *b2buaE2EPeer, esbcWAN netip.AddrPort) {
	t.Helper()
	fromPBX, fromTrunk := bytes.Repeat([]byte{0xAA}, 160), bytes.Repeat([]byte{0x55}, 160)
	trk.mu.Lock()
	enc, dec := trk.enc, trk.dec
	trk.mu.Unlock()
	packet := func(seq uint16, payload []byte) []byte {
		b, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 0x4242}, Payload: payload}).Marshal()
		return b
	}
	atTrunk, atPBX := false, false
	buf := make([]byte, 1500)
	for seq := uint16(1); seq < 300 && (!atTrunk || !atPBX); seq++ {
		_, _ = pbx.WriteToUDPAddrPort(packet(seq, fromPBX), esbcLAN)
		e, _ := enc.EncryptRTP(nil, packet(seq, fromTrunk), nil)
		_, _ = trk.conn.WriteToUDPAddrPort(e, esbcWAN)
		_ = trk.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, _, err := trk.conn.ReadFromUDPAddrPort(buf); err == nil && dec != nil {
			if d, err := dec.DecryptRTP(nil, buf[:n], nil); err == nil {
				var pk rtp.Packet
				atTrunk = atTrunk || (pk.Unmarshal(d) == nil && bytes.Equal(pk.Payload, fromPBX))
			}
		}
		_ = pbx.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, _, err := pbx.ReadFromUDPAddrPort(buf); err == nil {
			var pk rtp.Packet
			atPBX = atPBX || (pk.Unmarshal(buf[:n]) == nil && bytes.Equal(pk.Payload, fromTrunk))
		}
	}
	if !atTrunk {
		t.Error("PBX RTP did not reach the trunk as SRTP that esbc's offered key decrypts")
	}
	if !atPBX {
		t.Error("trunk SRTP did not reach the PBX as plain RTP")
	}
}

// b2buaE2ETLSTrunk is the trunk of the TLS e2e tests: a sipgo UA serving
// TLS with cert on 127.0.0.1, answering INVITE 200 with the SDP answer of
// an independent pion/srtp peer (srtp), keeping the last INVITE and
// signalling each BYE on byes. It is closed by t.Cleanup.
type b2buaE2ETLSTrunk struct {
	port int
	srtp *b2buaE2EPeer
	byes chan struct{}

	mu     sync.Mutex
	invite *sip.Request // guarded by mu
}

func newB2BUAE2ETLSTrunk(t *testing.T, cert cryptotls.Certificate) *b2buaE2ETLSTrunk {
	t.Helper()
	trunkUA, err := sipgo.NewUA(sipgo.WithUserAgent("trunk"))
	if err != nil {
		t.Fatal(err)
	}
	trunkSrv, _ := sipgo.NewServer(trunkUA)
	ln, err := cryptotls.Listen("tcp", "127.0.0.1:0", &cryptotls.Config{Certificates: []cryptotls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	k := &b2buaE2ETLSTrunk{port: ln.Addr().(*net.TCPAddr).Port, srtp: b2buaE2ESRTPPeer(t), byes: make(chan struct{}, 1)}
	trunkSrv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		k.mu.Lock()
		k.invite = req
		k.mu.Unlock()
		res := sip.NewResponseFromRequest(req, 200, "OK", k.srtp.answer(t, req.Body()))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: k.port, UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}})
		_ = tx.Respond(res)
		<-tx.Done()
	})
	trunkSrv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	trunkSrv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		select {
		case k.byes <- struct{}{}:
		default:
		}
	})
	trunkSrv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	trunkDone := make(chan struct{})
	go func() { defer close(trunkDone); _ = trunkSrv.ServeTLS(ln) }()
	t.Cleanup(func() { _ = trunkUA.Close(); _ = ln.Close(); <-trunkDone })
	return k
}

// lastInvite is the last INVITE the trunk received.
func (k *b2buaE2ETLSTrunk) lastInvite() *sip.Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.invite
}

// b2buaE2EPBX is the PBX of the TLS e2e tests: a sipgo UA on 127.0.0.1
// serving the UDP socket it calls from.
type b2buaE2EPBX struct {
	pc  net.PacketConn
	dcc *sipgo.DialogClientCache
}

// newB2BUAE2EPBX starts the PBX; it is closed by t.Cleanup.
func newB2BUAE2EPBX(t *testing.T) *b2buaE2EPBX {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ua, _ := sipgo.NewUA(sipgo.WithUserAgent("pbx"))
	srv, _ := sipgo.NewServer(ua)
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientConnectionAddr(pc.LocalAddr().String()))
	x := &b2buaE2EPBX{pc: pc}
	x.dcc = sipgo.NewDialogClientCache(cli, sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: "127.0.0.1", Port: x.port()}})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) { _ = x.dcc.ReadBye(req, tx) })
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeUDP(pc) }()
	t.Cleanup(func() { _ = ua.Close(); _ = pc.Close(); <-done })
	if !failoverServing(ua, pc.LocalAddr().String()) {
		t.Fatal("pbx: sipgo did not take the socket")
	}
	return x
}

func (x *b2buaE2EPBX) addr() string { return x.pc.LocalAddr().String() }
func (x *b2buaE2EPBX) port() int    { return x.pc.LocalAddr().(*net.UDPAddr).Port }

// call places a call to 914155550123 at esbc's LAN port lan with a plain
// RTP offer from a new socket (closed by t.Cleanup), and ACKs the answer;
// what names the call in failures.
func (x *b2buaE2EPBX) call(t *testing.T, ctx context.Context, p *e2eESBC, lan int, what string) (*sipgo.DialogClientSession, *net.UDPConn) {
	t.Helper()
	rtpc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rtpc.Close() })
	offer := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
		rtpc.LocalAddr().(*net.UDPAddr).Port)
	s, err := x.dcc.Invite(ctx, sip.Uri{Scheme: "sip", User: "914155550123", Host: "127.0.0.1", Port: lan}, []byte(offer),
		sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, p.tail(30))
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	return s, rtpc
}

// hungUp sends the PBX's BYE of s over the connection the dialog lives on
// and waits (bounded by ctx) for esbc's BYE at the trunk.
func (k *b2buaE2ETLSTrunk) hungUp(t *testing.T, ctx context.Context, s *sipgo.DialogClientSession) {
	t.Helper()
	bye := sip.NewRequest(sip.BYE, s.InviteResponse.Contact().Address)
	bye.Laddr = s.InviteRequest.Laddr
	if err := s.WriteBye(ctx, bye); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	select {
	case <-k.byes:
	case <-ctx.Done():
		t.Fatal("trunk got no BYE")
	}
}

// b2buaE2ETLSConfig is the esbc configuration of the TLS e2e tests: the PBX
// on LAN UDP, one trunk "itsp" over TLS with mandatory SRTP at 127.0.0.1:
// trunkPort, certificates made by b2buaE2ECA in dir, and extra appended
// as further top-level keys.
func b2buaE2ETLSConfig(dir string, admin, lan, wan int, pbxAddr string, trunkPort, rtpLo, rtpHi int, cdrPath, extra string) string {
	return fmt.Sprintf(`
log: { level: info, format: json }
admin: { listen: "127.0.0.1:%d" }
shutdown_grace: 5s
lan:
  listen: ["udp://127.0.0.1:%d"]
  advertise: 127.0.0.1
  pbx: { uri: "sip:%s;transport=udp", trusted: true }
  acl: { allow: ["127.0.0.0/8"] }
wan:
  listen: ["tls://127.0.0.1:%d"]
  advertise: 127.0.0.1
  tls: { cert_file: %q, key_file: %q, ca_file: %q, min_version: "1.2" }
trunks:
  - name: itsp
    domain: trunk.example.test
    transport: tls
    servers: ["127.0.0.1:%d"]
    auth: { method: ip }
    from_user: "990500000231"
    caller_id: "+14155550100"
    allowed_caller_ids: ["+14155550100"]
    trust_pai: true
    srtp: mandatory
    codecs: [PCMU, PCMA, telephone-event]
    options_interval: 1h
    failover_timeout: 2s
numbering: { country_code: "1", national_prefix: "1", international_prefix: "011" }
routes:
  outbound:
    - { match: '^9(\d+)$', number: '$1', trunk: itsp }
  inbound:
    - { match: '.*', extension: "100" }
media:
  rtp_ports: "%d-%d"
  inactivity_timeout: 30s
cdr: { file: %q }
%s`, admin, lan, pbxAddr, wan, filepath.Join(dir, "esbc.crt"), filepath.Join(dir, "esbc.key"), filepath.Join(dir, "ca.pem"),
		trunkPort, rtpLo, rtpHi, cdrPath, extra)
}

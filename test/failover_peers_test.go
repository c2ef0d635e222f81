package test

// Peers of the failover tests (issue 6): trunk servers and a PBX built on
// sipgo, talking to the esbc binary over loopback. Each trunk server owns
// two independent things: its SIP server (killed and restarted by the tests)
// and its media endpoint (an RTP echo that survives the SIP server, as a
// provider's media gateway outlives the signalling server that set the call
// up).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
)

// failoverSDP is a PCMU + telephone-event offer or answer at ip:port, with
// the address family of ip (c=IN IP4 or c=IN IP6).
func failoverSDP(ip string, port int) []byte {
	fam := "IP4"
	if strings.Contains(ip, ":") {
		fam = "IP6"
	}
	return []byte("v=0\r\no=- 1 1 IN " + fam + " " + ip + "\r\ns=-\r\nc=IN " + fam + " " + ip + "\r\nt=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n")
}

// failoverSDPAddr reads the audio address (c= and m=audio) of an SDP body
// and its c= address type (IP4 | IP6).
func failoverSDPAddr(body []byte) (*net.UDPAddr, string, error) {
	var ip, fam string
	port := 0
	for _, l := range strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "c=IN "):
			if f := strings.Fields(l); len(f) == 3 {
				fam, ip = f[1], f[2]
			}
		case strings.HasPrefix(l, "m=audio "):
			port, _ = strconv.Atoi(strings.Fields(l)[1])
		}
	}
	if net.ParseIP(ip) == nil || port == 0 {
		return nil, "", fmt.Errorf("no audio address in SDP:\n%s", body)
	}
	return &net.UDPAddr{IP: net.ParseIP(ip), Port: port}, fam, nil
}

// failoverRegister is one REGISTER a trunk server received.
type failoverRegister struct {
	Expires string // Expires header (or the Contact's expires parameter)
	At      time.Time
	Source  string // ip:port it came from
}

// failoverTrunk is one trunk server at ip:port over UDP or TCP.
type failoverTrunk struct {
	t       *testing.T
	name    string
	ip      string
	port    int
	network string       // "udp" | "tcp"
	media   *net.UDPConn // RTP echo, independent of the SIP server
	echo    chan struct{}
	mode    atomic.Value // string: "answer" | "503" | "trying" (INVITE)

	mu        sync.Mutex
	invites   int                // initial INVITEs received, guarded by mu
	answered  int                // initial INVITEs answered 200, guarded by mu
	byes      int                // BYEs received, guarded by mu
	options   int                // OPTIONS received, guarded by mu
	registers []failoverRegister // guarded by mu
	sip       *failoverSIPServer // guarded by mu; nil while killed
}

// failoverSIPServer is one life of a trunk's SIP server.
type failoverSIPServer struct {
	ua    *sipgo.UserAgent
	srv   *sipgo.Server
	pc    net.PacketConn // UDP
	ln    net.Listener   // TCP
	done  chan struct{}
	hmu   sync.Mutex
	dying bool           // guarded by hmu
	calls sync.WaitGroup // handlers in flight; Add under hmu while !dying
}

// newFailoverTrunk makes a trunk server on ip:port over network ("udp" |
// "tcp"; its SIP server runs from start) and starts its media echo. The
// reload tests use it too.
func newFailoverTrunk(t *testing.T, name, network, ip string, port int) *failoverTrunk {
	t.Helper()
	m, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatalf("%s media: %v", name, err)
	}
	tr := &failoverTrunk{t: t, name: name, ip: ip, port: port, network: network, media: m, echo: make(chan struct{})}
	tr.mode.Store("answer")
	go func() {
		defer close(tr.echo)
		buf := make([]byte, 1500)
		for {
			n, from, err := m.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = m.WriteToUDP(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		tr.kill()
		_ = m.Close()
		<-tr.echo
	})
	return tr
}

func (tr *failoverTrunk) addr() string { return net.JoinHostPort(tr.ip, strconv.Itoa(tr.port)) }

// target is the trunk's key in esbc's health table and metrics.
func (tr *failoverTrunk) target(host string) string {
	return host + "/" + tr.addr() + "/" + tr.network
}

// start (re)starts the SIP server on the trunk's address.
func (tr *failoverTrunk) start() {
	t := tr.t
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 50 { // the port of a killed server is free at once (SO_REUSEADDR for TCP); bounded retries anyway
		if tr.network == "tcp" {
			ln, err = net.Listen("tcp", tr.addr())
		} else {
			pc, err = net.ListenPacket("udp", tr.addr())
		}
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: %v", tr.name, err)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(tr.name), sipgo.WithUserAgentHostname(tr.ip))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	s := &failoverSIPServer{ua: ua, srv: srv, pc: pc, ln: ln, done: make(chan struct{})}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) { s.guard(func() { tr.onInvite(req, tx) }) })
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	ok := func(n *int) sipgo.RequestHandler { // answers 200 and counts the request in *n (guarded by tr.mu)
		return func(req *sip.Request, tx sip.ServerTransaction) {
			s.guard(func() {
				tr.mu.Lock()
				*n++
				tr.mu.Unlock()
				_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
			})
		}
	}
	srv.OnBye(ok(&tr.byes))
	srv.OnOptions(ok(&tr.options))
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) { s.guard(func() { tr.onRegister(req, tx) }) })
	if ln != nil {
		// The listener is bound: connections wait in its backlog.
		go func() { defer close(s.done); _ = srv.ServeTCP(ln) }()
		tr.mu.Lock()
		tr.sip = s
		tr.mu.Unlock()
		return
	}
	go func() { defer close(s.done); _ = srv.ServeUDP(pc) }()
	if !failoverServing(ua, pc.LocalAddr().String()) {
		t.Fatalf("%s: sipgo did not take the socket", tr.name)
	}
	tr.mu.Lock()
	tr.sip = s
	tr.mu.Unlock()
}

// failoverServing waits (bounded: 5 s) until sipgo's transport layer holds
// the UDP socket at addr, which ua serves: ready to receive on it.
func failoverServing(ua *sipgo.UserAgent, addr string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := ua.TransportLayer().GetConnection("udp", addr); err == nil && c != nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// guard runs a handler unless the server is being killed.
func (s *failoverSIPServer) guard(f func()) {
	s.hmu.Lock()
	if s.dying {
		s.hmu.Unlock()
		return
	}
	s.calls.Add(1)
	s.hmu.Unlock()
	defer s.calls.Done()
	f()
}

// kill stops the SIP server: the port is closed (UDP to it draws ICMP
// port unreachable), the media echo goes on.
func (tr *failoverTrunk) kill() {
	tr.mu.Lock()
	s := tr.sip
	tr.sip = nil
	tr.mu.Unlock()
	if s == nil {
		return
	}
	s.hmu.Lock()
	s.dying = true
	s.hmu.Unlock()
	s.calls.Wait()
	_ = s.srv.Close()
	_ = s.ua.Close()
	if s.pc != nil {
		_ = s.pc.Close()
	}
	if s.ln != nil {
		_ = s.ln.Close()
	}
	<-s.done
}

func (tr *failoverTrunk) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if req.To().Params.Has("tag") { // re-INVITE: same media
		res := sip.NewResponseFromRequest(req, 200, "OK", failoverSDP(tr.ip, tr.media.LocalAddr().(*net.UDPAddr).Port))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
		return
	}
	tr.mu.Lock()
	tr.invites++
	tr.mu.Unlock()
	switch tr.mode.Load() {
	case "503":
		_ = tx.Respond(sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil))
		return
	case "trying": // 100 Trying, then nothing: a server that hangs or dies mid-set-up
		_ = tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil))
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil))
	res := sip.NewResponseFromRequest(req, 200, "OK", failoverSDP(tr.ip, tr.media.LocalAddr().(*net.UDPAddr).Port))
	res.To().Params.Add("tag", sip.GenerateTagN(10))
	ct := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "trunk", Host: tr.ip, Port: tr.port}}
	if tr.network == "tcp" {
		ct.Address.UriParams = sip.HeaderParams{{K: "transport", V: "tcp"}}
	}
	res.AppendHeader(ct)
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	tr.mu.Lock()
	tr.answered++
	tr.mu.Unlock()
	_ = tx.Respond(res)
}

func (tr *failoverTrunk) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	exp := ""
	if h := req.GetHeader("Expires"); h != nil {
		exp = strings.TrimSpace(h.Value())
	}
	if c := req.Contact(); c != nil {
		if v, ok := c.Params.Get("expires"); ok {
			exp = v
		}
	}
	tr.mu.Lock()
	tr.registers = append(tr.registers, failoverRegister{Expires: exp, At: time.Now(), Source: req.Source()})
	tr.mu.Unlock()
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	if c := req.Contact(); c != nil {
		res.AppendHeader(sip.HeaderClone(c))
	}
	if exp != "" {
		res.AppendHeader(sip.NewHeader("Expires", exp))
	}
	_ = tx.Respond(res)
}

// counts returns (INVITEs received, answered 200, BYEs).
func (tr *failoverTrunk) counts() (invites, answered, byes int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.invites, tr.answered, tr.byes
}

// registrations returns how many REGISTERs binding (Expires > 0) and
// removing (Expires 0) the trunk server received.
func (tr *failoverTrunk) registrations() (bind, unbind int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, r := range tr.registers {
		if r.Expires == "0" {
			unbind++
		} else {
			bind++
		}
	}
	return bind, unbind
}

// failoverPBX is the PBX: a sipgo UA on 127.0.0.1 that calls through
// esbc's LAN side with plain RTP.
type failoverPBX struct {
	t    *testing.T
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	cli  *sipgo.Client
	pc   net.PacketConn
	dcc  *sipgo.DialogClientCache
	done chan struct{}
	esbc sip.Uri // esbc's LAN UDP listener

	placed, ok, failed atomic.Int64
}

func newFailoverPBX(t *testing.T) *failoverPBX {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("failover-pbx"), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientConnectionAddr(pc.LocalAddr().String()))
	if err != nil {
		t.Fatal(err)
	}
	p := &failoverPBX{t: t, ua: ua, srv: srv, cli: cli, pc: pc, done: make(chan struct{})}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	p.dcc = sipgo.NewDialogClientCache(cli, sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: "127.0.0.1", Port: port}})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := p.dcc.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "No dialog", nil))
		}
	})
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { defer close(p.done); _ = srv.ServeUDP(pc) }()
	if !failoverServing(ua, pc.LocalAddr().String()) {
		t.Fatal("pbx: sipgo did not take the socket")
	}
	t.Cleanup(func() {
		_ = srv.Close()
		_ = ua.Close()
		_ = pc.Close()
		<-p.done
	})
	return p
}

func (p *failoverPBX) port() int { return p.pc.LocalAddr().(*net.UDPAddr).Port }

// dialTo points the PBX's calls at esbc's LAN listener at addr (host:port).
func (p *failoverPBX) dialTo(addr string) {
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	p.esbc = sip.Uri{Scheme: "sip", Host: host, Port: n}
}

// failoverCall is one call the PBX placed, with its RTP socket.
type failoverCall struct {
	sess   *sipgo.DialogClientSession
	media  *net.UDPConn
	remote *net.UDPAddr // esbc's LAN media address from the answer
	setup  time.Duration
	seq    uint16
}

// call places a call to number and waits for the answer (bounded by
// 30 s); a failure is counted as a failed call as the PBX sees it.
func (p *failoverPBX) call(number string) (*failoverCall, error) {
	p.placed.Add(1)
	c, err := p.dial(number)
	if err != nil {
		p.failed.Add(1)
		return nil, err
	}
	p.ok.Add(1)
	return c, nil
}

func (p *failoverPBX) dial(number string) (*failoverCall, error) {
	m, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	uri := p.esbc
	uri.User = number
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "200", Host: "127.0.0.1"},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}}
	s, err := p.dcc.Invite(ctx, uri, failoverSDP("127.0.0.1", m.LocalAddr().(*net.UDPAddr).Port),
		from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("invite: %w", err)
	}
	answered, err := failoverEstablish(ctx, s, m)
	if err != nil {
		return nil, err
	}
	setup := answered.Sub(start)
	remote, _, err := failoverSDPAddr(s.InviteResponse.Body())
	if err != nil {
		_ = s.Bye(ctx)
		m.Close()
		return nil, err
	}
	return &failoverCall{sess: s, media: m, remote: remote, setup: setup}, nil
}

// failoverEstablish waits (bounded by ctx) for the answer to the INVITE
// of s and ACKs it; on failure it closes s and the call's RTP socket m. It
// returns when the answer came (before the ACK: the set-up time).
func failoverEstablish(ctx context.Context, s *sipgo.DialogClientSession, m *net.UDPConn) (time.Time, error) {
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		s.Close()
		m.Close()
		return time.Time{}, fmt.Errorf("answer: %w", err)
	}
	answered := time.Now()
	if err := s.Ack(ctx); err != nil {
		s.Close()
		m.Close()
		return time.Time{}, fmt.Errorf("ack: %w", err)
	}
	return answered, nil
}

// rtpCall is a call a test peer placed, with its RTP socket: the failover
// PBX's (failoverCall) and the edge UA's (edgeCall).
type rtpCall interface {
	echoes(n int) int
	hangup() error
}

func (c *failoverCall) echoes(n int) int { return rtpEchoes(c.media, c.remote, &c.seq, 0x5eed, n) }

// rtpEchoes sends n RTP packets (20 ms apart, SSRC ssrc, sequence numbers
// after *seq) from media to remote and counts the echoes that come back
// through esbc from the far peer's media endpoint (bounded: 3 s after the
// last packet).
func rtpEchoes(media *net.UDPConn, remote *net.UDPAddr, seq *uint16, ssrc uint32, n int) int {
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 1500)
		k := 0
		_ = media.SetReadDeadline(time.Now().Add(time.Duration(n)*20*time.Millisecond + 3*time.Second))
		for k < n {
			if _, err := media.Read(buf); err != nil {
				break
			}
			k++
		}
		got <- k
	}()
	payload := make([]byte, 160)
	for i := range n {
		*seq++
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: *seq,
			Timestamp: uint32(*seq) * 160, SSRC: ssrc}, Payload: payload}
		b, _ := pkt.Marshal()
		_, _ = media.WriteToUDP(b, remote)
		if i < n-1 {
			time.Sleep(20 * time.Millisecond) // packet pacing, not readiness
		}
	}
	return <-got
}

// hangup sends BYE from the PBX; the error is what the PBX sees.
func (c *failoverCall) hangup() error {
	defer c.media.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.sess.Bye(ctx)
}

// failoverAdmin reads esbc's admin API.
type failoverAdmin struct{ base string } // http://host:port

// get is the body of a GET of path (bounded: 5 s).
func (a failoverAdmin) get(t testing.TB, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// failoverState is /api/v1/registrations: registrations and target health.
type failoverState struct {
	Registrations []struct {
		Trunk, State, Target string
	} `json:"registrations"`
	Targets []struct {
		Trunk, Target string
		Up, Preferred bool
		Since         time.Time
	} `json:"targets"`
}

func (a failoverAdmin) state(t *testing.T) failoverState {
	t.Helper()
	var s failoverState
	body := a.get(t, "/api/v1/registrations")
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("/api/v1/registrations: %v\n%s", err, body)
	}
	return s
}

// target returns (up, preferred, known) of a target in the admin API.
func (s failoverState) target(key string) (up, preferred, known bool) {
	for _, x := range s.Targets {
		if x.Target == key {
			return x.Up, x.Preferred, true
		}
	}
	return false, false, false
}

// registeredAt is the registration's target when registered, else "".
func (s failoverState) registeredAt(trunk string) string {
	for _, r := range s.Registrations {
		if r.Trunk == trunk && r.State == "registered" {
			return r.Target
		}
	}
	return ""
}

// targetUp reads esbc_trunk_target_up for a target from /metrics: 1, 0, or
// -1 when the series is absent.
func (a failoverAdmin) targetUp(t *testing.T, target string) float64 {
	t.Helper()
	for _, line := range strings.Split(a.get(t, "/metrics"), "\n") {
		if strings.HasPrefix(line, "esbc_trunk_target_up{") && strings.Contains(line, `target="`+target+`"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return -1
}

// failoverPoll polls cond every 50 ms until it holds or d passes.
func failoverPoll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

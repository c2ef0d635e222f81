package trunk

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// registrar is a real SIP registrar on a loopback socket (a sipgo UA) that
// challenges REGISTER, checks the digest answer with its own computation
// (independent of the code under test) and records what it received.
type registrar struct {
	t        *testing.T
	addr     string // ip:port it listens on
	network  string // "udp" | "tcp"
	ua       *sipgo.UserAgent
	srv      *sipgo.Server
	user     string
	password string
	realm    string

	// behaviour, changeable while running
	mode      atomic.Value // string: "auth401" | "auth407" | "open" | "drop" | "503" | "403"
	algorithm atomic.Value // string: "MD5" | "SHA-256"
	grant     atomic.Int64 // seconds granted; 0 = what was asked
	received  atomic.Value // string: received= to put in the Via of answers ("" = sipgo's)
	minExp    atomic.Int64 // > 0: answer 423 with this Min-Expires below it

	mu        sync.Mutex
	registers []*sip.Request // every REGISTER received, guarded by mu
	good      []*sip.Request // REGISTERs whose credentials verified, guarded by mu
	bad       []string       // reasons of credentials that failed to verify, guarded by mu
	options   int            // OPTIONS received, guarded by mu
	nonces    map[string]bool

	crlf atomic.Int64 // double-CRLF pings seen on TCP connections

	conns []net.Conn // TCP connections accepted, guarded by mu

	closer io.Closer     // the listening socket: sipgo's UA.Close leaves it open
	done   chan struct{} // closed when the serve goroutine returns

	// A handler answering while the UA closes makes sipgo open a fresh UDP
	// socket for the answer (its "Creating server connection" fallback)
	// that outlives UA.Close: close waits for handlers, which stop answering.
	hmu      sync.Mutex
	closing  bool           // guarded by hmu
	handlers sync.WaitGroup // in-flight handlers; Add under hmu while !closing
}

// enter registers a handler; false means the registrar is closing.
func (r *registrar) enter() bool {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if r.closing {
		return false
	}
	r.handlers.Add(1)
	return true
}

func newRegistrar(t *testing.T, network, ip string) *registrar {
	t.Helper()
	r := &registrar{t: t, network: network, user: "990500000231", password: "s3cr3t",
		realm: "sip.example.test", nonces: map[string]bool{},
		done: make(chan struct{})}
	r.mode.Store("auth401")
	r.algorithm.Store("MD5")
	r.received.Store("")
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("registrar"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	r.ua, r.srv = ua, srv
	srv.OnRegister(r.onRegister)
	srv.OnOptions(r.onOptions)
	ready := make(chan struct{})
	switch network {
	case "udp":
		conn, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		r.addr = conn.LocalAddr().String()
		r.closer = conn
		go func() { defer close(r.done); close(ready); _ = srv.ServeUDP(conn) }()
	case "tcp":
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		r.addr = ln.Addr().String()
		r.closer = ln
		go func() { defer close(r.done); close(ready); _ = srv.ServeTCP(&tapListener{Listener: ln, r: r}) }()
	default:
		t.Fatalf("network %s", network)
	}
	<-ready
	t.Cleanup(r.close)
	return r
}

var closeOnce sync.Map

func (r *registrar) close() {
	if _, done := closeOnce.LoadOrStore(r, true); done {
		return
	}
	r.hmu.Lock()
	r.closing = true
	r.hmu.Unlock()
	r.handlers.Wait()
	_ = r.srv.Close()
	_ = r.ua.Close()
	_ = r.closer.Close()
	<-r.done
}

func (r *registrar) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	if !r.enter() {
		return
	}
	defer r.handlers.Done()
	r.mu.Lock()
	r.options++
	r.mu.Unlock()
	switch r.mode.Load().(string) {
	case "drop":
		return
	case "503":
		_ = tx.Respond(sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil))
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
}

func (r *registrar) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	if !r.enter() {
		return
	}
	defer r.handlers.Done()
	r.mu.Lock()
	r.registers = append(r.registers, req)
	r.mu.Unlock()

	mode := r.mode.Load().(string)
	switch mode {
	case "drop":
		return
	case "503":
		_ = tx.Respond(sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil))
		return
	case "403":
		_ = tx.Respond(sip.NewResponseFromRequest(req, 403, "Forbidden", nil))
		return
	}
	if mode != "open" {
		hdrName, chalName, code, reason := "Authorization", "WWW-Authenticate", 401, "Unauthorized"
		if mode == "auth407" {
			hdrName, chalName, code, reason = "Proxy-Authorization", "Proxy-Authenticate", 407, "Proxy Authentication Required"
		}
		ok := false
		if h := req.GetHeader(hdrName); h != nil {
			if err := r.verify(req, h.Value()); err != nil {
				r.mu.Lock()
				r.bad = append(r.bad, err.Error())
				r.mu.Unlock()
			} else {
				ok = true
			}
		}
		if !ok {
			nonce := sip.GenerateTagN(16)
			r.mu.Lock()
			r.nonces[nonce] = true
			r.mu.Unlock()
			res := sip.NewResponseFromRequest(req, code, reason, nil)
			res.AppendHeader(sip.NewHeader(chalName, fmt.Sprintf(
				`Digest realm="%s", nonce="%s", qop="auth", algorithm=%s`, r.realm, nonce, r.algorithm.Load())))
			_ = tx.Respond(res)
			return
		}
		r.mu.Lock()
		r.good = append(r.good, req)
		r.mu.Unlock()
	}
	if min := r.minExp.Load(); min > 0 {
		if e := req.GetHeader("Expires"); e != nil {
			if n, _ := strconv.Atoi(e.Value()); n > 0 && int64(n) < min {
				res := sip.NewResponseFromRequest(req, 423, "Interval Too Brief", nil)
				res.AppendHeader(sip.NewHeader("Min-Expires", strconv.FormatInt(min, 10)))
				_ = tx.Respond(res)
				return
			}
		}
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	exp := req.GetHeader("Expires").Value()
	if g := r.grant.Load(); g > 0 && exp != "0" {
		exp = strconv.FormatInt(g, 10)
	}
	if c := req.Contact(); c != nil && exp != "0" {
		ch := c.Clone()
		ch.Params = sip.HeaderParams{{K: "expires", V: exp}}
		// Another binding of the same AOR, listed first, must not be taken for ours.
		res.AppendHeader(sip.NewHeader("Contact", "<sip:other@192.0.2.99:5060>;expires=7, "+ch.Value()))
	}
	res.AppendHeader(sip.NewHeader("Expires", exp))
	if recv := r.received.Load().(string); recv != "" {
		if via := res.Via(); via != nil {
			via.Params.Remove("received")
			via.Params.Add("received", recv)
		}
	}
	_ = tx.Respond(res)
}

// verify checks a digest answer on its own: RFC 7616 §3.4.1 with crypto/md5
// and crypto/sha256, the nonce must be one we issued and the uri the
// Request-URI as sent.
func (r *registrar) verify(req *sip.Request, value string) error {
	c, err := digest.ParseCredentials(value) // parsing only; the arithmetic is ours
	if err != nil {
		return err
	}
	r.mu.Lock()
	known := r.nonces[c.Nonce]
	r.mu.Unlock()
	if !known {
		return errors.New("unknown nonce")
	}
	if c.Username != r.user || c.Realm != r.realm {
		return fmt.Errorf("username/realm %s/%s", c.Username, c.Realm)
	}
	if c.URI != req.Recipient.String() {
		return fmt.Errorf("uri %q, request-uri %q", c.URI, req.Recipient.String())
	}
	var h func() hash.Hash
	switch strings.ToUpper(c.Algorithm) {
	case "", "MD5":
		h = md5.New
	case "SHA-256":
		h = sha256.New
	default:
		return fmt.Errorf("algorithm %q", c.Algorithm)
	}
	if want := r.algorithm.Load().(string); !strings.EqualFold(c.Algorithm, want) && (want != "MD5" || c.Algorithm != "") {
		return fmt.Errorf("algorithm %q, challenged %q", c.Algorithm, want)
	}
	H := func(s string) string { x := h(); x.Write([]byte(s)); return hex.EncodeToString(x.Sum(nil)) }
	ha1 := H(r.user + ":" + r.realm + ":" + r.password)
	ha2 := H(string(req.Method) + ":" + c.URI)
	if c.QOP != "auth" || c.Cnonce == "" || c.Nc == 0 {
		return fmt.Errorf("qop %q cnonce %q nc %d", c.QOP, c.Cnonce, c.Nc)
	}
	want := H(ha1 + ":" + c.Nonce + ":" + fmt.Sprintf("%08x", c.Nc) + ":" + c.Cnonce + ":auth:" + ha2)
	if c.Response != want {
		return errors.New("response mismatch")
	}
	return nil
}

func (r *registrar) registerCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.registers)
}

func (r *registrar) goodRegisters() []*sip.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*sip.Request(nil), r.good...)
}

func (r *registrar) badCreds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

func (r *registrar) optionsCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.options
}

// tapListener counts RFC 5626 double-CRLF pings on the server side while
// passing every byte on to sipgo.
type tapListener struct {
	net.Listener
	r *registrar
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.r.mu.Lock()
	l.r.conns = append(l.r.conns, c)
	l.r.mu.Unlock()
	return &tapConn{Conn: c, r: l.r}, nil
}

// accepted returns how many TCP connections the registrar accepted.
func (r *registrar) accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// dropConnections closes the TCP connections the registrar accepted (a
// restart of the server, or a NAT binding gone).
func (r *registrar) dropConnections() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		_ = c.Close()
	}
}

// registerSources returns the source address of every REGISTER received.
func (r *registrar) registerSources() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.registers))
	for _, req := range r.registers {
		out = append(out, req.Source())
	}
	return out
}

type tapConn struct {
	net.Conn
	r *registrar
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	// Pings may coalesce in one read; a SIP message never is CRLF only.
	if n >= len(crlfPing) && len(bytes.Trim(b[:n], "\r\n")) == 0 {
		c.r.crlf.Add(int64(n / len(crlfPing)))
	}
	return n, err
}

// waitFor polls cond until it holds or the test's patience (10 s) runs out.
// It is a readiness wait, not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client is the trunk side: a sipgo UA, server and client as the app
// builds them. On udp the client sends from its listening socket (as the app
// does with WithClientConnectionAddr), so rport equals the advertised port.
type client struct {
	ua     *sipgo.UserAgent
	client *sipgo.Client
	host   string
	port   int // advertised (listening) port
}

func newClient(t *testing.T, network string) *client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("esbc-test"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{ua: ua, host: "127.0.0.1"}
	var closer io.Closer
	done := make(chan struct{})
	opts := []sipgo.ClientOption{sipgo.WithClientHostname("127.0.0.1")}
	switch network {
	case "udp":
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.port = conn.LocalAddr().(*net.UDPAddr).Port
		closer = conn
		go func() { defer close(done); _ = srv.ServeUDP(conn) }()
		waitFor(t, "client udp socket served", func() bool {
			c, err := ua.TransportLayer().GetConnection("udp", conn.LocalAddr().String())
			return err == nil && c != nil
		})
		opts = append(opts, sipgo.WithClientConnectionAddr(conn.LocalAddr().String()), sipgo.WithClientPort(c.port))
	default:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.port = ln.Addr().(*net.TCPAddr).Port
		closer = ln
		go func() { defer close(done); _ = srv.ServeTCP(ln) }()
	}
	c.client, err = sipgo.NewClient(ua, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Close()
		_ = ua.Close()
		_ = closer.Close()
		<-done
	})
	return c
}

// closeTrunk closes t within a bounded time.
func closeTrunk(t *testing.T, tr *Trunk) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return tr.Close(ctx)
}

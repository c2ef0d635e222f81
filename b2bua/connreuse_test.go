package b2bua_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/b2bua/trunk"
)

// negativeRefs counts sipgo's "TCP ref went negative" warnings by the local
// address of the connection they are about. sipgo logs them through its
// package-level default logger, the only place the reference count of a
// connection shows; the counting handler is installed once, before any
// test or UserAgent exists (sipgo's globals are set once at start).
var negativeRefs = struct {
	sync.Mutex
	by map[string]int
}{by: map[string]int{}}

func init() {
	sip.SetDefaultLogger(slog.New(refWarnCounter{sip.DefaultLogger().Handler()}))
}

// refWarnCounter passes every record on to the handler it wraps and counts
// the negative reference warnings of sip.(*TCPConnection).TryClose.
type refWarnCounter struct{ slog.Handler }

func (h refWarnCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "TCP ref went negative" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "ip" {
				negativeRefs.Lock()
				negativeRefs.by[a.Value.String()]++
				negativeRefs.Unlock()
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}

func (h refWarnCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return refWarnCounter{h.Handler.WithAttrs(as)}
}

func (h refWarnCounter) WithGroup(name string) slog.Handler {
	return refWarnCounter{h.Handler.WithGroup(name)}
}

func negativeRefsOf(laddr string) int {
	negativeRefs.Lock()
	defer negativeRefs.Unlock()
	return negativeRefs.by[laddr]
}

// trunkConn returns the connection esbc's WAN user agent holds to the
// trunk server (nil if none), giving back the reference GetConnection took.
func trunkConn(e *env) sip.Connection {
	c, err := e.wan.ua.TransportLayer().GetConnection("tls", e.trk.addr)
	if err != nil || c == nil {
		return nil
	}
	_, _ = c.TryClose()
	return c
}

// answerThenHand answers an INVITE (180, 200 with the offer mirrored) and
// then hands the dialog to the test through u.sessions.
func answerThenHand(u *uas, req *sip.Request, tx sip.ServerTransaction) {
	sess, err := u.dsc.ReadInvite(req, tx)
	if err != nil {
		return
	}
	_ = sess.Respond(180, "Ringing", nil)
	if err := sess.Respond(200, "OK", answerFor(req.Body()), sip.NewHeader("Content-Type", "application/sdp")); err != nil {
		return
	}
	u.sessions <- sess
}

// reinviteOver sends an in-dialog re-INVITE with do and ACKs a 2xx with
// ack; dest, when set, is where both go (the trunk's connection to esbc).
func reinviteOver(t *testing.T, ctx context.Context, target sip.Uri, dest string, laddr sip.Addr, body []byte,
	do func(context.Context, *sip.Request) (*sip.Response, error), ack func(*sip.Request) error) {
	t.Helper()
	req := sip.NewRequest(sip.INVITE, target)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(body)
	req.Laddr = laddr
	if dest != "" {
		req.SetDestination(dest)
	}
	res, err := do(ctx, req)
	if err != nil {
		t.Fatalf("re-INVITE: %v", err)
	}
	if !res.IsSuccess() {
		t.Fatalf("re-INVITE answered %d", res.StatusCode)
	}
	a := sip.NewRequest(sip.ACK, target)
	a.Laddr = laddr
	if dest != "" {
		a.SetDestination(dest)
	}
	if err := ack(a); err != nil {
		t.Fatalf("ACK of re-INVITE: %v", err)
	}
}

// TestTrunkKeepsOneTLSConnection: SPEC §1 "keeps a TLS connection to the
// chosen server". Registration (and its refreshes and the final
// unregistration), OPTIONS keepalive, CRLF pings, outbound calls (digest
// challenged) with re-INVITEs and BYEs from both ends, and inbound calls
// that the trunk sends over the connection esbc opened (a Skype Connect
// style trunk reaching an esbc behind NAT) all go over ONE TLS connection:
// the trunk's listener accepts exactly one connection from esbc, esbc's
// listener none from the trunk, the connection esbc holds is the same one
// from start to end with a positive reference count, and sipgo's reference
// count of it never goes negative. After esbc's Close the connection is
// closed (TestMain's goleak checks that no reader goroutine is left).
func TestTrunkKeepsOneTLSConnection(t *testing.T) {
	var registers, pings atomic.Int32
	e := newEnv(t, envOpts{
		auth: true,
		trunkFilter: func(_ sip.TransportReadProps, data []byte) ([]byte, error) {
			if string(data) == "\r\n\r\n" { // RFC 5626 §3.5.1 ping, read on its own
				pings.Add(1)
			}
			return data, nil
		},
		setup: func(e *env) {
			e.trk.srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
				registers.Add(1)
				res := sip.NewResponseFromRequest(req, 200, "OK", nil)
				if c := req.Contact(); c != nil {
					res.AppendHeader(sip.HeaderClone(c))
				}
				if h := req.GetHeader("Expires"); h != nil && h.Value() != "0" {
					res.AppendHeader(sip.NewHeader("Expires", "2")) // refresh after 1 s
				}
				_ = tx.Respond(res)
			})
		},
	})
	// The sessions are handed over once answered (the default script hands
	// them over before its 200: the test would race with Respond).
	e.trkUAS.setScript(answerThenHand)
	e.pbxUAS.setScript(answerThenHand)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	trkLn, wanLn := e.trk.ln.(*closingListener), e.wan.ln.(*closingListener)

	// Registration, OPTIONS and CRLF keepalive on, as a production trunk
	// runs (the harness starts the trunk with all three off).
	tr, _ := e.set.Get("itsp")
	cfg := tr.Config()
	cfg.Register = true
	cfg.RegisterExpires = 2 * time.Second
	cfg.OptionsInterval = 100 * time.Millisecond
	cfg.KeepaliveInterval = 50 * time.Millisecond
	cfg.ContactHost, cfg.ContactPort = wanIP, e.wan.port()
	if err := e.set.Apply(ctx, []trunk.Config{cfg}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		tr, _ := e.set.Get("itsp")
		return tr.Registration().State == trunk.StateRegistered
	}, "trunk not registered")
	conn := trunkConn(e)
	if conn == nil {
		t.Fatal("esbc holds no connection to the trunk after registering")
	}
	flow := conn.LocalAddr().String() // esbc's end, as the trunk sees it

	// Outbound calls: PBX → esbc → trunk (the INVITE is challenged with
	// 407 and sent again), a re-INVITE from each end, BYE from each end.
	for i := range 2 {
		s, err := e.outbound(ctx, "94155550123")
		if err != nil {
			t.Fatalf("outbound call %d: %v", i, err)
		}
		sess := <-e.trkUAS.sessions
		reinviteOver(t, ctx, s.InviteResponse.Contact().Address, "", s.InviteRequest.Laddr, sdpOffer(pbxIP, 40002),
			s.Do, s.WriteRequest)
		reinviteOver(t, ctx, sess.InviteRequest.Contact().Address, flow, sip.Addr{}, sdpOffer(trunkIP, 50002),
			sess.Do, sess.WriteRequest)
		if i == 0 {
			if err := hangUp(ctx, s); err != nil {
				t.Fatalf("PBX BYE: %v", err)
			}
		} else {
			bye := sip.NewRequest(sip.BYE, sess.InviteRequest.Contact().Address)
			bye.SetDestination(flow)
			if err := sess.WriteBye(ctx, bye); err != nil {
				t.Fatalf("trunk BYE: %v", err)
			}
		}
		e.waitEnded(1)
	}

	// Inbound calls over esbc's connection: the trunk sends the INVITE and
	// its in-dialog requests to the flow (RewriteContact: to the source of
	// esbc's answers), never to esbc's listening port.
	for i := range 2 {
		s := trunkInviteOver(t, ctx, e, flow, fmt.Sprintf("inbound call %d", i))
		if err := s.Ack(ctx); err != nil {
			t.Fatalf("inbound call %d: ACK: %v", i, err)
		}
		psess := <-e.pbxUAS.sessions
		// PBX re-INVITE: esbc sends it to the trunk where the dialog lives.
		reinviteOver(t, ctx, psess.InviteRequest.Contact().Address, "", sip.Addr{}, sdpOffer(pbxIP, 40004),
			psess.Do, psess.WriteRequest)
		// Trunk re-INVITE and BYE over the flow.
		reinviteOver(t, ctx, s.InviteResponse.Contact().Address, "", sip.Addr{}, sdpOffer(trunkIP, 50004),
			s.Do, s.WriteRequest)
		if err := s.Bye(ctx); err != nil {
			t.Fatalf("inbound call %d: trunk BYE: %v", i, err)
		}
		e.waitEnded(1)
	}

	// Keepalives and a registration refresh went out meanwhile, or now.
	waitFor(t, func() bool {
		return registers.Load() >= 2 && len(e.trkUAS.requests(sip.OPTIONS)) >= 3 && pings.Load() >= 3
	}, "no registration refresh, OPTIONS or CRLF pings")

	// esbc's Close: calls, then trunks (unregistration, over the same connection).
	if err := e.b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	n := registers.Load()
	if err := e.set.Close(ctx); err != nil {
		t.Fatalf("trunk set close (unregister): %v", err)
	}
	if registers.Load() == n {
		t.Error("no unregistration reached the trunk")
	}

	if got := trkLn.acceptedFrom(wanIP); got != 1 {
		t.Errorf("the trunk accepted %d connections from esbc, want 1 (a connection esbc opened was closed and replaced)", got)
	}
	if got := wanLn.acceptedFrom(trunkIP); got != 0 {
		t.Errorf("esbc accepted %d connections from the trunk, want 0 (the trunk's requests should ride esbc's connection)", got)
	}
	if now := trunkConn(e); now != conn {
		t.Errorf("esbc's connection to the trunk changed: %v, was %s", now, flow)
	}
	if ref := conn.Ref(0); ref <= 0 {
		// sip.(*ConnectionPool).Clear, at UserAgent.Close, skips
		// connections with a count <= 0: this one would stay open.
		t.Errorf("reference count of esbc's trunk connection is %d", ref)
	}
	if n := negativeRefsOf(flow); n != 0 {
		t.Errorf("sipgo's reference count of esbc's trunk connection went negative %d times", n)
	}

	// esbc's user agent closes its connection: the trunk sees it end.
	_ = e.wan.ua.Close()
	waitFor(t, func() bool {
		c, err := e.trk.ua.TransportLayer().GetConnection("tls", flow)
		if err != nil || c == nil {
			return true
		}
		_, _ = c.TryClose()
		return false
	}, "esbc's connection to the trunk still open after its UserAgent closed")
}

// TestTrunkConnectionLostReRegisters: the trunk drops the TLS connection
// esbc opened (a server restart, a NAT binding gone). esbc registers again
// at once over a new connection (it does not wait for the refresh, 5 min
// away here), and the trunk's next inbound call over that new connection
// reaches the PBX.
func TestTrunkConnectionLostReRegisters(t *testing.T) {
	var mu sync.Mutex
	var sources []string // source of every REGISTER with Expires > 0
	e := newEnv(t, envOpts{setup: func(e *env) {
		e.trk.srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
			if h := req.GetHeader("Expires"); h != nil && h.Value() != "0" {
				mu.Lock()
				sources = append(sources, req.Source())
				mu.Unlock()
			}
			res := sip.NewResponseFromRequest(req, 200, "OK", nil)
			if c := req.Contact(); c != nil {
				res.AppendHeader(sip.HeaderClone(c))
			}
			_ = tx.Respond(res)
		})
	}})
	e.pbxUAS.setScript(answerThenHand)
	registered := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), sources...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, _ := e.set.Get("itsp")
	cfg := tr.Config()
	cfg.Register = true
	cfg.RegisterExpires = 600 * time.Second
	cfg.KeepaliveInterval = 20 * time.Millisecond
	cfg.ContactHost, cfg.ContactPort = wanIP, e.wan.port()
	if err := e.set.Apply(ctx, []trunk.Config{cfg}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		tr, _ := e.set.Get("itsp")
		return len(registered()) == 1 && tr.Registration().State == trunk.StateRegistered
	}, "trunk not registered")
	first := registered()[0] // esbc's end of its connection, as the trunk sees it

	// The trunk closes its end of esbc's connection.
	c, err := e.trk.ua.TransportLayer().GetConnection("tls", first)
	if err != nil || c == nil {
		t.Fatalf("the trunk has no connection from %s: %v", first, err)
	}
	_ = c.Close()
	waitFor(t, func() bool { return len(registered()) >= 2 }, "esbc did not register again after losing its connection")
	flow := registered()[1]
	if flow == first {
		t.Fatalf("the new REGISTER came over the closed connection %s", first)
	}

	// An inbound call over the new connection reaches the PBX.
	s := trunkInviteOver(t, ctx, e, flow, "inbound call over the new connection")
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	<-e.pbxUAS.sessions
	if err := s.Bye(ctx); err != nil {
		t.Fatalf("trunk BYE: %v", err)
	}
	e.waitEnded(1)
	if got := e.wan.ln.(*closingListener).acceptedFrom(trunkIP); got != 0 {
		t.Errorf("esbc accepted %d connections from the trunk, want 0", got)
	}
}

// trunkInviteOver places an inbound call from the trunk to esbc over the
// connection esbc opened (flow, its address at the trunk), as a trunk
// reaching an esbc behind NAT does: the INVITE and the dialog's requests
// go to the flow (RewriteContact: to the source of esbc's answers), never
// to esbc's listening port. It returns the answered session (not ACKed).
func trunkInviteOver(t *testing.T, ctx context.Context, e *env, flow, what string) *sipgo.DialogClientSession {
	t.Helper()
	trkUA := &sipgo.DialogUA{
		Client: e.trk.cli,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "trunk", Host: trunkIP, Port: e.trk.port(),
			UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}},
		RewriteContact: true,
	}
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "+14155550100", Host: wanIP, Port: e.wan.port(),
		UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+442071234567", Host: "trunk.test"},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(sdpOffer(trunkIP, 50000))
	req.SetTransport("TLS")
	req.SetDestination(flow)
	s, err := trkUA.WriteInvite(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return s
}

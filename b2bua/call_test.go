package b2bua_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

func TestOutboundCallBasic(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatalf("outbound call: %v", err)
	}
	inv := e.trkUAS.lastInvite()
	if inv == nil {
		t.Fatal("trunk got no INVITE")
	}
	if got := inv.Recipient.User; got != "+14155550123" {
		t.Errorf("R-URI user %q, want +14155550123", got)
	}
	if got := inv.From().Address.User; got != "990500000231" {
		t.Errorf("From user %q, want the trunk username", got)
	}
	if h := inv.GetHeader("P-Asserted-Identity"); h == nil || !strings.Contains(h.Value(), "+14155550100") {
		t.Errorf("P-Asserted-Identity %v, want the allowed caller ID", h)
	}
	if h := inv.GetHeader("User-Agent"); h == nil || h.Value() != "esbc" {
		t.Errorf("User-Agent %v", h)
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatalf("BYE from PBX: %v", err)
	}
	cdr := e.waitEnded(1)[0]
	if cdr.Disposition != "answered" || cdr.Trunk != "itsp" || cdr.Direction != "outbound" {
		t.Errorf("CDR %+v", cdr)
	}
	select {
	case <-e.trkUAS.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("trunk got no BYE")
	}
	if strings.Contains(headersOf(inv), pbxIP) {
		t.Errorf("PBX address leaked")
	}
}

func TestInboundCallByeFromPBX(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.inbound(ctx, "+14155550100")
	if err != nil {
		t.Fatalf("inbound call: %v", err)
	}
	inv := e.pbxUAS.lastInvite()
	if inv == nil || inv.Recipient.User != "200" {
		t.Fatalf("PBX INVITE %v", inv)
	}
	if got := inv.From().Address.User; got != "+442071234567" {
		t.Errorf("caller at PBX %q", got)
	}
	if inv.CallID().Value() == s.InviteRequest.CallID().Value() {
		t.Error("Call-ID of the trunk leg reused on the PBX leg")
	}
	// The PBX hangs up.
	var sess *sipgo.DialogServerSession
	select {
	case sess = <-e.pbxUAS.sessions:
	case <-ctx.Done():
		t.Fatal("no PBX session")
	}
	bye := sip.NewRequest(sip.BYE, sess.InviteRequest.Contact().Address)
	bye.SetTransport("UDP")
	bye.Laddr = sip.Addr{IP: net.ParseIP(pbxIP), Port: e.pbx.port()} // from the PBX's socket
	if err := sess.WriteBye(ctx, bye); err != nil {
		t.Fatalf("BYE from PBX: %v", err)
	}
	select {
	case <-s.Context().Done():
	case <-ctx.Done():
		t.Fatal("trunk leg not ended by BYE")
	}
	cdr := e.waitEnded(1)[0]
	if cdr.Direction != "inbound" || cdr.Disposition != "answered" {
		t.Errorf("CDR %+v", cdr)
	}
}

func TestOutboundByeFromTrunk(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	sess := <-e.trkUAS.sessions
	if err := sess.Bye(ctx); err != nil {
		t.Fatalf("BYE from trunk: %v", err)
	}
	select {
	case <-s.Context().Done():
	case <-ctx.Done():
		t.Fatal("PBX leg not ended")
	}
	e.waitEnded(1)
	if n := e.b.ActiveCalls(); n != 0 {
		t.Errorf("%d calls left", n)
	}
}

func TestInboundFromUnknownSourceRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	// A UA on an address that is no trunk server calls the WAN side.
	rogue := newStack(t, "127.0.0.66", "tls", e.srvTLS("127.0.0.66"), "rogue")
	rogue.start()
	defer rogue.close()
	u := newUAC(rogue, "127.0.0.66", true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", User: "+14155550100", Host: wanIP, Port: e.wan.port(), UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}
	s, err := u.dcc.Invite(ctx, uri, sdpOffer("127.0.0.66", 50000))
	if err != nil {
		t.Fatal(err)
	}
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{})
	if code := statusOf(err); code != 403 {
		t.Fatalf("rogue INVITE answered %d (%v), want 403", code, err)
	}
	if inv := e.pbxUAS.lastInvite(); inv != nil {
		t.Fatal("rogue call reached the PBX")
	}
}

// TestCallOutlivesInviteTransaction: 64*T1 after the ACK the call drops
// leg B's INVITE transaction (RFC 6026 Timer M, memory per call); the
// dialog goes on: a BYE from the PBX still reaches the trunk and the call
// ends answered.
func TestCallOutlivesInviteTransaction(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatalf("outbound call: %v", err)
	}
	// Past Timer M of leg B's INVITE and Timer L of leg A's: waiting for
	// a timer to fire, not for a readiness signal.
	time.Sleep(64*sip.T1 + 10*sip.T1)
	if n := e.b.ActiveCalls(); n != 1 {
		t.Fatalf("%d calls active after 64*T1, want 1", n)
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatalf("BYE from PBX: %v", err)
	}
	select {
	case <-e.trkUAS.byes:
	case <-ctx.Done():
		t.Fatal("trunk got no BYE")
	}
	if cdr := e.waitEnded(1)[0]; cdr.Disposition != "answered" {
		t.Errorf("CDR %+v", cdr)
	}
}

package b2bua_test

import (
	"context"
	"strings"
	"testing"
	"time"
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
	if err := s.Bye(ctx); err != nil {
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

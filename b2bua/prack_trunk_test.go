package b2bua_test

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/b2bua"
	"github.com/esbc/esbc/b2bua/header"
)

// TestPrackOfferPerTrunk: esbc's INVITE toward a trunk offers
// "Supported: 100rel" by default and not with prack: false
// (TrunkConfig.NoPRACK), where the PBX's own 100rel does not leak through
// the header policy either (the PBX's other tags still cross); the change
// is hot (SetConfig: the next call uses it); calls from that trunk toward
// the PBX keep offering 100rel.
func TestPrackOfferPerTrunk(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The production path: app always sets a WAN header policy.
	pol, err := header.CompilePolicy(header.Policy{ServerHeader: "esbc",
		Allow: []string{"Allow", "Content-Type", "P-Asserted-Identity", "Privacy", "Require", "Supported", "Session-Expires", "Min-SE"}})
	if err != nil {
		t.Fatal(err)
	}
	setTrunk := func(noPrack bool) {
		cfg := *e.cfg
		cfg.ToWAN = pol
		tc := cfg.Trunks["itsp"]
		tc.NoPRACK = noPrack
		cfg.Trunks = map[string]b2bua.TrunkConfig{"itsp": tc}
		if err := e.b.SetConfig(&cfg); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		noPrack   bool
		supported string // the PBX's Supported
		want      bool
	}{
		{"default", false, "100rel, timer", true},
		{"prack false", true, "100rel, timer", false},
		{"prack false, PBX supports only 100rel", true, "100rel", false}, // nothing of esbc's: the policy would copy the PBX's
		{"default again", false, "100rel", true},
	} {
		setTrunk(tc.noPrack)
		uri := sip.Uri{Scheme: "sip", User: "94155550123", Host: lanIP, Port: e.lan.port()}
		s, err := e.pbxUAC.dcc.Invite(ctx, uri, sdpOffer(pbxIP, 40000),
			&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+14155550100", Host: "pbx.corp.local"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}},
			sip.NewHeader("Supported", tc.supported),
			sip.NewHeader("Content-Type", "application/sdp"))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := s.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		inv := e.trkUAS.lastInvite()
		if inv == nil {
			t.Fatalf("%s: trunk got no INVITE", tc.name)
		}
		if got := hasTag(inv, "Supported", "100rel"); got != tc.want {
			t.Errorf("%s: 100rel in Supported toward the trunk = %v, want %v\n%s", tc.name, got, tc.want, headersOf(inv))
		}
		if hasTag(inv, "Require", "100rel") || hasTag(inv, "Supported", "timer") != (tc.supported != "100rel") {
			t.Errorf("%s: option tags toward the trunk:\n%s", tc.name, headersOf(inv))
		}
		if n := len(inv.GetHeaders("Supported")); n > 1 {
			t.Errorf("%s: %d Supported headers", tc.name, n)
		}
		if err := hangUp(ctx, s); err != nil {
			t.Fatal(err)
		}
		e.waitEnded(1)
	}

	// prack: false is about the trunk leg: a call from that trunk still
	// offers 100rel toward the PBX.
	setTrunk(true)
	s, err := e.inbound(ctx, "+14155550100")
	if err != nil {
		t.Fatalf("inbound: %v", err)
	}
	if inv := e.pbxUAS.lastInvite(); inv == nil || !hasTag(inv, "Supported", "100rel") {
		t.Errorf("INVITE toward the PBX lost 100rel: %v", inv)
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

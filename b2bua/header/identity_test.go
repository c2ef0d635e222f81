package header

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// e164 is a stand-in for route.Table.E164 under NANP: 10 digits, 1+10
// digits or +1 and 10 digits; anything else is invalid.
func e164(s string) (string, error) {
	if i := strings.IndexByte(s, '@'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "sip:"), "tel:")
	d := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
	switch {
	case len(d) == 10:
		return "+1" + d, nil
	case len(d) == 11 && d[0] == '1':
		return "+" + d, nil
	}
	return "", errors.New("invalid number")
}

var skype = TrunkIdentity{
	Domain:           "sip.skype.com",
	FromUser:         "990500000231",
	CallerID:         "+14155550100",
	AllowedCallerIDs: []string{"+14155550100", "+1 (415) 555-0111"},
}

const (
	mainPAI   = "<sip:+14155550100@sip.skype.com;user=phone>"
	didPAI    = `"Alice Smith" <sip:+14155550111@sip.skype.com;user=phone>`
	skypeFrom = `"Alice Smith" <sip:990500000231@sip.skype.com>;tag=legb`
	anonFrom  = `"Anonymous" <sip:anonymous@anonymous.invalid>;tag=legb`
)

func TestToTrunk(t *testing.T) {
	trusted := skype
	trusted.TrustPAI = true
	keep := skype
	keep.KeepFromUserOnPrivacy = true
	display := skype
	display.FromDisplay = "ACME Corp"
	tests := []struct {
		name       string
		extra      []string
		id         TrunkIdentity
		pbxTrusted bool
		from       string
		pai        string
		privacy    string
	}{
		{"no identity from pbx", nil, skype, true, skypeFrom, `"Alice Smith" ` + mainPAI, ""},
		{"trusted pbx, allowed PAI", []string{"P-Asserted-Identity: <sip:+14155550111@10.0.0.10>"}, skype, true, skypeFrom, didPAI, ""},
		{"trusted pbx, allowed PAI national", []string{"P-Asserted-Identity: <sip:4155550111@10.0.0.10;user=phone>"}, skype, true, skypeFrom, didPAI, ""},
		{"trusted pbx, allowed PAI tel", []string{"P-Asserted-Identity: <tel:+1-415-555-0111>"}, skype, true, skypeFrom, didPAI, ""},
		{"trusted pbx, PAI not allowed", []string{"P-Asserted-Identity: <sip:+12125550199@10.0.0.10>"}, skype, true, skypeFrom, `"Alice Smith" ` + mainPAI, ""},
		{"untrusted pbx, allowed PAI ignored", []string{"P-Asserted-Identity: <sip:+14155550111@10.0.0.10>"}, skype, false, skypeFrom, `"Alice Smith" ` + mainPAI, ""},
		{"trusted pbx, RPID becomes PAI", []string{"Remote-Party-ID: \"Alice Smith\" <sip:4155550111@10.0.0.10>;party=calling;screen=yes;privacy=off"}, skype, true, skypeFrom, didPAI, ""},
		{"trusted pbx, RPID of called party ignored", []string{"Remote-Party-ID: <sip:4155550111@10.0.0.10>;party=called"}, skype, true, skypeFrom, `"Alice Smith" ` + mainPAI, ""},
		{"untrusted pbx, RPID ignored", []string{"Remote-Party-ID: <sip:4155550111@10.0.0.10>;party=calling"}, skype, false, skypeFrom, `"Alice Smith" ` + mainPAI, ""},
		{"trusted pbx, PPI allowed", []string{"P-Preferred-Identity: <sip:+14155550111@10.0.0.10>"}, skype, true, skypeFrom, didPAI, ""},
		{"trusted pbx, second PAI entry", []string{"P-Asserted-Identity: <sip:201@10.0.0.10>, <tel:+14155550111>"}, skype, true, skypeFrom, didPAI, ""},
		{"Privacy none", []string{"Privacy: none"}, skype, true, skypeFrom, `"Alice Smith" ` + mainPAI, ""},
		{"Privacy id, untrusted trunk: no PAI", []string{"Privacy: id"}, skype, true, anonFrom, "", "id"},
		{"Privacy id, trusted trunk: PAI kept", []string{"Privacy: id"}, trusted, true, anonFrom, mainPAI, "id"},
		{"Privacy id, trusted trunk, pbx PAI", []string{"Privacy: id", "P-Asserted-Identity: <sip:+14155550111@10.0.0.10>"}, trusted, true, anonFrom, "<sip:+14155550111@sip.skype.com;user=phone>", "id"},
		{"Privacy user;header", []string{"Privacy: user; header"}, skype, true, anonFrom, "", "id;user;header"},
		{"Privacy id;critical from untrusted pbx honoured", []string{"Privacy: id;critical"}, skype, false, anonFrom, "", "id;critical"},
		{"RPID privacy=full", []string{"Remote-Party-ID: <sip:4155550111@10.0.0.10>;party=calling;privacy=full"}, skype, true, anonFrom, "", "id"},
		{"RPID privacy=full, trusted trunk", []string{"Remote-Party-ID: <sip:4155550111@10.0.0.10>;party=calling;privacy=full"}, trusted, true, anonFrom, "<sip:+14155550111@sip.skype.com;user=phone>", "id"},
		{"Privacy id, keep From user", []string{"Privacy: id"}, keep, true, `"Anonymous" <sip:990500000231@sip.skype.com>;tag=legb`, "", "id"},
		{"From display from config", nil, display, true, `"ACME Corp" <sip:990500000231@sip.skype.com>;tag=legb`, `"ACME Corp" ` + mainPAI, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := pbxInvite(t, tc.extra...)
			out := legB(t)
			out.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:stale@x>"))
			out.AppendHeader(sip.NewHeader("Remote-Party-ID", "<sip:stale@x>"))
			if err := ToTrunk(in, out, tc.id, tc.pbxTrusted, e164); err != nil {
				t.Fatal(err)
			}
			if got := hval(out, "From"); got != tc.from {
				t.Errorf("From = %s; want %s", got, tc.from)
			}
			if got := hval(out, "P-Asserted-Identity"); got != tc.pai {
				t.Errorf("PAI = %s; want %s", got, tc.pai)
			}
			if got := hval(out, "Privacy"); got != tc.privacy {
				t.Errorf("Privacy = %q; want %q", got, tc.privacy)
			}
			for _, h := range []string{"Remote-Party-ID", "P-Preferred-Identity"} {
				if got := hval(out, h); got != "" {
					t.Errorf("%s = %q; want none", h, got)
				}
			}
			if out.From().Params.GetOr("tag", "") != "legb" {
				t.Errorf("From tag lost: %s", hval(out, "From"))
			}
			if s := out.String(); strings.Contains(s, "10.0.0.10") {
				t.Errorf("LAN address leaked:\n%s", s)
			}
		})
	}
}

func TestToTrunkAnonymousFromPBX(t *testing.T) {
	in := parseReq(t,
		"INVITE sip:94155550100@10.0.0.2 SIP/2.0",
		"Via: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK-1",
		`From: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=pbx1`,
		"To: <sip:94155550100@10.0.0.2>",
		"Call-ID: c1",
		"CSeq: 1 INVITE",
	)
	out := legB(t)
	if err := ToTrunk(in, out, skype, true, e164); err != nil {
		t.Fatal(err)
	}
	if got := hval(out, "From"); got != anonFrom {
		t.Errorf("From = %s", got)
	}
	if got := hval(out, "Privacy"); got != "id" {
		t.Errorf("Privacy = %q", got)
	}
	if got := hval(out, "P-Asserted-Identity"); got != "" {
		t.Errorf("PAI = %q", got)
	}
}

func TestToTrunkSanitises(t *testing.T) {
	in := pbxInvite(t)
	in.From().DisplayName = "Bob \"the\" \\Builder\r\nX: y"
	out := legB(t)
	if err := ToTrunk(in, out, skype, false, nil); err != nil {
		t.Fatal(err)
	}
	if got := out.From().DisplayName; got != "Bob the BuilderX: y" {
		t.Errorf("display = %q", got)
	}
	for _, v := range []string{hval(out, "From"), hval(out, "P-Asserted-Identity")} {
		if err := CheckValue(v); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}

	for name, tc := range map[string]struct {
		out *sip.Request
		id  TrunkIdentity
	}{
		"no From":           {sip.NewRequest(sip.INVITE, sip.Uri{Host: "x"}), skype},
		"bad domain":        {legB(t), TrunkIdentity{Domain: "sip.skype.com\r\nX: y", FromUser: "u"}},
		"empty domain":      {legB(t), TrunkIdentity{FromUser: "u"}},
		"bad from user":     {legB(t), TrunkIdentity{Domain: "d", FromUser: "a b"}},
		"bad caller id":     {legB(t), TrunkIdentity{Domain: "d", FromUser: "u", CallerID: "+1\r\nX: y"}},
		"no user at all":    {legB(t), TrunkIdentity{Domain: "d"}},
		"caller id garbage": {legB(t), TrunkIdentity{Domain: "d", FromUser: "u", CallerID: "<sip:x>"}},
	} {
		if err := ToTrunk(pbxInvite(t), tc.out, tc.id, true, e164); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestToPBX(t *testing.T) {
	trunkInvite := func(extra ...string) *sip.Request {
		base := []string{
			"INVITE sip:+14155550100@203.0.113.5:5061;transport=tls SIP/2.0",
			"Via: SIP/2.0/TLS 198.51.100.7:5061;branch=z9hG4bK-9",
			`From: "Caller" <sip:+12125550199@sip.skype.com>;tag=trunk1`,
			"To: <sip:990500000231@sip.skype.com>",
			"Call-ID: trunk-call-1",
			"CSeq: 1 INVITE",
		}
		return parseReq(t, append(base, extra...)...)
	}
	national := func(s string) string { // stand-in for CallerForPBX "national"
		if strings.HasPrefix(s, "+1") && len(s) == 12 {
			return s[2:]
		}
		return s
	}
	tests := []struct {
		name     string
		in       *sip.Request
		trustPAI bool
		format   func(string) string
		from     string
		pai      string
		privacy  string
	}{
		{"untrusted: From only", trunkInvite(), false, nil,
			`"Caller" <sip:+12125550199@pbx.local;user=phone>;tag=legb`, "", ""},
		{"trusted, no PAI: From asserted", trunkInvite(), true, nil,
			`"Caller" <sip:+12125550199@pbx.local;user=phone>;tag=legb`, `"Caller" <sip:+12125550199@pbx.local;user=phone>`, ""},
		{"trusted PAI wins", trunkInvite(`P-Asserted-Identity: "Real Caller" <sip:+13125550142@sip.skype.com>`), true, nil,
			`"Real Caller" <sip:+13125550142@pbx.local;user=phone>;tag=legb`, `"Real Caller" <sip:+13125550142@pbx.local;user=phone>`, ""},
		{"untrusted PAI ignored", trunkInvite("P-Asserted-Identity: <sip:+13125550142@sip.skype.com>"), false, nil,
			`"Caller" <sip:+12125550199@pbx.local;user=phone>;tag=legb`, "", ""},
		{"trusted PAI tel preferred to a name", trunkInvite("P-Asserted-Identity: <sip:alice.smith@skype.com>, <tel:+13125550142>"), true, nil,
			`"Caller" <sip:+13125550142@pbx.local;user=phone>;tag=legb`, `"Caller" <sip:+13125550142@pbx.local;user=phone>`, ""},
		{"trusted RPID", trunkInvite("Remote-Party-ID: <sip:+13125550142@sip.skype.com>;party=calling"), true, nil,
			`"Caller" <sip:+13125550142@pbx.local;user=phone>;tag=legb`, `"Caller" <sip:+13125550142@pbx.local;user=phone>`, ""},
		{"national format", trunkInvite(), true, national,
			`"Caller" <sip:2125550199@pbx.local;user=phone>;tag=legb`, `"Caller" <sip:2125550199@pbx.local;user=phone>`, ""},
		{"skype name", parseReq(t, "INVITE sip:+14155550100@203.0.113.5 SIP/2.0", "Via: SIP/2.0/TLS 198.51.100.7;branch=z9hG4bK-9",
			"From: <sip:alice.smith@skype.com>;tag=t", "To: <sip:x@y>", "Call-ID: c", "CSeq: 1 INVITE"), false, national,
			`<sip:alice.smith@pbx.local>;tag=legb`, "", ""},
		{"Privacy id", trunkInvite("Privacy: id", "P-Asserted-Identity: <sip:+13125550142@sip.skype.com>"), true, nil,
			anonFrom, "", "id"},
		{"RPID privacy=full", trunkInvite("Remote-Party-ID: <sip:+13125550142@sip.skype.com>;party=calling;privacy=full"), true, nil,
			anonFrom, "", "id"},
		{"anonymous From", parseReq(t, "INVITE sip:+14155550100@203.0.113.5 SIP/2.0", "Via: SIP/2.0/TLS 198.51.100.7;branch=z9hG4bK-9",
			`From: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=t`, "To: <sip:x@y>", "Call-ID: c", "CSeq: 1 INVITE"), false, nil,
			anonFrom, "", "id"},
		{"caller not a valid user", parseReq(t, "INVITE sip:+14155550100@203.0.113.5 SIP/2.0", "Via: SIP/2.0/TLS 198.51.100.7;branch=z9hG4bK-9",
			`From: <sip:a%20b@x>;tag=t`, "To: <sip:x@y>", "Call-ID: c", "CSeq: 1 INVITE"), false, nil,
			anonFrom, "", "id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := legB(t)
			out.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:stale@x>"))
			out.AppendHeader(sip.NewHeader("Privacy", "none"))
			if err := ToPBX(tc.in, out, tc.trustPAI, "pbx.local", tc.format); err != nil {
				t.Fatal(err)
			}
			if got := hval(out, "From"); got != tc.from {
				t.Errorf("From = %s; want %s", got, tc.from)
			}
			if got := hval(out, "P-Asserted-Identity"); got != tc.pai {
				t.Errorf("PAI = %s; want %s", got, tc.pai)
			}
			if got := hval(out, "Privacy"); got != tc.privacy {
				t.Errorf("Privacy = %q; want %q", got, tc.privacy)
			}
		})
	}
	if err := ToPBX(trunkInvite(), legB(t), true, "", nil); !errors.Is(err, ErrBadValue) {
		t.Errorf("empty pbx domain: %v", err)
	}
	if err := ToPBX(trunkInvite(), sip.NewRequest(sip.INVITE, sip.Uri{Host: "x"}), true, "pbx", nil); err == nil {
		t.Error("no From: accepted")
	}
}

// TestIdentityValue: the B2BUA may decide the identity once (dialog state)
// and apply it to each request of the leg.
func TestIdentityValue(t *testing.T) {
	i, err := TrunkCaller(pbxInvite(t, "P-Asserted-Identity: <sip:+14155550111@10.0.0.10>"), skype, true, e164)
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{DisplayName: "Alice Smith", From: sip.Uri{Scheme: "sip", User: "990500000231", Host: "sip.skype.com"}, PAI: didPAI}
	if i.DisplayName != want.DisplayName || i.From.String() != want.From.String() || i.PAI != want.PAI || i.Privacy != "" {
		t.Fatalf("TrunkCaller = %+v; want %+v", i, want)
	}
	// A sips From stays sips; the tag stays.
	out := legB(t)
	out.From().Address.Scheme = "sips"
	if err := i.Apply(out); err != nil {
		t.Fatal(err)
	}
	if got := hval(out, "From"); got != `"Alice Smith" <sips:990500000231@sip.skype.com>;tag=legb` {
		t.Errorf("From = %s", got)
	}
	// A BYE of the same leg gets the same identity.
	bye := legB(t)
	if err := i.Apply(bye); err != nil || hval(bye, "P-Asserted-Identity") != didPAI {
		t.Errorf("Apply to BYE: %v, PAI %q", err, hval(bye, "P-Asserted-Identity"))
	}

	p, err := PBXCaller(parseReq(t, "INVITE sip:+14155550100@203.0.113.5 SIP/2.0", "Via: SIP/2.0/TLS 198.51.100.7;branch=z9hG4bK-9",
		`From: "Caller" <sip:+12125550199@sip.skype.com>;tag=t`, "To: <sip:x@y>", "Call-ID: c", "CSeq: 1 INVITE"), false, "10.0.0.10", nil)
	if err != nil || p.From.String() != "sip:+12125550199@10.0.0.10;user=phone" || p.PAI != "" || p.DisplayName != "Caller" {
		t.Errorf("PBXCaller = %+v, %v", p, err)
	}

	for _, bad := range []Identity{
		{From: sip.Uri{Scheme: "sip", User: "a", Host: "b"}, PAI: "<sip:x@y>\r\nVia: evil"},
		{From: sip.Uri{Scheme: "sip", User: "a", Host: "b"}, Privacy: "id\x00"},
		{DisplayName: "x\ny", From: sip.Uri{Scheme: "sip", User: "a", Host: "b"}},
	} {
		out := legB(t)
		if err := bad.Apply(out); !errors.Is(err, ErrBadValue) {
			t.Errorf("Apply(%+v) = %v; want ErrBadValue", bad, err)
		}
		if hval(out, "From") != "<sip:esbc@203.0.113.5>;tag=legb" {
			t.Errorf("a refused Apply changed From: %s", hval(out, "From"))
		}
	}
}

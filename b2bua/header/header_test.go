package header

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func parseReq(t testing.TB, lines ...string) *sip.Request {
	t.Helper()
	raw := strings.Join(lines, "\r\n") + "\r\n\r\n"
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, raw)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		t.Fatalf("not a request")
	}
	return req
}

// pbxInvite is an INVITE as a PBX sends it, with the given extra headers.
func pbxInvite(t testing.TB, extra ...string) *sip.Request {
	base := []string{
		"INVITE sip:94155550100@10.0.0.2:5060 SIP/2.0",
		"Via: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK-1",
		"Max-Forwards: 70",
		`From: "Alice Smith" <sip:201@10.0.0.10>;tag=pbx1`,
		"To: <sip:94155550100@10.0.0.2>",
		"Call-ID: internal-call-1@10.0.0.10",
		"CSeq: 1 INVITE",
		"Contact: <sip:201@10.0.0.10:5060>",
	}
	return parseReq(t, append(base, extra...)...)
}

// legB is the request the dialog layer built for the other leg.
func legB(t testing.TB) *sip.Request {
	t.Helper()
	var ruri sip.Uri
	if err := sip.ParseUri("sip:+14155550100@sip.skype.com", &ruri); err != nil {
		t.Fatal(err)
	}
	out := sip.NewRequest(sip.INVITE, ruri)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "esbc", Host: "203.0.113.5"}, Params: sip.NewParams()}
	from.Params.Add("tag", "legb")
	out.AppendHeader(from)
	out.AppendHeader(&sip.ToHeader{Address: ruri})
	cid := sip.CallIDHeader("b-leg-1")
	out.AppendHeader(&cid)
	out.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	return out
}

func hvals(m Message, name string) []string {
	var out []string
	for _, h := range m.Headers() {
		if lowerName(h.Name()) == lowerName(name) {
			out = append(out, h.Value())
		}
	}
	return out
}

func hval(m Message, name string) string {
	v := hvals(m, name)
	if len(v) == 0 {
		return ""
	}
	return strings.Join(v, " | ")
}

func TestCheckValue(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"esbc 1.0", true}, {"a\tb", true}, {"Ünïcødé ☎", true}, {"", true},
		{"a\r\nVia: evil", false}, {"a\rb", false}, {"a\nb", false}, {"a\x00b", false},
		{"a\x1bb", false}, {"a\x7fb", false},
	} {
		err := CheckValue(tc.v)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadValue)) {
			t.Errorf("CheckValue(%q) = %v; want ok=%v", tc.v, err, tc.ok)
		}
	}
}

func TestCompilePolicyErrors(t *testing.T) {
	_, err := CompilePolicy(Policy{
		Allow:        []string{"Allow", "Bad Name", "X-\r\n*"},
		ServerHeader: "esbc\r\nX-Evil: 1",
		Rules: []Rule{
			{Action: "rename", Header: "X-A"},
			{Action: "replace", Header: "Via", Match: ".*", Value: "x"},
			{Action: "remove", Header: "f"},
			{Action: "replace", Header: "X-A", Match: "(", Value: "x"},
			{Action: "add", Header: "X-A", Value: "a\r\nb"},
			{Action: "add", Header: "X-A"},
			{Action: "add", Header: "X-A", Match: "x", Value: "y"},
			{Action: "remove", Header: "X-A", Value: "y"},
			{Action: "add", Header: "X A", Value: "y"},
			{Action: "replace", Header: "Contact", Value: "<sip:x@y>"},
		},
	})
	if err == nil {
		t.Fatal("bad policy accepted")
	}
	for _, key := range []string{
		"allow[1]:", "allow[2]:", "server_header:", "rules[0].action:", "rules[1].header:", "rules[2].header:",
		"rules[3].match:", "rules[4].value:", "rules[5].value:", "rules[6].match:", "rules[7].value:",
		"rules[8].header:", "rules[9].header:",
	} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s\n%v", key, err)
		}
	}
	if !errors.Is(err, ErrBadValue) {
		t.Errorf("error does not wrap ErrBadValue: %v", err)
	}
}

func TestCopyAllowed(t *testing.T) {
	in := pbxInvite(t,
		"Route: <sip:10.0.0.2;lr>",
		"Record-Route: <sip:10.0.0.10;lr>",
		"Authorization: Digest username=\"201\"",
		"Proxy-Authorization: Digest username=\"201\"",
		"User-Agent: Asterisk PBX 18.0",
		"Server: Asterisk",
		"X-Asterisk-Call: 42",
		"X-Custom-Account: 7",
		"P-Internal-Trunk: lan1",
		"P-Asserted-Identity: <sip:+14155550111@10.0.0.10>",
		"Remote-Party-ID: <sip:201@10.0.0.10>;party=calling",
		"Privacy: none",
		"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS",
		"allow-events: talk, hold",
		"k: timer, 100rel",
		"s: urgent call",
		"Accept: application/sdp",
		"Content-Type: application/sdp",
		"Content-Disposition: session",
	)
	c, err := CompilePolicy(Policy{ServerHeader: "esbc/1.0"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("default allow-list", func(t *testing.T) {
		out := legB(t)
		out.SetBody([]byte("v=0\r\n"))
		if err := c.CopyAllowed(in, out); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{
			"Allow": "INVITE, ACK, BYE, CANCEL, OPTIONS", "Allow-Events": "talk, hold", "Subject": "urgent call",
			"Accept": "application/sdp", "Content-Type": "application/sdp", "Content-Disposition": "session",
			"User-Agent": "esbc/1.0", "From": `<sip:esbc@203.0.113.5>;tag=legb`, "Call-ID": "b-leg-1",
		} {
			if got := hval(out, name); got != want {
				t.Errorf("%s = %q; want %q", name, got, want)
			}
		}
		for _, name := range []string{
			"Route", "Record-Route", "Authorization", "Proxy-Authorization", "Server", "X-Asterisk-Call",
			"X-Custom-Account", "P-Internal-Trunk", "P-Asserted-Identity", "Remote-Party-ID", "Privacy",
			"Supported", "Contact", "Max-Forwards",
		} {
			if got := hval(out, name); got != "" {
				t.Errorf("%s crossed: %q", name, got)
			}
		}
		if n := len(hvals(out, "Via")); n != 0 {
			t.Errorf("%d Via copied", n)
		}
		s := out.String()
		for _, leak := range []string{"10.0.0.10", "internal-call-1", "Asterisk", "lan1"} {
			if strings.Contains(s, leak) {
				t.Errorf("%q leaked:\n%s", leak, s)
			}
		}
		// Written under the full canonical names.
		if !strings.Contains(s, "\r\nSubject: urgent call\r\n") {
			t.Errorf("compact header not expanded:\n%s", s)
		}
	})

	t.Run("no body, no body headers", func(t *testing.T) {
		out := legB(t)
		if err := c.CopyAllowed(in, out); err != nil {
			t.Fatal(err)
		}
		if got := hval(out, "Content-Type") + hval(out, "Content-Disposition"); got != "" {
			t.Errorf("body headers without body: %q", got)
		}
	})

	t.Run("out's own header wins", func(t *testing.T) {
		out := legB(t)
		out.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE"))
		out.AppendHeader(sip.NewHeader("User-Agent", "sipgo"))
		if err := c.CopyAllowed(in, out); err != nil {
			t.Fatal(err)
		}
		if got := hvals(out, "Allow"); len(got) != 1 || got[0] != "INVITE, ACK, BYE" {
			t.Errorf("Allow = %q", got)
		}
		if got := hvals(out, "User-Agent"); len(got) != 1 || got[0] != "esbc/1.0" {
			t.Errorf("User-Agent = %q", got)
		}
	})

	t.Run("explicit allow-list with prefix", func(t *testing.T) {
		c, err := CompilePolicy(Policy{Allow: []string{"X-Custom-*", "supported", "P-Asserted-Identity", "Via"}})
		if err != nil {
			t.Fatal(err)
		}
		out := legB(t)
		if err := c.CopyAllowed(in, out); err != nil {
			t.Fatal(err)
		}
		if got := hval(out, "X-Custom-Account"); got != "7" {
			t.Errorf("X-Custom-Account = %q", got)
		}
		if !strings.Contains(out.String(), "\r\nSupported: timer, 100rel\r\n") {
			t.Errorf("Supported not copied under its full name:\n%s", out)
		}
		for _, name := range []string{"Allow", "X-Asterisk-Call", "P-Asserted-Identity", "Via", "User-Agent", "Server"} {
			if got := hval(out, name); got != "" {
				t.Errorf("%s crossed: %q", name, got)
			}
		}
	})

	t.Run("CR LF NUL refused", func(t *testing.T) {
		bad := pbxInvite(t)
		bad.AppendHeader(sip.NewHeader("Subject", "hi\r\nX-Injected: 1"))
		if err := c.CopyAllowed(bad, legB(t)); !errors.Is(err, ErrBadValue) {
			t.Errorf("CopyAllowed = %v; want ErrBadValue", err)
		}
		bad = pbxInvite(t)
		bad.AppendHeader(sip.NewHeader("Subject", "nul\x00"))
		if err := c.CopyAllowed(bad, legB(t)); !errors.Is(err, ErrBadValue) {
			t.Errorf("CopyAllowed = %v; want ErrBadValue", err)
		}
	})
}

func TestApplyResponse(t *testing.T) {
	msg, err := sip.ParseMessage([]byte(strings.Join([]string{
		"SIP/2.0 200 OK",
		"Via: SIP/2.0/TLS 203.0.113.5:5061;branch=z9hG4bK-2",
		"From: <sip:990500000231@sip.skype.com>;tag=legb",
		"To: <sip:+14155550100@sip.skype.com>;tag=trunk1",
		"Call-ID: b-leg-1",
		"CSeq: 1 INVITE",
		"Contact: <sip:198.51.100.7:5061;transport=tls>",
		"Server: SkypeGW/3.2",
		"User-Agent: SkypeGW",
		"Allow: INVITE, ACK, BYE",
		"X-Skype-Trace: abc",
		"P-Charging-Vector: icid-value=1",
		"WWW-Authenticate: Digest realm=\"x\"",
		"Content-Type: application/sdp",
		"Content-Length: 0",
	}, "\r\n") + "\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	in := msg.(*sip.Response)
	c, err := CompilePolicy(Policy{ServerHeader: "esbc", Rules: []Rule{{Action: "add", Header: "X-Trunk", Value: "skype"}}})
	if err != nil {
		t.Fatal(err)
	}
	out := sip.NewResponse(200, "OK")
	if err := c.ApplyResponse(in, out); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Server": "esbc", "Allow": "INVITE, ACK, BYE", "X-Trunk": "skype",
		"User-Agent": "", "X-Skype-Trace": "", "P-Charging-Vector": "", "WWW-Authenticate": "",
		"Contact": "", "Content-Type": "", "Via": ""}
	for name, w := range want {
		if got := hval(out, name); got != w {
			t.Errorf("%s = %q; want %q", name, got, w)
		}
	}
}

func TestRules(t *testing.T) {
	mk := func() *sip.Request {
		r := legB(t)
		r.AppendHeader(sip.NewHeader("X-Account", "acct-1"))
		r.AppendHeader(sip.NewHeader("Diversion", "<sip:+14155550100@pbx>;reason=unconditional"))
		r.AppendHeader(sip.NewHeader("Diversion", "<sip:201@10.0.0.10>;reason=no-answer"))
		r.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:+14155550100@sip.skype.com;user=phone>"))
		return r
	}
	tests := []struct {
		name  string
		rules []Rule
		check map[string][]string // header → expected values in order
	}{
		{"add", []Rule{{Action: "add", Header: "X-Provider-Account", Value: "42"}},
			map[string][]string{"X-Provider-Account": {"42"}, "X-Account": {"acct-1"}}},
		{"add twice", []Rule{{Action: "add", Header: "X-A", Value: "1"}, {Action: "add", Header: "x-a", Value: "2"}},
			map[string][]string{"X-A": {"1", "2"}}},
		{"remove all", []Rule{{Action: "remove", Header: "diversion"}},
			map[string][]string{"Diversion": nil, "X-Account": {"acct-1"}}},
		{"remove matching", []Rule{{Action: "remove", Header: "Diversion", Match: `@10\.`}},
			map[string][]string{"Diversion": {"<sip:+14155550100@pbx>;reason=unconditional"}}},
		{"replace regexp", []Rule{{Action: "replace", Header: "P-Asserted-Identity", Match: `^<sip:(\+\d+)@[^;>]*;user=phone>$`, Value: "<tel:$1>"}},
			map[string][]string{"P-Asserted-Identity": {"<tel:+14155550100>"}}},
		{"replace each value", []Rule{{Action: "replace", Header: "Diversion", Match: `@[^>;]+`, Value: "@sip.skype.com"}},
			map[string][]string{"Diversion": {"<sip:+14155550100@sip.skype.com>;reason=unconditional", "<sip:201@sip.skype.com>;reason=no-answer"}}},
		{"replace set", []Rule{{Action: "replace", Header: "X-Account", Value: "acct-2"}},
			map[string][]string{"X-Account": {"acct-2"}}},
		{"replace to empty removes", []Rule{{Action: "replace", Header: "X-Account", Match: ".*", Value: ""}},
			map[string][]string{"X-Account": nil}},
		{"replace absent is no-op", []Rule{{Action: "replace", Header: "X-None", Value: "v"}},
			map[string][]string{"X-None": nil}},
		{"order of rules", []Rule{{Action: "remove", Header: "X-Account"}, {Action: "add", Header: "X-Account", Value: "new"}},
			map[string][]string{"X-Account": {"new"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CompilePolicy(Policy{Rules: tc.rules})
			if err != nil {
				t.Fatal(err)
			}
			m := mk()
			if err := c.Apply(m); err != nil {
				t.Fatal(err)
			}
			for name, want := range tc.check {
				if got := hvals(m, name); strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("%s = %q; want %q", name, got, want)
				}
			}
			if hval(m, "From") != "<sip:esbc@203.0.113.5>;tag=legb" || hval(m, "Call-ID") != "b-leg-1" {
				t.Errorf("dialog headers changed:\n%s", m)
			}
		})
	}

	t.Run("a replace that would write CR LF changes nothing", func(t *testing.T) {
		c, err := CompilePolicy(Policy{Rules: []Rule{{Action: "replace", Header: "X-A", Match: "z", Value: "y"}}})
		if err != nil {
			t.Fatal(err)
		}
		m := mk()
		m.AppendHeader(sip.NewHeader("X-A", "ok"))
		m.AppendHeader(sip.NewHeader("X-A", "z\r\nVia: evil"))
		if err := c.Apply(m); !errors.Is(err, ErrBadValue) {
			t.Fatalf("Apply = %v; want ErrBadValue", err)
		}
		if got := hvals(m, "X-A"); len(got) != 2 || got[0] != "ok" {
			t.Errorf("X-A = %q; want unchanged", got)
		}
	})
}

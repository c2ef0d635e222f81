package acl

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sipMsg joins lines with CRLF and ends the header section.
func sipMsg(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n\r\n")
}

func invite(extra ...string) []byte {
	l := []string{
		"INVITE sip:100@esbc.example SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
		"Max-Forwards: 70",
		"To: <sip:100@esbc.example>",
		"From: \"Alice\" <sip:alice@192.0.2.1>;tag=1928301774",
		"Call-ID: a84b4c76e66710@pc33.example",
		"CSeq: 314159 INVITE",
	}
	l = append(l, extra...)
	return sipMsg(l...)
}

func TestCheckDatagram(t *testing.T) {
	cfg := Config{
		UserAgentDeny: []string{"friendly-scanner", "SIPVicious"},
		WAN:           Rules{Methods: []string{"INVITE", "OPTIONS", "BYE"}},
		MaxHeaders:    12,
		MaxLineBytes:  200,
	}
	p, err := compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	many := []string{}
	for i := 0; i < 12; i++ {
		many = append(many, "X-Pad: 1")
	}
	tests := []struct {
		name   string
		side   Side
		msg    []byte
		act    action
		reason Reason
		code   int
	}{
		{"valid INVITE", LAN, invite("Content-Length: 0"), actPass, ReasonNone, 0},
		{"valid without Content-Length", LAN, invite(), actPass, ReasonNone, 0},
		{"compact headers", LAN, sipMsg("OPTIONS sip:a@b SIP/2.0", "v: SIP/2.0/UDP h;branch=z9hG4bK1", "t: <sip:a@b>", "f: <sip:c@d>;tag=1", "i: x", "CSeq: 1 OPTIONS", "l: 0"), actPass, ReasonNone, 0},
		{"response", LAN, sipMsg("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "CSeq: 1 INVITE"), actPass, ReasonNone, 0},
		{"scanner UA any case", LAN, invite("User-Agent: Friendly-Scanner 1.0"), actDrop, ReasonUserAgent, 0},
		{"scanner UA substring", LAN, invite("User-Agent: x sipvicious y"), actDrop, ReasonUserAgent, 0},
		{"scanner UA even if otherwise bad", LAN, sipMsg("OPTIONS sip:a@b SIP/3.0", "User-Agent: friendly-scanner"), actDrop, ReasonUserAgent, 0},
		{"SIP/7.0 request", LAN, bytes.Replace(invite(), []byte("SIP/2.0\r\n"), []byte("SIP/7.0\r\n"), 1), actRespond, ReasonVersion, 505},
		{"SIP/7.0 response", LAN, sipMsg("SIP/7.0 200 OK", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "CSeq: 1 INVITE"), actDrop, ReasonVersion, 0},
		{"lower-case version ok", LAN, bytes.Replace(invite(), []byte("SIP/2.0\r\n"), []byte("sip/2.0\r\n"), 1), actPass, ReasonNone, 0},
		{"method not allowed on WAN", WAN, bytes.Replace(invite(), []byte("INVITE"), []byte("REGISTER"), 2), actRespond, ReasonMethod, 405},
		{"method allowed on LAN", LAN, bytes.Replace(invite(), []byte("INVITE"), []byte("REGISTER"), 2), actPass, ReasonNone, 0},
		{"ACK follows INVITE", WAN, bytes.Replace(invite(), []byte("INVITE"), []byte("ACK"), 2), actPass, ReasonNone, 0},
		{"Max-Forwards 0", LAN, bytes.Replace(invite(), []byte("Max-Forwards: 70"), []byte("Max-Forwards: 0"), 1), actRespond, ReasonTooManyHops, 483},
		{"Max-Forwards 0 OPTIONS", LAN, sipMsg("OPTIONS sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "To: <sip:a@b>", "From: <sip:c@d>;tag=1", "Call-ID: x", "CSeq: 1 OPTIONS", "Max-Forwards: 0"), actPass, ReasonNone, 0},
		{"duplicate Content-Length", LAN, invite("Content-Length: 0", "l: 0"), actRespond, ReasonMalformed, 400},
		{"negative Content-Length", LAN, invite("Content-Length: -5"), actRespond, ReasonMalformed, 400},
		{"Content-Length beyond datagram", LAN, invite("Content-Length: 500"), actRespond, ReasonMalformed, 400},
		{"missing Call-ID", LAN, sipMsg("INVITE sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "To: <sip:a@b>", "From: <sip:c@d>;tag=1", "CSeq: 1 INVITE"), actRespond, ReasonMalformed, 400},
		{"missing Via: unroutable", LAN, sipMsg("INVITE sip:a@b SIP/2.0", "To: <sip:a@b>", "From: <sip:c@d>;tag=1", "Call-ID: x", "CSeq: 1 INVITE"), actDrop, ReasonMalformed, 0},
		{"too many headers", LAN, invite(many...), actRespond, ReasonTooManyHeaders, 400},
		{"line too long", LAN, invite("Subject: " + strings.Repeat("a", 300)), actRespond, ReasonLineTooLong, 400},
		{"header without colon", LAN, invite("Garbage line"), actRespond, ReasonMalformed, 400},
		{"bad ACK not answered", LAN, sipMsg("ACK sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "CSeq: 1 ACK"), actDrop, ReasonMalformed, 0},
		{"garbage", LAN, []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), actDrop, ReasonMalformed, 0},
		{"keep-alive", LAN, []byte("\r\n\r\n"), actDrop, ReasonNone, 0},
		{"no request line end", LAN, []byte("INVITE sip:a@b SIP/2.0"), actDrop, ReasonMalformed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			act, r, code, resp := p.checkDatagram(tt.side, tt.msg, false)
			if act != tt.act || r != tt.reason || code != tt.code {
				t.Fatalf("got %v %v %d, want %v %v %d", act, r, code, tt.act, tt.reason, tt.code)
			}
			if resp != nil {
				checkResponse(t, *resp, tt.code)
				respPool.Put(resp)
			}
		})
	}
}

// checkResponse asserts the edge response is a well-formed SIP response
// echoing the request's transaction identifiers.
func checkResponse(t *testing.T, resp []byte, code int) {
	t.Helper()
	s := string(resp)
	if !strings.HasPrefix(s, "SIP/2.0 ") || !strings.HasSuffix(s, "\r\nContent-Length: 0\r\n\r\n") {
		t.Fatalf("response framing: %q", s)
	}
	if code != 0 && !strings.HasPrefix(s[8:], strconv.Itoa(code)+" ") {
		t.Fatalf("status: %q", s)
	}
	for _, h := range []string{"\r\nVia: ", "\r\nCSeq: ", "\r\nServer: esbc\r\n"} {
		if !strings.Contains(s, h) {
			t.Fatalf("missing %q in %q", h, s)
		}
	}
	if strings.Contains(s, "\r\nTo: ") && !strings.Contains(s, "tag=") {
		t.Fatalf("To without tag: %q", s)
	}
	if code == 405 && !strings.Contains(s, "\r\nAllow: INVITE, OPTIONS, BYE\r\n") {
		t.Fatalf("405 without Allow: %q", s)
	}
}

func TestOversizeDatagram(t *testing.T) {
	p, _ := compile(Config{MaxMessageBytes: 1000})
	msg := invite("Content-Length: 2000")
	msg = append(msg, bytes.Repeat([]byte("v=0\r\n"), 400)...)
	act, r, code, resp := p.checkDatagram(LAN, msg, false)
	if act != actRespond || r != ReasonOversize || code != 400 {
		t.Fatalf("got %v %v %d", act, r, code)
	}
	checkResponse(t, *resp, 400)
	// a datagram that filled the read buffer may be truncated: same answer
	act, r, _, _ = p.checkDatagram(LAN, invite(), true)
	if act != actRespond || r != ReasonOversize {
		t.Fatalf("full buffer: %v %v", act, r)
	}
}

func TestResponseFoldedHeaderNoInjection(t *testing.T) {
	p, _ := compile(Config{})
	msg := sipMsg("INVITE sip:a@b SIP/7.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "To: <sip:a@b>", "From: <sip:c@d>", "\tX-Injected: 1", "Call-ID: x", "CSeq: 1 INVITE")
	_, _, _, resp := p.checkDatagram(LAN, msg, false)
	if resp == nil {
		t.Fatal("no response")
	}
	if bytes.Contains(*resp, []byte("\nX-Injected")) || bytes.Contains(*resp, []byte("\n\tX-Injected")) {
		t.Fatalf("folded value became a header line: %q", *resp)
	}
}

func TestCallID(t *testing.T) {
	for _, tt := range []struct{ msg, want string }{
		{string(invite()), "a84b4c76e66710@pc33.example"},
		{"SIP/2.0 200 OK\r\ni:  abc \r\n\r\nCall-ID: body", "abc"},
		{"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\nCall-ID: in-body\r\n", ""},
		{"garbage", ""},
		{"", ""},
	} {
		if got := string(CallID([]byte(tt.msg))); got != tt.want {
			t.Errorf("CallID(%q) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}

// TestTortureMessages runs the RFC 4475 / RFC 5118 messages through the
// datagram checks. The edge only refuses what it can judge from the raw
// bytes; the others (valid, or invalid in ways only a full parser sees)
// pass to the SIP stack.
func TestTortureMessages(t *testing.T) {
	p, _ := compile(Config{})
	refused := map[string]struct {
		act    action
		reason Reason
		code   int
	}{
		"rfc4475-badvers": {actRespond, ReasonVersion, 505},   // SIP/7.0
		"rfc4475-bigcode": {actDrop, ReasonMalformed, 0},      // response code 4294967301
		"rfc4475-clerr":   {actRespond, ReasonMalformed, 400}, // Content-Length larger than the body
		"rfc4475-insuf":   {actRespond, ReasonMalformed, 400}, // missing Call-ID, From, To
		"rfc4475-mcl01":   {actRespond, ReasonMalformed, 400}, // several Content-Length values
		"rfc4475-ncl":     {actRespond, ReasonMalformed, 400}, // negative Content-Length
		"rfc4475-trws":    {actRespond, ReasonMalformed, 400}, // trailing whitespace after the version
	}
	files, err := filepath.Glob("testdata/torture/*.sip")
	if err != nil || len(files) < 60 {
		t.Fatalf("torture files: %d %v", len(files), err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".sip")
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		want, ok := refused[name]
		if !ok {
			want.act = actPass
		}
		act, r, code, resp := p.checkDatagram(LAN, b, false)
		if act != want.act || r != want.reason || code != want.code {
			t.Errorf("%s: %v %v %d, want %v %v %d", name, act, r, code, want.act, want.reason, want.code)
		}
		if resp != nil {
			checkResponse(t, *resp, code)
		}
	}
}

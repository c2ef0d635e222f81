package trunk

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

func testInvite(t *testing.T) *sip.Request {
	t.Helper()
	var uri sip.Uri
	if err := sip.ParseUri("sip:+14155550123@sip.example.test;transport=tls", &uri); err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.INVITE, uri)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 7, MethodName: sip.INVITE})
	req.AppendHeader(sip.NewHeader("Via", "SIP/2.0/TLS 203.0.113.5:5061;branch=z9hG4bKabc"))
	req.SetBody([]byte("v=0\r\n"))
	return req
}

func challengeRes(code int, hdrs ...string) *sip.Response {
	res := sip.NewResponse(code, "Challenge")
	name := "WWW-Authenticate"
	if code == 407 {
		name = "Proxy-Authenticate"
	}
	for _, h := range hdrs {
		res.AppendHeader(sip.NewHeader(name, h))
	}
	return res
}

// expected computes RFC 7616 §3.4.1 on its own (crypto/md5, crypto/sha256).
func expected(c *digest.Credentials, method, password string) string {
	h := md5.New
	if strings.EqualFold(c.Algorithm, "SHA-256") {
		h = sha256.New
	}
	H := func(s string) string { x := h(); x.Write([]byte(s)); return hex.EncodeToString(x.Sum(nil)) }
	ha1 := H(c.Username + ":" + c.Realm + ":" + password)
	ha2 := H(method + ":" + c.URI)
	if c.QOP == "" {
		return H(ha1 + ":" + c.Nonce + ":" + ha2)
	}
	return H(ha1 + ":" + c.Nonce + ":" + fmt.Sprintf("%08x", c.Nc) + ":" + c.Cnonce + ":" + c.QOP + ":" + ha2)
}

func TestAuthorize(t *testing.T) {
	for _, tc := range []struct {
		name      string
		code      int
		chals     []string
		header    string // credentials header expected
		alg       string // algorithm answered
		qop       string
		wantErr   error
		wantCount int // credentials headers
	}{
		{name: "401 md5 qop", code: 401, chals: []string{`Digest realm="r", nonce="n1", qop="auth", algorithm=MD5`},
			header: "Authorization", alg: "MD5", qop: "auth", wantCount: 1},
		{name: "401 md5 no qop (RFC 2069)", code: 401, chals: []string{`Digest realm="r", nonce="n2"`},
			header: "Authorization", alg: "", qop: "", wantCount: 1},
		{name: "407 sha-256", code: 407, chals: []string{`Digest realm="r", nonce="n3", qop="auth", algorithm=SHA-256`},
			header: "Proxy-Authorization", alg: "SHA-256", qop: "auth", wantCount: 1},
		{name: "lower-case algorithm", code: 401, chals: []string{`Digest realm="r", nonce="n4", qop="auth", algorithm=md5`},
			header: "Authorization", alg: "MD5", qop: "auth", wantCount: 1},
		{name: "RFC 8760: SHA-256 preferred over MD5", code: 401, chals: []string{
			`Digest realm="r", nonce="n5", qop="auth", algorithm=MD5`,
			`Digest realm="r", nonce="n6", qop="auth", algorithm=SHA-256`},
			header: "Authorization", alg: "SHA-256", qop: "auth", wantCount: 1},
		{name: "qop auth,auth-int chooses auth", code: 401, chals: []string{`Digest realm="r", nonce="n7", qop="auth,auth-int"`},
			header: "Authorization", alg: "", qop: "auth", wantCount: 1},
		{name: "two realms (forking proxy)", code: 407, chals: []string{
			`Digest realm="a", nonce="n8", qop="auth"`, `Digest realm="b", nonce="n9", qop="auth"`},
			header: "Proxy-Authorization", alg: "", qop: "auth", wantCount: 2},
		{name: "unsupported only", code: 401, chals: []string{`Digest realm="r", nonce="n10", algorithm=MD5-sess, qop="auth"`},
			wantErr: ErrNoChallenge},
		{name: "auth-int only", code: 401, chals: []string{`Digest realm="r", nonce="n11", qop="auth-int"`},
			wantErr: ErrNoChallenge},
		{name: "not digest", code: 401, chals: []string{`Bearer realm="r"`}, wantErr: ErrNoChallenge},
		{name: "no header", code: 401, wantErr: ErrNoChallenge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := testInvite(t)
			err := Authorize(req, challengeRes(tc.code, tc.chals...), "alice", "pw")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			hs := req.GetHeaders(tc.header)
			if len(hs) != tc.wantCount {
				t.Fatalf("%d %s headers, want %d", len(hs), tc.header, tc.wantCount)
			}
			for _, h := range hs {
				c, err := digest.ParseCredentials(h.Value())
				if err != nil {
					t.Fatal(err)
				}
				if c.URI != "sip:+14155550123@sip.example.test;transport=tls" {
					t.Fatalf("uri %q: want the full Request-URI", c.URI)
				}
				if c.Algorithm != tc.alg || c.QOP != tc.qop || c.Username != "alice" {
					t.Fatalf("credentials %s", h.Value())
				}
				if tc.qop != "" && (c.Cnonce == "" || c.Nc < 1) {
					t.Fatalf("qop without cnonce/nc: %s", h.Value())
				}
				if want := expected(c, "INVITE", "pw"); c.Response != want {
					t.Fatalf("response %s, independent computation %s", c.Response, want)
				}
			}
		})
	}
}

// Answering the same nonce again raises nc; a second challenge replaces the
// credentials of its realm instead of adding more.
func TestAuthorizeNonceCountAndReplace(t *testing.T) {
	res := challengeRes(401, `Digest realm="r", nonce="`+sip.GenerateTagN(16)+`", qop="auth"`)
	req := testInvite(t)
	for i := 1; i <= 3; i++ {
		if err := Authorize(req, res, "alice", "pw"); err != nil {
			t.Fatal(err)
		}
		hs := req.GetHeaders("Authorization")
		if len(hs) != 1 {
			t.Fatalf("round %d: %d Authorization headers", i, len(hs))
		}
		c, _ := digest.ParseCredentials(hs[0].Value())
		if c.Nc != i {
			t.Fatalf("round %d: nc=%d", i, c.Nc)
		}
	}
}

func TestRetry(t *testing.T) {
	req := testInvite(t)
	res := challengeRes(407, `Digest realm="r", nonce="retry-n", qop="auth"`)
	r, err := Retry(req, res, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if r.CSeq().SeqNo != 8 || req.CSeq().SeqNo != 7 {
		t.Fatalf("CSeq %d (original %d): want 8 on the retry only", r.CSeq().SeqNo, req.CSeq().SeqNo)
	}
	if r.Via() != nil || req.Via() == nil {
		t.Fatal("Via must be removed from the retry only")
	}
	if r.GetHeader("Proxy-Authorization") == nil || req.GetHeader("Proxy-Authorization") != nil {
		t.Fatal("credentials must be on the retry only")
	}
	if string(r.Body()) != "v=0\r\n" {
		t.Fatalf("body %q", r.Body())
	}
	if _, err := Retry(req, challengeRes(401), "a", "b"); !errors.Is(err, ErrNoChallenge) {
		t.Fatalf("retry without challenge: %v", err)
	}
}

func FuzzAuthorize(f *testing.F) {
	f.Add(`Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256`)
	f.Add(`Digest realm="r", nonce="n"`)
	f.Add(`Digest realm=, nonce`)
	f.Add(`Basic realm="x"`)
	f.Fuzz(func(t *testing.T, chal string) {
		if strings.ContainsAny(chal, "\r\n\x00") {
			return
		}
		var uri sip.Uri
		_ = sip.ParseUri("sip:a@b", &uri)
		req := sip.NewRequest(sip.INVITE, uri)
		res := sip.NewResponse(401, "x")
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", chal))
		if err := Authorize(req, res, "u", "p"); err == nil {
			if req.GetHeader("Authorization") == nil {
				t.Fatal("nil error without credentials")
			}
		}
	})
}

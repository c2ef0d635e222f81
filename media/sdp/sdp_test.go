package sdp

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// anchor is the rewrite the media engine does toward a peer: our origin and
// address, our ports, crypto replaced, PCMA dropped, ICE removed.
func anchor(s *Session) {
	addr := netip.MustParseAddr("203.0.113.5")
	s.SetOrigin(42, 7, addr)
	s.SetConn(addr)
	for i, m := range s.Media {
		if m.Port == 0 {
			continue
		}
		m.Port = 20000 + 2*i
		m.RemoveAttr("rtcp")
		m.RemoveAttr("candidate")
		if m.Type == "audio" {
			var keep []string
			for _, c := range m.Codecs() {
				if c.Name != "PCMA" {
					keep = append(keep, c.PT)
				}
			}
			if len(keep) > 0 {
				m.KeepFormats(keep)
			}
			at := m.RemoveAttr("crypto")
			m.AddAttrs(at, "crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
		}
	}
}

func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.sdp")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Parse(in)
			if err != nil {
				t.Fatal(err)
			}
			anchor(s)
			got := s.Marshal()
			golden := strings.TrimSuffix(f, ".sdp") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got:\n%s\nwant:\n%s", got, want)
			}
			// Every line esbc does not own is still there, byte for byte.
			owned := []string{"o=", "c=", "m=", "a=crypto:", "a=rtcp:", "a=candidate:", "a=rtpmap:8 ", "a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"}
			out := string(got)
			for _, l := range strings.Split(strings.ReplaceAll(string(in), "\r\n", "\n"), "\n") {
				if l == "" || hasAnyPrefix(l, owned) {
					continue
				}
				if !strings.Contains(out, l) {
					t.Errorf("line %q lost", l)
				}
			}
		})
	}
}

func hasAnyPrefix(s string, ps []string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func TestRoundTripUntouched(t *testing.T) {
	for _, f := range []string{"testdata/basic.sdp", "testdata/t38.sdp", "testdata/srtp_multi.sdp"} {
		in, _ := os.ReadFile(f)
		s, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Marshal(); !bytes.Equal(got, in) {
			t.Errorf("%s: untouched body changed:\n%s", f, got)
		}
	}
}

func TestInspect(t *testing.T) {
	in, _ := os.ReadFile("testdata/srtp_multi.sdp")
	s, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	m := s.Media[0]
	if ip, _ := m.Conn(); ip.String() != "198.51.100.21" {
		t.Errorf("conn %v", ip)
	}
	if p, a, ok := m.RTCP(); !ok || p != 50001 || a.String() != "198.51.100.21" {
		t.Errorf("rtcp %d %v %v", p, a, ok)
	}
	if !m.RTCPMux() || m.Direction() != SendRecv || len(m.Attrs("crypto")) != 2 {
		t.Errorf("mux %v dir %s crypto %d", m.RTCPMux(), m.Direction(), len(m.Attrs("crypto")))
	}
	cs := m.Codecs()
	if len(cs) != 3 || cs[0].Name != "PCMA" || cs[1].Name != "PCMU" || cs[2].Name != "telephone-event" {
		t.Errorf("codecs %+v", cs)
	}
	lf, _ := os.ReadFile("testdata/lf_odd.sdp")
	s, err = Parse(lf)
	if err != nil {
		t.Fatal(err)
	}
	if s.Media[0].Direction() != SendOnly {
		t.Errorf("session-level direction not inherited: %s", s.Media[0].Direction())
	}
	s.Media[0].SetDirection(Inactive)
	if s.Media[0].Direction() != Inactive || !bytes.Contains(s.Marshal(), []byte("\na=inactive\n")) {
		t.Errorf("SetDirection: %s", s.Marshal())
	}
	if _, err := Parse([]byte("m=audio x RTP/AVP 0\r\n")); err == nil {
		t.Error("want an error")
	}
}

func FuzzEditor(f *testing.F) {
	for _, n := range []string{"basic", "t38", "srtp_multi", "lf_odd"} {
		b, _ := os.ReadFile("testdata/" + n + ".sdp")
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := Parse(body)
		if err != nil {
			return
		}
		for _, m := range s.Media {
			m.Codecs()
			m.Direction()
			m.RTCP()
			m.Conn()
			for _, v := range m.Attrs("crypto") {
				_, _ = ParseCrypto(v)
			}
		}
		anchor(s)
		for _, m := range s.Media {
			m.SetDirection(SendOnly)
		}
		out := s.Marshal()
		s2, err := Parse(out)
		if err != nil {
			t.Fatalf("rewritten body does not parse: %v\n%q", err, out)
		}
		if len(s2.Media) != len(s.Media) {
			t.Fatalf("m= count %d → %d", len(s.Media), len(s2.Media))
		}
		if !bytes.Equal(s2.Marshal(), out) {
			t.Fatalf("not stable:\n%q\n%q", out, s2.Marshal())
		}
	})
}

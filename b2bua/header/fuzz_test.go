package header

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// reparse serialises m and parses it back: whatever esbc writes must be
// one well-formed message with the same headers (no injection).
func reparse(t *testing.T, m *sip.Request) {
	t.Helper()
	back, err := sip.ParseMessage([]byte(m.String()))
	if err != nil {
		t.Fatalf("output does not parse: %v\n%s", err, m)
	}
	r := back.(*sip.Request)
	if a, b := len(r.Headers()), len(m.Headers()); a != b {
		t.Fatalf("%d headers written, %d read back:\n%s", b, a, m)
	}
	if r.CallID().Value() != m.CallID().Value() || r.CSeq().Value() != m.CSeq().Value() {
		t.Fatalf("dialog headers changed:\n%s", m)
	}
}

// FuzzRules compiles arbitrary rules and runs them on a message holding an
// arbitrary value: compile may refuse, Apply may refuse, but whatever it
// writes must be clean.
func FuzzRules(f *testing.F) {
	f.Add("replace", "P-Asserted-Identity", `^<sip:(\+\d+)@[^;>]*;user=phone>$`, "<tel:$1>", "<sip:+14155550100@x;user=phone>")
	f.Add("remove", "Diversion", `@10\.`, "", "<sip:201@10.0.0.10>")
	f.Add("add", "X-Account", "", "42", "v")
	f.Add("replace", "X-A", "(a)(b)?", "$2$1${1}x", "aab")
	f.Add("replace", "k", "", "timer", "100rel")
	f.Add("replace", "Via", ".*", "x", "y")
	f.Add("add", "X-A", "", "a\r\nb", "v")
	f.Fuzz(func(t *testing.T, action, name, match, value, hv string) {
		c, err := CompilePolicy(Policy{Rules: []Rule{{Action: action, Header: name, Match: match, Value: value}}})
		if err != nil {
			return
		}
		m := legB(t)
		if strings.TrimSpace(hv) != "" && CheckValue(hv) == nil && checkName(name) == nil && checkTyped(lowerName(name), hv) == nil {
			m.AppendHeader(sip.NewHeader(canonName(name), hv))
			m.AppendHeader(sip.NewHeader("X-Other", hv))
		}
		if err := c.Apply(m); err != nil {
			if !errors.Is(err, ErrBadValue) {
				t.Fatalf("Apply: %v", err)
			}
			return
		}
		for _, h := range m.Headers() {
			if err := CheckValue(h.Value()); err != nil {
				t.Fatalf("%s: %q written: %v", h.Name(), h.Value(), err)
			}
		}
		if strings.TrimSpace(hval(m, "From")) != "<sip:esbc@203.0.113.5>;tag=legb" {
			t.Fatalf("From changed: %q", hval(m, "From"))
		}
		reparse(t, m)
	})
}

// FuzzIdentity feeds arbitrary identity header values and From display
// names through ToTrunk and ToPBX.
func FuzzIdentity(f *testing.F) {
	f.Add(`"Alice" <sip:+14155550111@10.0.0.10>`, `<sip:4155550111@x>;party=calling;privacy=full`, "id", "Alice Smith", "201")
	f.Add(`<sip:201@10.0.0.10>, <tel:+14155550111>`, "", "none", "", "anonymous")
	f.Add(`<tel:+1-415-555-0111;phone-context=x>`, `"B" <sip:x@y>;party=called`, "user;header;critical", `Bob "q" \x`, "%2B14155550111")
	f.Add("garbage<<>>", ";;;", ",,", "\x00", "a b")
	trunks := []TrunkIdentity{skype, {Domain: "sip.example.net", FromUser: "u", TrustPAI: true, KeepFromUserOnPrivacy: true, AllowedCallerIDs: []string{"+14155550111"}}}
	f.Fuzz(func(t *testing.T, pai, rpid, privacy, display, user string) {
		in := pbxInvite(t)
		for _, h := range []struct{ n, v string }{{"P-Asserted-Identity", pai}, {"Remote-Party-ID", rpid}, {"Privacy", privacy}} {
			if h.v != "" && CheckValue(h.v) == nil {
				in.AppendHeader(sip.NewHeader(h.n, h.v))
			}
		}
		in.From().DisplayName = display
		in.From().Address.User = user
		for _, id := range trunks {
			for _, trusted := range []bool{false, true} {
				out := legB(t)
				if err := ToTrunk(in, out, id, trusted, e164); err != nil {
					t.Fatalf("ToTrunk: %v", err) // the trunk identities are valid: no error allowed
				}
				reparse(t, out)
				if f := out.From(); f.Address.Host != id.Domain && f.Address.Host != "anonymous.invalid" {
					t.Fatalf("From host %q", f.Address.Host)
				}
				if !trusted && hval(out, "P-Asserted-Identity") != "" && !strings.Contains(hval(out, "P-Asserted-Identity"), id.CallerID+"@") {
					t.Fatalf("untrusted PBX asserted %q", hval(out, "P-Asserted-Identity"))
				}
				out = legB(t)
				if err := ToPBX(in, out, trusted, "pbx.local", nil); err != nil {
					t.Fatalf("ToPBX: %v", err)
				}
				reparse(t, out)
			}
		}
	})
}

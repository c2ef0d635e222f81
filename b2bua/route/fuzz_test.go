package route

import (
	"errors"
	"strings"
	"testing"
)

// FuzzNumber feeds arbitrary dial strings and Request-URI users to every
// entry point and checks the invariants the B2BUA relies on.
func FuzzNumber(f *testing.F) {
	for _, s := range []string{
		"94155550100", "9 (415) 555-0100", "+1 415 555 0100", "tel:+1-415-555-0100;phone-context=x",
		"sip:9911@pbx;user=phone", "011 1 911", "*67911", "urn:service:sos", "９１１", "%39%31%31",
		"00 44 999", "+44 (0)20 7946 0000", "alice.smith", "", "+", "<sip:@>", "sip:%zz@h",
	} {
		f.Add(s)
	}
	tables := []*Table{mustCompile(f, nanpConfig(false)), mustCompile(f, nanpConfig(true)), mustCompile(f, ukConfig(false)), mustCompile(f, ukConfig(true))}
	emergencyTrunk := map[string]bool{"pstn": true, "gw": true}
	in := mustCompile(f, Config{Numbering: nanp, Inbound: []Inbound{{Match: `^(.*)$`, Extension: "$1"}}})
	f.Fuzz(func(t *testing.T, s string) {
		for _, tb := range tables {
			d, err := tb.Outbound(s)
			switch {
			case err == nil && (d.Emergency || d.Special):
				if !emergencyTrunk[d.Trunk] {
					t.Fatalf("Outbound(%q) = %+v: emergency/special to an internet trunk", s, d)
				}
			case err == nil:
				if e, err := tb.E164(d.Number); err != nil || e != d.Number {
					t.Fatalf("Outbound(%q) = %+v: number not E.164 (%q, %v)", s, d, e, err)
				}
			case !errors.Is(err, ErrNoRoute) && !errors.Is(err, ErrInvalidNumber) && !errors.Is(err, ErrEmergencyBlocked):
				t.Fatalf("Outbound(%q): unexpected error %v", s, err)
			}
			if e, err := tb.E164(s); err == nil {
				if !strings.HasPrefix(e, "+") || !allDigits(e[1:]) {
					t.Fatalf("E164(%q) = %q", s, e)
				}
				if e2, err := tb.E164(e); err != nil || e2 != e {
					t.Fatalf("E164 not idempotent: %q → %q → %q, %v", s, e, e2, err)
				}
			} else if !errors.Is(err, ErrInvalidNumber) {
				t.Fatalf("E164(%q): unexpected error %v", s, err)
			}
			_ = tb.CallerForPBX(s)
		}
		if ext, err := in.Inbound(s); err == nil && !validExtension(ext) {
			t.Fatalf("Inbound(%q) = %q: not a valid extension", s, ext)
		}
	})
}

// FuzzEmergencyForms builds dial strings from an emergency or special
// code with the decorations a user or a PBX could add: access code,
// national / international / '+' prefixes, vertical service codes, a
// trailing '#', separators anywhere, sip:/tel: URIs, percent-escapes. The
// fuzzer picks the decorations; whatever it builds must never be routed as
// an ordinary call.
func FuzzEmergencyForms(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 1, 1, 0, 1, 1, 3, 2})
	f.Add([]byte{1, 3, 2, 1, 0, 2, 5, 7, 9})
	f.Add([]byte{0, 5, 3, 0, 1, 4, 1, 1, 4, 4})
	tables := []*Table{mustCompile(f, nanpConfig(false)), mustCompile(f, nanpConfig(true))}
	access := []string{"", "9"}
	prefixes := []string{"", "1", "+1", "011 1", "+", "0111", "+1 1", "9011 1"}
	vscs := []string{"", "*67", "*82", "#31#", "*31#"}
	seps := []string{" ", "-", ".", "(", ")", "/", "\t"}
	wraps := []func(string) string{
		func(s string) string { return s },
		func(s string) string { return "tel:" + s },
		func(s string) string { return "tel:" + s + ";phone-context=+1" },
		func(s string) string { return "sip:" + s + "@pbx.example.com;user=phone" },
		func(s string) string { return "<sips:" + s + "@10.0.0.2:5061>" },
		func(s string) string { return "%" + hexByte(s[0]) + s[1:] },
	}
	pick := func(ops []byte, i, n int) int {
		if i < len(ops) {
			return int(ops[i]) % n
		}
		return 0
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 16 {
			ops = ops[:16]
		}
		for _, code := range []string{"911", "112", "933", "411", "611"} {
			number := prefixes[pick(ops, 1, len(prefixes))] + code
			vsc := vscs[pick(ops, 2, len(vscs))]
			s := access[pick(ops, 0, len(access))]
			if pick(ops, 3, 2) == 0 {
				s = vsc + s + number
			} else {
				s = s + vsc + number
			}
			if pick(ops, 4, 2) == 1 {
				s += "#"
			}
			for i := 6; i+1 < len(ops); i += 2 { // separators at fuzzer-chosen places
				pos := int(ops[i]) % (len(s) + 1)
				s = s[:pos] + seps[int(ops[i+1])%len(seps)] + s[pos:]
			}
			s = wraps[pick(ops, 5, len(wraps))](s)
			for _, tb := range tables {
				if d, err := tb.Outbound(s); err == nil && !d.Emergency && !d.Special {
					t.Fatalf("Outbound(%q) = %+v: emergency dial routed as ordinary", s, d)
				}
			}
		}
	})
}

func hexByte(c byte) string {
	const hex = "0123456789ABCDEF"
	return string([]byte{hex[c>>4], hex[c&15]})
}

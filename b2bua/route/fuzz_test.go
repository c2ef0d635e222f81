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
				if d.Trunk != "skype" {
					t.Fatalf("Outbound(%q) = %+v: ordinary number to the gateway", s, d)
				}
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

// FuzzEmergencyForms decorates an emergency number with the operations a
// user or a PBX could apply (access codes, prefixes, separators, service
// codes, URI forms, escapes) in the order the fuzzer picks. Whatever comes
// out must never be routed as an ordinary call.
func FuzzEmergencyForms(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{0, 1, 6})
	f.Add([]byte{3, 5, 7, 9})
	f.Add([]byte{2, 4, 8, 10, 11})
	tables := []*Table{mustCompile(f, nanpConfig(false)), mustCompile(f, nanpConfig(true))}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 12 {
			ops = ops[:12]
		}
		for _, code := range []string{"911", "112", "933", "411"} {
			s := code
			for _, op := range ops {
				switch op % 12 {
				case 0:
					s = "9" + s // access code
				case 1:
					s = "1" + s // national prefix
				case 2:
					s = "+1" + s
				case 3:
					s = "011" + "1" + s
				case 4:
					s = "*67" + s
				case 5:
					s = s + "#"
				case 6:
					if len(s) > 1 {
						s = s[:1] + " " + s[1:]
					}
				case 7:
					if len(s) > 2 {
						s = s[:2] + "-" + s[2:]
					}
				case 8:
					s = "(" + s + ")"
				case 9:
					s = "%" + hexByte(s[0]) + s[1:] // percent-escape the first character
				case 10:
					s = "tel:" + s
				case 11:
					s = "sip:" + s + "@pbx.example.com;user=phone"
				}
				if strings.HasPrefix(s, "tel:") || strings.HasPrefix(s, "sip:") {
					break // no more decoration after a URI
				}
			}
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

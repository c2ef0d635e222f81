package locate

import (
	"testing"
)

func TestSubst(t *testing.T) {
	tests := []struct {
		expr, in, want string
		match          bool
		bad            bool
	}{
		{expr: `!^.*$!_sips._tcp.example.com!`, in: "example.com", want: "_sips._tcp.example.com", match: true},
		{expr: `!^(.*)$!_sip._udp.\1!`, in: "example.com", want: "_sip._udp.example.com", match: true},
		{expr: `/example/other/`, in: "sip.example.com", want: "sip.other.com", match: true},
		{expr: `/EXAMPLE/other/i`, in: "sip.example.com", want: "sip.other.com", match: true},
		{expr: `/EXAMPLE/other/`, in: "sip.example.com", match: false},
		{expr: `#a\#b#x\#y#`, in: "za#bz", want: "zx#yz", match: true},
		{expr: `!(a)(b)!\2\1$!`, in: "ab", want: "ba$", match: true},
		{expr: `!a!\\!`, in: "a", want: `\`, match: true},
		{expr: `!.!x!`, in: "", match: false},
		{expr: `!a!b`, bad: true},
		{expr: `!!b!`, bad: true},
		{expr: `1a1b1`, bad: true},
		{expr: `ia!b!i`, bad: true},
		{expr: `!a!b!g`, bad: true},
		{expr: `!(!b!`, bad: true},
		{expr: `!a!\1!`, bad: true},
		{expr: `!a!b!c!`, bad: true},
		{expr: "", bad: true},
	}
	for _, tc := range tests {
		s, err := parseSubst(tc.expr)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: parsed, want error", tc.expr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		got, ok := s.apply(tc.in)
		if ok != tc.match || got != tc.want {
			t.Errorf("%q on %q = %q, %v; want %q, %v", tc.expr, tc.in, got, ok, tc.want, tc.match)
		}
	}
}

func TestUnescapeString(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:     "plain",
		`a\\1`:      `a\1`,
		`\"q\"`:     `"q"`,
		`x\065y`:    "xAy",
		`x\999`:     "x999",
		`trailing\`: `trailing\`,
		`\0`:        "0",
	} {
		if got := unescapeString(in); got != want {
			t.Errorf("unescapeString(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzSubst: any NAPTR regexp field must parse or fail cleanly, and a parsed
// expression must apply to any input without panicking.
func FuzzSubst(f *testing.F) {
	for _, s := range []string{`!^.*$!_sips._tcp.example.com!`, `!^(.*)$!_sip._udp.\1!`, `/EXAMPLE/other/i`, `#a\#b#x\#y#`, `!a!\\!`, `!(a)(b)!\2\1$!`} {
		f.Add(s, "example.com")
	}
	f.Fuzz(func(t *testing.T, expr, in string) {
		s, err := parseSubst(unescapeString(expr))
		if err != nil {
			return
		}
		out, ok := s.apply(in)
		if !ok && out != "" {
			t.Fatalf("no match but output %q", out)
		}
	})
}

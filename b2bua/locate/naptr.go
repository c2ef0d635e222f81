package locate

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// subst is a parsed NAPTR substitution expression (RFC 3402 §3.2):
//
//	subst-expr = delim-char ere delim-char repl delim-char *flags
//
// RFC 3263 SIP NAPTR records normally carry an empty regexp and use the
// replacement field; a non-empty regexp is still honoured so that a
// provider's unusual zone does not break resolution.
type subst struct {
	re   *regexp.Regexp
	tmpl string // Go regexp.Expand template: backrefs as ${N}, '$' escaped
}

var errSubst = errors.New("bad naptr regexp")

// maxSubstLen bounds the expression: a DNS character-string holds 255 octets.
const maxSubstLen = 255

// parseSubst parses a substitution expression. The delimiter is the first
// character; it may appear escaped (\delim) inside the ERE and the
// replacement. The only flag is "i" (case-insensitive). Backreferences \1..\9
// in the replacement refer to the ERE's groups.
func parseSubst(s string) (*subst, error) {
	if len(s) < 3 || len(s) > maxSubstLen {
		return nil, fmt.Errorf("%w: length %d", errSubst, len(s))
	}
	delim := s[0]
	if (delim >= '1' && delim <= '9') || delim == '\\' || delim == 'i' {
		return nil, fmt.Errorf("%w: delimiter %q", errSubst, delim)
	}
	parts := make([]string, 0, 3)
	var cur strings.Builder
	rest := s[1:]
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case c == '\\' && i+1 < len(rest):
			// Keep the escape; the ERE and replacement passes below
			// interpret it.
			cur.WriteByte(c)
			cur.WriteByte(rest[i+1])
			i++
		case c == delim && len(parts) < 2:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("%w: want 3 delimiters", errSubst)
	}
	flags := cur.String()
	ere, repl := parts[0], parts[1]
	if ere == "" {
		return nil, fmt.Errorf("%w: empty expression", errSubst)
	}
	prefix := ""
	switch flags {
	case "":
	case "i":
		prefix = "(?i)"
	default:
		return nil, fmt.Errorf("%w: flags %q", errSubst, flags)
	}
	re, err := regexp.Compile(prefix + unescapeDelim(ere, delim))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSubst, err)
	}
	tmpl, err := replTemplate(repl, re.NumSubexp())
	if err != nil {
		return nil, err
	}
	return &subst{re: re, tmpl: tmpl}, nil
}

// unescapeDelim turns \delim in an ERE into the literal delimiter, quoted for
// Go's regexp syntax; other escapes are left for the regexp engine.
func unescapeDelim(ere string, delim byte) string {
	var b strings.Builder
	for i := 0; i < len(ere); i++ {
		if ere[i] == '\\' && i+1 < len(ere) {
			if ere[i+1] == delim {
				b.WriteString(regexp.QuoteMeta(string(delim)))
			} else {
				b.WriteByte(ere[i])
				b.WriteByte(ere[i+1])
			}
			i++
			continue
		}
		b.WriteByte(ere[i])
	}
	return b.String()
}

// replTemplate converts an RFC 3402 replacement into a regexp.Expand
// template.
func replTemplate(repl string, groups int) (string, error) {
	var b strings.Builder
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		if c == '\\' && i+1 < len(repl) {
			n := repl[i+1]
			i++
			if n >= '1' && n <= '9' {
				if int(n-'0') > groups {
					return "", fmt.Errorf("%w: backreference \\%c without group", errSubst, n)
				}
				b.WriteString("${")
				b.WriteByte(n)
				b.WriteString("}")
				continue
			}
			c = n // \\, \delim or any escaped char stands for itself
		}
		if c == '$' {
			b.WriteString("$$")
			continue
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// apply rewrites the first match of the expression in aus, sed style, and
// reports whether it matched.
func (s *subst) apply(aus string) (string, bool) {
	m := s.re.FindStringSubmatchIndex(aus)
	if m == nil {
		return "", false
	}
	out := make([]byte, 0, len(aus)+len(s.tmpl))
	out = append(out, aus[:m[0]]...)
	out = s.re.ExpandString(out, s.tmpl, aus, m)
	out = append(out, aus[m[1]:]...)
	return string(out), true
}

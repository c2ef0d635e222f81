package header

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// ErrBadValue is wrapped by every error about a header name or value that
// esbc refuses to write (CR, LF, NUL, other controls, not a token).
var ErrBadValue = errors.New("bad header value")

// Message is the part of *sip.Request and *sip.Response the rules need.
type Message interface {
	Headers() []sip.Header
	GetHeaders(name string) []sip.Header
	AppendHeader(h sip.Header)
	RemoveHeader(name string) bool
}

// CheckValue refuses a value esbc would write into a header: CR, LF and NUL
// (header injection), and the other ASCII controls but HTAB and DEL, none
// of which RFC 3261 allows in a header value (TEXT-UTF8char, LWS).
func CheckValue(v string) error {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("%w: control character %q at %d", ErrBadValue, c, i)
		}
	}
	return nil
}

// checkName refuses a header name that is not an RFC 3261 token.
func checkName(n string) error {
	if n == "" {
		return fmt.Errorf("%w: empty header name", ErrBadValue)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		default:
			return fmt.Errorf("%w: header name %q: character %q", ErrBadValue, n, c)
		}
	}
	return nil
}

// compact maps the compact header forms (RFC 3261 §7.3.3 and the IANA
// registry) to full names, lower case.
var compact = map[string]string{
	"a": "accept-contact", "b": "referred-by", "c": "content-type", "d": "request-disposition",
	"e": "content-encoding", "f": "from", "i": "call-id", "j": "reject-contact", "k": "supported",
	"l": "content-length", "m": "contact", "n": "identity-info", "o": "event", "r": "refer-to",
	"s": "subject", "t": "to", "u": "allow-events", "v": "via", "x": "session-expires", "y": "identity",
}

// spelled holds the canonical spelling of names whose capitals do not
// follow the dash rule.
var spelled = map[string]string{
	"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
	"mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq", "sip-etag": "SIP-ETag",
	"sip-if-match": "SIP-If-Match", "min-se": "Min-SE", "remote-party-id": "Remote-Party-ID",
	"p-asserted-identity": "P-Asserted-Identity", "p-preferred-identity": "P-Preferred-Identity",
}

// lowerName is the lower-case full name of a header name, compact forms expanded.
func lowerName(n string) string {
	l := strings.ToLower(strings.TrimSpace(n))
	if full, ok := compact[l]; ok {
		return full
	}
	return l
}

// canonName is the spelling esbc writes: full form, capital after each dash.
func canonName(n string) string {
	l := lowerName(n)
	if s, ok := spelled[l]; ok {
		return s
	}
	b := []byte(l)
	up := true
	for i, c := range b {
		if up && c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		up = c == '-'
	}
	return string(b)
}

// removeAll removes every header called lname (lower case, full form)
// whatever its spelling, and returns the removed ones in order.
func removeAll(m Message, lname string) []sip.Header {
	var removed []sip.Header
	for _, h := range m.Headers() {
		if lowerName(h.Name()) == lname {
			removed = append(removed, h)
		}
	}
	for _, h := range removed {
		// RemoveHeader drops the first header of exactly this spelling;
		// the loop above found them in order, so this removes them all.
		m.RemoveHeader(h.Name())
	}
	return removed
}

// values returns the values of every header called lname.
func values(m Message, lname string) []string {
	var out []string
	for _, h := range m.Headers() {
		if lowerName(h.Name()) == lname {
			out = append(out, h.Value())
		}
	}
	return out
}

// splitList splits a header value on the commas that separate entries,
// not those inside quotes or angle brackets.
func splitList(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == '<' && !quoted:
			depth++
		case c == '>' && !quoted && depth > 0:
			depth--
		case c == ',' && !quoted && depth == 0:
			if s := strings.TrimSpace(v[start:i]); s != "" {
				out = append(out, s)
			}
			start = i + 1
		}
	}
	if s := strings.TrimSpace(v[start:]); s != "" {
		out = append(out, s)
	}
	return out
}

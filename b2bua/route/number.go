package route

import (
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
)

// maxInput bounds what the number functions look at; a dial string or a
// Request-URI user longer than this is not a phone number.
const maxInput = 256

// maxDigits bounds a cleaned number (E.164 allows 15 digits; access codes,
// international prefixes and service codes add a few).
const maxDigits = 32

// userPart returns the user part of a sip:/sips: URI, the number of a tel:
// URI, or s itself, percent-decoded. The URI forms are those a PBX puts in a
// Request-URI; anything after ';' (user or tel parameters) is dropped.
func userPart(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxInput {
		return "", fmt.Errorf("%d bytes", len(s))
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("not UTF-8")
	}
	// Strip a display name and angle brackets: "Bob" <sip:...>.
	if i := strings.IndexByte(s, '<'); i >= 0 {
		if j := strings.IndexByte(s[i:], '>'); j > 0 {
			s = s[i+1 : i+j]
		}
	}
	lower := strings.ToLower(s)
	switch {
	case strings.HasPrefix(lower, "sip:"), strings.HasPrefix(lower, "sips:"):
		s = s[strings.IndexByte(s, ':')+1:]
		if i := strings.LastIndexByte(s, '@'); i >= 0 {
			s = s[:i]
		} else if i := strings.IndexAny(s, ";?"); i >= 0 {
			s = s[:i]
		}
		if i := strings.IndexAny(s, ";:"); i >= 0 { // user params, password
			s = s[:i]
		}
	case strings.HasPrefix(lower, "tel:"):
		s = s[len("tel:"):]
		if i := strings.IndexAny(s, ";?"); i >= 0 {
			s = s[:i]
		}
	}
	if strings.IndexByte(s, '%') >= 0 {
		d, err := url.PathUnescape(s)
		if err != nil {
			return "", fmt.Errorf("bad escape: %w", err)
		}
		if !utf8.ValidString(d) {
			return "", fmt.Errorf("not UTF-8")
		}
		s = d
	}
	return strings.TrimSpace(s), nil
}

// isSeparator reports the visual separators of RFC 3966 and the spaces and
// slashes people type.
func isSeparator(r rune) bool {
	switch r {
	case ' ', '\t', '-', '.', '(', ')', '/', '[', ']':
		return true
	}
	return unicode.IsSpace(r) || r == '\u2010' || r == '\u2011' || r == '\u2012' || r == '\u2013' || r == '\u2014' || r == '\u2212'
}

// cleanDigits turns a dial string into digits, '*' and '#', with an optional
// leading '+'. Separators go; non-ASCII digits (full-width, Arabic-Indic...)
// become ASCII digits; anything else is an error.
func cleanDigits(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9', r == '*', r == '#':
			b.WriteRune(r)
		case r == '+' || r == '\uff0b':
			if b.Len() != 0 {
				return "", fmt.Errorf("'+' inside the number")
			}
			b.WriteByte('+')
		case isSeparator(r):
		case unicode.IsDigit(r):
			d := phonenumbers.NormalizeDigitsOnly(string(r))
			if d == "" {
				return "", fmt.Errorf("character %q", r)
			}
			b.WriteString(d)
		default:
			return "", fmt.Errorf("character %q", r)
		}
		if b.Len() > maxDigits {
			return "", fmt.Errorf("longer than %d digits", maxDigits)
		}
	}
	if b.Len() == 0 || b.String() == "+" {
		return "", fmt.Errorf("no digits")
	}
	return b.String(), nil
}

// cleanNumber is userPart then cleanDigits.
func cleanNumber(s string) (string, error) {
	u, err := userPart(s)
	if err != nil {
		return "", err
	}
	return cleanDigits(u)
}

// looksNumeric reports whether s is a phone number with separators (as
// opposed to a Skype-name tag or an alphanumeric user).
func looksNumeric(s string) bool {
	digits := 0
	for i, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '+' && i == 0, r == '*', r == '#', isSeparator(r):
		default:
			return false
		}
	}
	return digits > 0
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// E164 normalises a number (dialled digits, a caller number, a sip: or tel:
// URI) to E.164 with '+': '+' is kept, the international prefix becomes '+',
// the national prefix is replaced by the country code, and a bare national
// significant number gets the country code. The result must be a valid
// number for libphonenumber, otherwise the error wraps ErrInvalidNumber.
func (t *Table) E164(number string) (string, error) {
	c, err := cleanNumber(number)
	if err != nil {
		return "", fmt.Errorf("number %q: %w: %w", number, ErrInvalidNumber, err)
	}
	e, err := t.e164Clean(c)
	if err != nil {
		return "", fmt.Errorf("number %q: %w", number, err)
	}
	return e, nil
}

// e164Clean is E164 on a cleaned number.
func (t *Table) e164Clean(c string) (string, error) {
	n := t.numbering
	var digits string
	switch {
	case strings.HasPrefix(c, "+"):
		digits = c[1:]
	case n.InternationalPrefix != "" && strings.HasPrefix(c, n.InternationalPrefix):
		digits = c[len(n.InternationalPrefix):]
	case n.NationalPrefix != "" && strings.HasPrefix(c, n.NationalPrefix):
		digits = n.CountryCode + c[len(n.NationalPrefix):]
	default:
		digits = n.CountryCode + c
	}
	if !allDigits(digits) {
		return "", fmt.Errorf("%w: not all digits", ErrInvalidNumber)
	}
	num, err := phonenumbers.Parse("+"+digits, "ZZ")
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidNumber, err)
	}
	if !phonenumbers.IsValidNumber(num) {
		return "", fmt.Errorf("%w: +%s is not a valid number", ErrInvalidNumber, digits)
	}
	return phonenumbers.Format(num, phonenumbers.E164), nil
}

// CallerForPBX formats a caller number for the PBX per InboundCallerFormat:
// E.164, or "national": the national form (libphonenumber's, digits only:
// US 4155550100, UK 02079460000) for numbers of our country code and
// international prefix + country code + number for the others. A number
// that does not normalise (anonymous, a Skype name) is returned unchanged;
// the caller of CallerForPBX decides whether it may be written.
func (t *Table) CallerForPBX(e164 string) string {
	e, err := t.E164(e164)
	if err != nil {
		return e164
	}
	if !t.national {
		return e
	}
	num, err := phonenumbers.Parse(e, "ZZ")
	if err != nil {
		return e
	}
	if fmt.Sprint(num.GetCountryCode()) == t.numbering.CountryCode {
		return phonenumbers.NormalizeDigitsOnly(phonenumbers.Format(num, phonenumbers.NATIONAL))
	}
	if t.numbering.InternationalPrefix == "" {
		return e
	}
	return t.numbering.InternationalPrefix + e[1:]
}

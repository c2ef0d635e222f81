package route

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// Numbering is the national numbering plan of the site (YAML numbering).
type Numbering struct {
	CountryCode         string // "1", "44"
	NationalPrefix      string // trunk prefix: "1" (NANP), "0" (UK), "" where none
	InternationalPrefix string // "011" (NANP), "00" (UK); "" = only '+'
}

// Outbound is one PBX → trunk route (routes.outbound[i]).
type Outbound struct {
	Match  string // Go regexp on the cleaned dialled string
	Number string // regexp template ($1, ${name}) giving the number; "" = the cleaned dialled string
	Trunk  string // trunk name
}

// Inbound is one trunk → PBX route (routes.inbound[i]).
type Inbound struct {
	Match     string // Go regexp on the Request-URI user
	Extension string // regexp template giving the PBX extension
}

// Trunk is what routing needs to know of a trunk (trunks[i]).
type Trunk struct {
	Name      string
	Emergency bool // may carry emergency and special-service numbers
}

// Config is the dial plan as the config snapshot holds it.
type Config struct {
	Numbering           Numbering
	Emergency           []string // routes.emergency: short codes, e.g. 911, 112, 999
	Special             []string // routes.special: N11 and other special-service codes
	Outbound            []Outbound
	Inbound             []Inbound
	Trunks              []Trunk
	InboundCallerFormat string // routes.inbound_caller_format: "e164" (default) | "national"
}

// Decision is where an outbound call goes.
type Decision struct {
	Trunk string
	// Number is E.164 with '+'; for an emergency or special number it is
	// the short code as listed (e.g. "911"), which has no E.164 form.
	Number    string
	Emergency bool // an emergency number: log it at warn
	Special   bool // a special-service number
	Route     int  // index of the route taken in Config.Outbound
}

type outRoute struct {
	re        *regexp.Regexp
	template  string
	trunk     string
	emergency bool
}

type inRoute struct {
	re       *regexp.Regexp
	template string
}

// Table is a compiled dial plan. It is immutable and safe for concurrent use.
type Table struct {
	numbering  Numbering
	region     string // libphonenumber region of the country code
	national   bool   // InboundCallerFormat == "national"
	emergency  map[string]bool
	special    map[string]bool
	defaultSOS string // short code for urn:service:sos
	outbound   []outRoute
	inbound    []inRoute
}

// Compile validates cfg and builds a Table. All errors are returned at once
// (errors.Join), each prefixed with the YAML path of its key.
func Compile(cfg Config) (*Table, error) {
	var errs []error
	bad := func(key string, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, a...)...))
	}
	n := cfg.Numbering
	t := &Table{numbering: n, emergency: map[string]bool{}, special: map[string]bool{}}

	switch {
	case !allDigits(n.CountryCode):
		bad("numbering.country_code", "%q is not a country calling code (digits, no '+')", n.CountryCode)
	default:
		t.region = phonenumbers.GetRegionCodeForCountryCode(atoi(n.CountryCode))
		if t.region == "ZZ" || t.region == "" || strings.HasPrefix(n.CountryCode, "0") {
			bad("numbering.country_code", "%q is not a known country calling code", n.CountryCode)
		}
	}
	if n.NationalPrefix != "" && !allDigits(n.NationalPrefix) {
		bad("numbering.national_prefix", "%q must be digits", n.NationalPrefix)
	}
	if n.InternationalPrefix != "" && !allDigits(n.InternationalPrefix) {
		bad("numbering.international_prefix", "%q must be digits", n.InternationalPrefix)
	}
	if n.NationalPrefix != "" && n.NationalPrefix == n.InternationalPrefix {
		bad("numbering.international_prefix", "%q is also the national prefix", n.InternationalPrefix)
	}

	switch cfg.InboundCallerFormat {
	case "", "e164":
	case "national":
		t.national = true
	default:
		bad("routes.inbound_caller_format", "%q is not e164 or national", cfg.InboundCallerFormat)
	}

	for i, e := range cfg.Emergency {
		if !shortCode(e) {
			bad(fmt.Sprintf("routes.emergency[%d]", i), "%q must be 1-15 digits", e)
			continue
		}
		t.emergency[e] = true
		if t.defaultSOS == "" {
			t.defaultSOS = e
		}
	}
	for i, s := range cfg.Special {
		if !shortCode(s) {
			bad(fmt.Sprintf("routes.special[%d]", i), "%q must be 1-15 digits", s)
			continue
		}
		t.special[s] = true
	}
	if t.defaultSOS == "" {
		t.defaultSOS = "112"
		if n.CountryCode == "1" {
			t.defaultSOS = "911"
		}
	}

	trunks := map[string]bool{}
	for i, tr := range cfg.Trunks {
		key := fmt.Sprintf("trunks[%d].name", i)
		if tr.Name == "" {
			bad(key, "empty")
			continue
		}
		if _, dup := trunks[tr.Name]; dup {
			bad(key, "duplicate trunk %q", tr.Name)
		}
		trunks[tr.Name] = tr.Emergency
	}

	for i, r := range cfg.Outbound {
		key := fmt.Sprintf("routes.outbound[%d]", i)
		re, err := regexp.Compile(r.Match)
		if err != nil {
			bad(key+".match", "%w", err)
		} else if r.Match == "" {
			bad(key+".match", "empty")
		}
		if err := checkTemplate(r.Number); err != nil {
			bad(key+".number", "%w", err)
		}
		em, ok := trunks[r.Trunk]
		if !ok {
			bad(key+".trunk", "unknown trunk %q", r.Trunk)
		}
		t.outbound = append(t.outbound, outRoute{re: re, template: r.Number, trunk: r.Trunk, emergency: em})
	}
	for i, r := range cfg.Inbound {
		key := fmt.Sprintf("routes.inbound[%d]", i)
		re, err := regexp.Compile(r.Match)
		if err != nil {
			bad(key+".match", "%w", err)
		} else if r.Match == "" {
			bad(key+".match", "empty")
		}
		if r.Extension == "" {
			bad(key+".extension", "empty")
		} else if err := checkTemplate(r.Extension); err != nil {
			bad(key+".extension", "%w", err)
		}
		t.inbound = append(t.inbound, inRoute{re: re, template: r.Extension})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// atoi reads a country calling code (1 to 3 digits); -1 otherwise.
func atoi(s string) int {
	v, err := strconv.Atoi(s)
	if err != nil || len(s) > 3 {
		return -1
	}
	return v
}

func shortCode(s string) bool { return allDigits(s) && len(s) <= 15 }

// checkTemplate refuses characters that cannot be in a number or a SIP user.
func checkTemplate(s string) error {
	for _, r := range s {
		if r < 0x21 || r == 0x7f || r == '@' || r == '<' || r == '>' || r == '"' {
			return fmt.Errorf("character %q not allowed", r)
		}
	}
	return nil
}

// expand applies a route's template to s; "" keeps s.
func expand(re *regexp.Regexp, template, s string, m []int) string {
	if template == "" {
		return s
	}
	return string(re.ExpandString(nil, template, s, m))
}

// Outbound routes a number the PBX dialled (a Request-URI user, a sip: or
// tel: URI, with separators or not). Emergency and special numbers, in any
// form, go only to an emergency-capable trunk or fail with
// ErrEmergencyBlocked; other numbers take the first matching route and must
// normalise to a valid E.164 number (ErrInvalidNumber); no match is
// ErrNoRoute.
func (t *Table) Outbound(dialled string) (Decision, error) {
	if isSOSURN(dialled) {
		return t.emergencyRoute("", t.defaultSOS, true)
	}
	c, err := cleanNumber(dialled)
	if err != nil {
		return Decision{}, fmt.Errorf("route %q: %w: %w", dialled, ErrInvalidNumber, err)
	}
	if code, emergency, ok := t.classify(c); ok {
		return t.emergencyRoute(c, code, emergency)
	}
	for i, r := range t.outbound {
		m := r.re.FindStringSubmatchIndex(c)
		if m == nil {
			continue
		}
		num := expand(r.re, r.template, c, m)
		e, err := t.E164(num)
		if err != nil {
			return Decision{}, fmt.Errorf("route %q via routes.outbound[%d]: %w", dialled, i, err)
		}
		return Decision{Trunk: r.trunk, Number: e, Route: i}, nil
	}
	return Decision{}, fmt.Errorf("route %q: %w", dialled, ErrNoRoute)
}

// emergencyRoute picks the first route to an emergency-capable trunk whose
// Match matches c, else the first route to an emergency-capable trunk at
// all: an emergency call must get through when there is any way.
func (t *Table) emergencyRoute(c, code string, emergency bool) (Decision, error) {
	d := Decision{Number: code, Emergency: emergency, Special: !emergency, Route: -1}
	first := -1
	for i, r := range t.outbound {
		if !r.emergency {
			continue
		}
		if first < 0 {
			first = i
		}
		if c != "" && r.re.MatchString(c) {
			first = i
			break
		}
	}
	if first < 0 {
		kind := "emergency"
		if !emergency {
			kind = "special-service"
		}
		return d, fmt.Errorf("route %s number %s: no route to an emergency-capable trunk: %w", kind, code, ErrEmergencyBlocked)
	}
	d.Trunk, d.Route = t.outbound[first].trunk, first
	return d, nil
}

func isSOSURN(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	if i := strings.IndexByte(s, '<'); i >= 0 {
		s = s[i+1:]
	}
	return strings.HasPrefix(s, "urn:service:sos")
}

// classify reports whether the cleaned dial string c is, in any of its
// forms, an emergency (emergency true) or special-service number, and
// which code.
func (t *Table) classify(c string) (code string, emergency, ok bool) {
	var special string
	for _, f := range t.forms(c) {
		if t.emergency[f] || t.libEmergency(f) {
			return f, true, true
		}
		if special == "" && t.special[f] {
			special = f
		}
	}
	if special != "" {
		return special, false, true
	}
	return "", false, false
}

func (t *Table) libEmergency(f string) bool {
	return len(f) <= 6 && allDigits(f) && phonenumbers.IsEmergencyNumber(f, t.region)
}

// maxForms bounds the search of forms; a dial string has far fewer.
const maxForms = 1024

// forms returns s and every string reachable from it by removing, in any
// order, a leading '+', the international prefix, the country code, the
// national prefix, a vertical service code (*67, *82, #31#, *31#) or a
// trailing '#', or by applying the rewrite of an outbound route that
// matches (at most twice along a path, so that access codes are removed
// whatever the rest looks like).
func (t *Table) forms(s string) []string {
	type item struct {
		s      string
		routed int
	}
	var out []string
	seen := map[string]bool{}
	queue := []item{{s, 0}}
	n := t.numbering
	for len(queue) > 0 && len(seen) < maxForms {
		it := queue[0]
		queue = queue[1:]
		f := it.s
		if f == "" || len(f) > maxDigits || seen[f] {
			continue
		}
		seen[f] = true
		out = append(out, f)
		next := func(x string) {
			if x != "" && !seen[x] {
				queue = append(queue, item{x, it.routed})
			}
		}
		trim := func(prefix string) {
			if prefix != "" && strings.HasPrefix(f, prefix) {
				next(f[len(prefix):])
			}
		}
		trim("+")
		trim(n.InternationalPrefix)
		trim(n.CountryCode)
		trim(n.NationalPrefix)
		trim("#31#")
		trim("*31#")
		if len(f) > 3 && (f[0] == '*' || f[0] == '#') && allDigits(f[1:3]) {
			next(f[3:])
		}
		if strings.HasSuffix(f, "#") {
			next(f[:len(f)-1])
		}
		if it.routed >= 2 {
			continue
		}
		for _, r := range t.outbound {
			if m := r.re.FindStringSubmatchIndex(f); m != nil {
				if x, err := cleanDigits(expand(r.re, r.template, f, m)); err == nil && !seen[x] {
					queue = append(queue, item{x, it.routed + 1})
				}
			}
		}
	}
	return out
}

// Inbound maps the Request-URI user of a call from a trunk (an Online
// Number in E.164, a national number, or an extension tag) to the PBX
// extension of the first inbound route that matches; none is ErrNoRoute.
func (t *Table) Inbound(ruriUser string) (string, error) {
	u, err := userPart(ruriUser)
	if err != nil {
		return "", fmt.Errorf("inbound %q: %w: %w", ruriUser, ErrInvalidNumber, err)
	}
	if looksNumeric(u) {
		if c, err := cleanDigits(u); err == nil {
			u = c
		}
	}
	for i, r := range t.inbound {
		m := r.re.FindStringSubmatchIndex(u)
		if m == nil {
			continue
		}
		ext := expand(r.re, r.template, u, m)
		if !validExtension(ext) {
			return "", fmt.Errorf("inbound %q via routes.inbound[%d]: extension %q: %w", ruriUser, i, ext, ErrInvalidNumber)
		}
		return ext, nil
	}
	return "", fmt.Errorf("inbound %q: %w", ruriUser, ErrNoRoute)
}

// validExtension accepts what may stand unescaped in the user part of a
// SIP URI (RFC 3261 §25.1 unreserved / user-unreserved).
func validExtension(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-_.!~*'()&=+$,;?/", c) >= 0:
		default:
			return false
		}
	}
	return true
}

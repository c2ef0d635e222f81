package header

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
)

// TrunkIdentity is what a trunk wants to see as the caller (trunks[i]).
type TrunkIdentity struct {
	Domain           string   // host of From (and of P-Asserted-Identity)
	FromUser         string   // user of From: the trunk's SIP username
	CallerID         string   // P-Asserted-Identity when the PBX's own number may not pass
	AllowedCallerIDs []string // PBX-asserted numbers that may pass as caller ID
	// TrustPAI: the trunk is in our trust domain (RFC 3325 Spec(T)): its
	// P-Asserted-Identity is believed inbound, and outbound it keeps the
	// PAI of a private call (with Privacy: id) instead of losing it.
	TrustPAI bool
	// FromDisplay, when set, is the display name of From toward the trunk;
	// otherwise the PBX's display name passes (not on a private call).
	FromDisplay string
	// KeepFromUserOnPrivacy: on a private call From becomes
	// "Anonymous" <sip:FromUser@Domain> instead of
	// "Anonymous" <sip:anonymous@anonymous.invalid>, for trunks (Skype
	// Connect style) that reject a call whose From user is not their
	// username.
	KeepFromUserOnPrivacy bool
}

const (
	paiName     = "P-Asserted-Identity"
	ppiName     = "P-Preferred-Identity"
	rpidName    = "Remote-Party-ID"
	privacyName = "Privacy"
	maxDisplay  = 64
)

// identityHeaders are removed from every leg before esbc writes its own.
var identityHeaders = []string{"p-asserted-identity", "p-preferred-identity", "remote-party-id", "privacy"}

// party is one identity found in a request.
type party struct {
	number  string // user of a sip: URI or number of a tel: URI, decoded
	display string
}

// privacyTokens are the RFC 3323 priv-values esbc passes on.
var privacyTokens = []string{"user", "header", "session", "id", "critical"}

// privacyOf reports whether in asks for privacy, and the RFC 3323 tokens
// to send on: a Privacy header other than none, a Remote-Party-ID with
// privacy=full|uri|name, or an anonymous From.
func privacyOf(in *sip.Request) (bool, []string) {
	asked := map[string]bool{}
	for _, v := range values(in, "privacy") {
		for _, tok := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ',' || unicode.IsSpace(r) }) {
			asked[strings.ToLower(tok)] = true
		}
	}
	for _, v := range values(in, "remote-party-id") {
		for _, e := range splitList(v) {
			var u sip.Uri
			p := sip.NewParams()
			if _, err := sip.ParseAddressValue(e, &u, &p); err != nil {
				continue
			}
			if pv, ok := p.Get("privacy"); ok {
				switch strings.ToLower(pv) {
				case "full", "uri", "name":
					asked["id"] = true
				}
			}
		}
	}
	if f := in.From(); f != nil && isAnonymous(f.Address, f.DisplayName) {
		asked["id"] = true
	}
	delete(asked, "none")
	var toks []string
	for _, t := range privacyTokens {
		if asked[t] {
			toks = append(toks, t)
		}
	}
	if len(toks) == 0 {
		return false, nil
	}
	if !asked["id"] {
		// user/header/session privacy all hide who calls: assert nothing.
		toks = append([]string{"id"}, toks...)
	}
	return true, toks
}

func isAnonymous(u sip.Uri, display string) bool {
	user := strings.ToLower(numberOf(u))
	return user == "anonymous" || strings.EqualFold(u.Host, "anonymous.invalid") ||
		(user == "" && strings.EqualFold(strings.TrimSpace(display), "anonymous"))
}

// numberOf returns the user of a sip:/sips: URI or the number of a tel:
// URI, without parameters, percent-decoded.
func numberOf(u sip.Uri) string {
	var s string
	switch strings.ToLower(u.Scheme) {
	case "sip", "sips", "":
		s = u.User
	case "tel":
		s = u.Raw()
	default:
		return ""
	}
	if i := strings.IndexAny(s, ";?"); i >= 0 {
		s = s[:i]
	}
	if d, err := url.PathUnescape(s); err == nil {
		s = d
	}
	return strings.TrimSpace(s)
}

// parties parses the entries of every header called lname. For
// Remote-Party-ID only party=calling (or no party) entries count.
func parties(in *sip.Request, lname string) []party {
	var out []party
	for _, v := range values(in, lname) {
		for _, e := range splitList(v) {
			var u sip.Uri
			p := sip.NewParams()
			d, err := sip.ParseAddressValue(e, &u, &p)
			if err != nil {
				continue
			}
			if lname == "remote-party-id" {
				if pv, ok := p.Get("party"); ok && !strings.EqualFold(pv, "calling") {
					continue
				}
			}
			if n := numberOf(u); n != "" {
				out = append(out, party{number: n, display: d})
			}
		}
	}
	return out
}

// cleanDisplay makes a display name safe to put between quotes: no quotes,
// backslashes or controls, valid UTF-8, at most maxDisplay characters.
func cleanDisplay(s string) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > maxDisplay {
		s = string([]rune(s)[:maxDisplay])
	}
	return s
}

// validUser accepts what may stand unescaped in the user part of a SIP URI
// (RFC 3261 §25.1).
func validUser(s string) bool {
	if s == "" || len(s) > 128 {
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

func validHost(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

func isPhone(s string) bool {
	s = strings.TrimPrefix(s, "+")
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

func anonymousURI() sip.Uri {
	return sip.Uri{Scheme: "sip", User: "anonymous", Host: "anonymous.invalid"}
}

// identityURI is sip:user@host, with user=phone for a phone number.
func identityURI(scheme, user, host string) sip.Uri {
	u := sip.Uri{Scheme: scheme, User: user, Host: host}
	if isPhone(user) {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("user", "phone")
	}
	return u
}

// nameAddr renders "display" <uri>.
func nameAddr(display string, u sip.Uri) string {
	h := sip.FromHeader{DisplayName: display, Address: u}
	return h.Value()
}

// Identity is the caller identity of one leg: what ToTrunk and ToPBX write.
// The B2BUA may keep it in its dialog state (From of every request of the
// leg) and Apply it to each request it builds.
type Identity struct {
	DisplayName string  // From display name; "" = none
	From        sip.Uri // From URI (the tag is the dialog layer's)
	PAI         string  // P-Asserted-Identity value; "" = none
	Privacy     string  // Privacy value (RFC 3323 tokens); "" = none
}

// Apply writes i into out: From display name and URI (tag and other
// parameters kept; sips kept when out's From was sips), and the identity
// headers: every P-Asserted-Identity, P-Preferred-Identity,
// Remote-Party-ID and Privacy of out is removed, then PAI and Privacy are
// written when set. out must carry a From.
func (i Identity) Apply(out *sip.Request) error {
	from := out.From()
	if from == nil {
		return errors.New("identity: out has no From header")
	}
	u := i.From
	if strings.EqualFold(from.Address.Scheme, "sips") && u.Host != "anonymous.invalid" {
		u.Scheme = "sips"
	}
	f := sip.FromHeader{DisplayName: i.DisplayName, Address: u}
	for _, v := range []string{f.Value(), i.PAI, i.Privacy} {
		if err := CheckValue(v); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	from.DisplayName, from.Address = i.DisplayName, u
	for _, n := range identityHeaders {
		removeAll(out, n)
	}
	if i.PAI != "" {
		out.AppendHeader(sip.NewHeader(paiName, i.PAI))
	}
	if i.Privacy != "" {
		out.AppendHeader(sip.NewHeader(privacyName, i.Privacy))
	}
	return nil
}

// TrunkCaller decides the caller identity toward a trunk from the PBX's
// request in (RFC 3325, RFC 3323, SPEC §1):
//   - From: user = FromUser, host = Domain, display = FromDisplay or the
//     PBX's display name;
//   - P-Asserted-Identity: the PBX's own asserted number (PAI, then
//     Remote-Party-ID party=calling, then P-Preferred-Identity, then From)
//     when pbxTrusted and it is in AllowedCallerIDs (compared in E.164),
//     else CallerID;
//   - a private call (a Privacy header other than none, Remote-Party-ID
//     privacy=full|uri|name, or an anonymous From): From becomes
//     "Anonymous" <sip:anonymous@anonymous.invalid> (or
//     <sip:FromUser@Domain> with KeepFromUserOnPrivacy), PAI is kept only
//     when the trunk is trusted (TrustPAI), Privacy carries the tokens;
//   - the identity headers of an untrusted PBX are ignored.
//
// e164 normalises numbers (route.Table.E164); nil uses them verbatim.
func TrunkCaller(in *sip.Request, id TrunkIdentity, pbxTrusted bool, e164 func(string) (string, error)) (Identity, error) {
	if !validHost(id.Domain) {
		return Identity{}, fmt.Errorf("to trunk: domain %q: %w", id.Domain, ErrBadValue)
	}
	norm := func(s string) (string, bool) {
		if e164 == nil {
			return s, validUser(s)
		}
		e, err := e164(s)
		return e, err == nil && validUser(e)
	}
	allowed := func(n string) bool {
		for _, a := range id.AllowedCallerIDs {
			if na, ok := norm(a); ok && na == n {
				return true
			}
		}
		return false
	}
	private, toks := privacyOf(in)

	var asserted party
	if pbxTrusted {
		var cands []party
		cands = append(cands, parties(in, "p-asserted-identity")...)
		cands = append(cands, parties(in, "remote-party-id")...)
		cands = append(cands, parties(in, "p-preferred-identity")...)
		if f := in.From(); f != nil {
			cands = append(cands, party{number: numberOf(f.Address), display: f.DisplayName})
		}
		for _, c := range cands {
			if n, ok := norm(c.number); ok && allowed(n) {
				asserted = party{number: n, display: c.display}
				break
			}
		}
	}
	if asserted.number == "" && id.CallerID != "" {
		n, ok := norm(id.CallerID)
		if !ok {
			if !validUser(id.CallerID) {
				return Identity{}, fmt.Errorf("to trunk: caller id %q: %w", id.CallerID, ErrBadValue)
			}
			n = id.CallerID
		}
		asserted.number = n
	}
	display := id.FromDisplay
	if display == "" {
		if f := in.From(); f != nil {
			display = f.DisplayName
		}
	}
	display = cleanDisplay(display)

	user := id.FromUser
	if user == "" {
		user = asserted.number
	}
	if !validUser(user) {
		return Identity{}, fmt.Errorf("to trunk: from user %q: %w", user, ErrBadValue)
	}
	var out Identity
	switch {
	case private && id.KeepFromUserOnPrivacy:
		out.DisplayName, out.From = "Anonymous", sip.Uri{Scheme: "sip", User: user, Host: id.Domain}
	case private:
		out.DisplayName, out.From = "Anonymous", anonymousURI()
	default:
		out.DisplayName, out.From = display, sip.Uri{Scheme: "sip", User: user, Host: id.Domain}
	}
	if asserted.number != "" && (!private || id.TrustPAI) {
		d := ""
		if !private {
			d = display
		}
		out.PAI = nameAddr(d, identityURI("sip", asserted.number, id.Domain))
	}
	if private {
		out.Privacy = strings.Join(toks, ";")
	}
	return out, nil
}

// PBXCaller decides the caller identity toward the PBX on a call from a
// trunk (in):
//   - the caller is the trunk's P-Asserted-Identity (a phone number
//     preferred among several entries; else Remote-Party-ID party=calling)
//     when trustPAI, else the user of its From; the display name comes
//     with it, else from From;
//   - format turns the number into what the PBX wants (route.Table's
//     CallerForPBX: E.164 or national); nil keeps it;
//   - From: "display" <sip:caller@pbxDomain;user=phone>; and, when
//     trustPAI, P-Asserted-Identity with the same name-addr;
//   - a private call (Privacy, Remote-Party-ID privacy=, anonymous From) or
//     a caller that is no valid SIP user: From "Anonymous"
//     <sip:anonymous@anonymous.invalid>, no PAI, Privacy with the tokens.
func PBXCaller(in *sip.Request, trustPAI bool, pbxDomain string, format func(string) string) (Identity, error) {
	if !validHost(pbxDomain) {
		return Identity{}, fmt.Errorf("to pbx: domain %q: %w", pbxDomain, ErrBadValue)
	}
	private, toks := privacyOf(in)

	var caller party
	if trustPAI {
		if ps := parties(in, "p-asserted-identity"); len(ps) > 0 {
			caller = ps[0]
			for _, p := range ps { // prefer a phone number to a Skype name
				if isPhone(p.number) {
					caller = p
					break
				}
			}
		} else if ps := parties(in, "remote-party-id"); len(ps) > 0 {
			caller = ps[0]
		}
	}
	if f := in.From(); f != nil {
		if caller.number == "" {
			caller = party{number: numberOf(f.Address), display: f.DisplayName}
		} else if caller.display == "" {
			caller.display = f.DisplayName // the asserted identity carried no name
		}
	}
	if format != nil && caller.number != "" {
		caller.number = format(caller.number)
	}
	if !validUser(caller.number) || strings.EqualFold(caller.number, "anonymous") {
		private = true
		if len(toks) == 0 {
			toks = []string{"id"}
		}
	}
	if private {
		return Identity{DisplayName: "Anonymous", From: anonymousURI(), Privacy: strings.Join(toks, ";")}, nil
	}
	out := Identity{DisplayName: cleanDisplay(caller.display), From: identityURI("sip", caller.number, pbxDomain)}
	if trustPAI {
		out.PAI = nameAddr(out.DisplayName, out.From)
	}
	return out, nil
}

// ToTrunk is TrunkCaller applied to out, the request toward the trunk.
func ToTrunk(in, out *sip.Request, id TrunkIdentity, pbxTrusted bool, e164 func(string) (string, error)) error {
	if out.From() == nil {
		return errors.New("to trunk: out has no From header")
	}
	i, err := TrunkCaller(in, id, pbxTrusted, e164)
	if err != nil {
		return err
	}
	return i.Apply(out)
}

// ToPBX is PBXCaller applied to out, the request toward the PBX.
func ToPBX(in, out *sip.Request, trustPAI bool, pbxDomain string, format func(string) string) error {
	if out.From() == nil {
		return errors.New("to pbx: out has no From header")
	}
	i, err := PBXCaller(in, trustPAI, pbxDomain, format)
	if err != nil {
		return err
	}
	return i.Apply(out)
}

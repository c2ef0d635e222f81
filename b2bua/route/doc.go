// Package route is the dial plan of esbc: it turns the numbers a PBX dials
// into E.164 and a trunk, maps a trunk's inbound Request-URI to a PBX
// extension, and keeps emergency and special-service numbers away from
// trunks that must not carry them (SPEC §1, §4 numbering/routes).
//
// It is a pure leaf: no sockets, no goroutines, no sipgo types. It imports
// only the standard library and github.com/nyaruka/phonenumbers
// (libphonenumber metadata for validity and national formatting).
//
// # API
//
//	type Numbering struct{ CountryCode, NationalPrefix, InternationalPrefix string }
//	type Outbound struct{ Match, Number, Trunk string }
//	type Inbound struct{ Match, Extension string }
//	type Trunk struct{ Name string; Emergency bool }
//	type Config struct {
//	    Numbering           Numbering
//	    Emergency, Special  []string // routes.emergency / routes.special
//	    Outbound            []Outbound
//	    Inbound             []Inbound
//	    Trunks              []Trunk
//	    InboundCallerFormat string   // "e164" (default, "" too) | "national"
//	}
//	func Compile(cfg Config) (*Table, error)
//	type Decision struct {
//	    Trunk     string
//	    Number    string // E.164 with '+'; the bare short code when Emergency or Special
//	    Emergency bool   // an emergency number (routes.emergency, libphonenumber data, urn:service:sos)
//	    Special   bool   // a special-service number (routes.special)
//	    Route     int    // index in Config.Outbound of the route taken
//	}
//	func (t *Table) Outbound(dialled string) (Decision, error)
//	func (t *Table) Inbound(ruriUser string) (extension string, err error)
//	func (t *Table) E164(number string) (string, error)
//	func (t *Table) CallerForPBX(e164 string) string
//	var ErrNoRoute          // → 404
//	var ErrInvalidNumber    // → 484
//	var ErrEmergencyBlocked // → 403 (log at warn)
//
// On ErrEmergencyBlocked the returned Decision still carries Number,
// Emergency and Special, for the warn log.
//
// Errors returned by Outbound, Inbound and E164 wrap one of the sentinels
// (test with errors.Is) and carry the number in their text. Compile returns
// every configuration error at once (errors.Join), each prefixed with the
// YAML path of the key ("routes.outbound[2].match: ...").
//
// # Numbers
//
// Input may be a bare user part, a sip:/sips: URI (user part taken) or a
// tel: URI (RFC 3966; parameters dropped); percent-escapes are decoded and
// the visual separators space . - ( ) / are removed. Other letters make the
// number invalid (ErrInvalidNumber); a number libphonenumber does not hold
// valid is reported, never guessed. To E.164: '+' as is; the international
// prefix becomes '+'; the national prefix is replaced by '+' and the
// country code; a bare national significant number gets '+' and the
// country code.
//
// # Outbound routing
//
// Routes are tried in order; Match is a Go regexp applied to the cleaned
// dialled string (digits, '+', '*', '#'); Number is the regexp template
// ($1, ${name}) that builds the number to normalise ("" = the cleaned
// string). Before any route is taken the dialled string, the rewrites of
// every matching route, and each of their forms with the international
// prefix, '+', the country code, the national prefix, vertical service codes
// (*67, #31#) or a trailing '#' removed, are compared with routes.emergency
// and routes.special (and libphonenumber's emergency data for the region).
// An emergency or special number goes to the first route whose trunk has
// Emergency: true, preferring a route whose Match matches; with none it is
// ErrEmergencyBlocked. It never reaches an Emergency: false trunk.
//
// # Inbound routing
//
// Inbound routes are tried in order on the Request-URI user (cleaned of
// separators when it looks like a number, verbatim otherwise, e.g. a
// Skype-name tag); Extension is a regexp template. The caller number shown
// to the PBX is E.164, or with InboundCallerFormat "national" the national
// form of libphonenumber (US "4155550100", UK "02079460000") for numbers of
// our country and international prefix + country code + number otherwise.
//
// # Concurrency
//
// A *Table is immutable after Compile and safe for concurrent use; a call
// keeps the table of the snapshot it started with.
package route

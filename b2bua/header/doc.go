// Package header decides which SIP headers cross the B2BUA between legs,
// applies per-trunk manipulation rules, and builds the caller identity of
// each leg: From, P-Asserted-Identity, Privacy (RFC 3325, RFC 3323,
// Remote-Party-ID per draft-ietf-sip-privacy-04) as SPEC §1 requires.
//
// It may import the standard library and github.com/emiago/sipgo/sip (the
// message types); no sockets, no goroutines, no other esbc package.
//
// # API
//
//	type Rule struct{ Action, Header, Match, Value string } // add|remove|replace
//	type Policy struct{ Allow []string; ServerHeader string; Rules []Rule }
//	var DefaultAllow []string // used when Policy.Allow is empty
//	func CompilePolicy(p Policy) (*Compiled, error)
//	func (c *Compiled) CopyAllowed(in, out *sip.Request) error
//	func (c *Compiled) ApplyResponse(in, out *sip.Response) error
//	func (c *Compiled) Apply(m Message) error // the rules alone
//	type Message interface { Headers() []sip.Header; GetHeaders(string) []sip.Header;
//	    AppendHeader(sip.Header); RemoveHeader(string) bool } // *sip.Request, *sip.Response
//
//	type TrunkIdentity struct {
//	    Domain, FromUser, CallerID string
//	    AllowedCallerIDs           []string
//	    TrustPAI                   bool   // trunk is in our trust domain (RFC 3325 Spec(T))
//	    FromDisplay                string // display name of From toward the trunk; "" = the PBX's
//	    KeepFromUserOnPrivacy      bool   // privacy: "Anonymous" <sip:FromUser@Domain> instead of anonymous.invalid
//	}
//	func ToTrunk(in, out *sip.Request, id TrunkIdentity, pbxTrusted bool, e164 func(string) (string, error)) error
//	func ToPBX(in, out *sip.Request, trustPAI bool, pbxDomain string, format func(string) string) error
//
//	// The same decisions as values, for a B2BUA that keeps From in its
//	// dialog state (Dialog.LocalURI/LocalName) and builds requests later:
//	type Identity struct {
//	    DisplayName string  // From display name
//	    From        sip.Uri // From URI, no tag
//	    PAI         string  // P-Asserted-Identity value, "" = none
//	    Privacy     string  // Privacy value, "" = none
//	}
//	func TrunkCaller(in *sip.Request, id TrunkIdentity, pbxTrusted bool, e164 func(string) (string, error)) (Identity, error)
//	func PBXCaller(in *sip.Request, trustPAI bool, pbxDomain string, format func(string) string) (Identity, error)
//	func (i Identity) Apply(out *sip.Request) error // ToTrunk = TrunkCaller + Apply
//	func CheckValue(v string) error
//	var ErrBadValue // wrapped by every refusal of a name or value
//
// CompilePolicy joins all its errors, each prefixed with the field
// ("allow[1]", "server_header", "rules[0].match"); the config layer adds
// the YAML path in front.
//
// ToTrunk and ToPBX (Identity.Apply) change only From (display name and URI; the tag and
// other parameters the dialog layer set are kept) and the identity headers
// P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID and Privacy,
// which they remove from out and write afresh. They need out to carry a
// From already. PAI is written as "display" <sip:number@host;user=phone>
// (user=phone when the number is +digits or digits).
//
// # Order of use
//
// The dialog layer builds out with its own Via, From (with its tag), To,
// Call-ID, CSeq, Contact, Max-Forwards and body. Then call ToTrunk (or
// ToPBX), then CopyAllowed: CopyAllowed runs the manipulation rules last, so
// rules see the identity headers too.
//
// CopyAllowed copies from in the headers named in the allow-list (case
// insensitive, compact forms expanded, an entry ending in '*' is a prefix),
// except the headers it never copies whatever the list says: the dialog
// layer's (Via, From, To, Call-ID, CSeq, Contact, Route, Record-Route,
// Content-Length, Max-Forwards), the per-leg authentication headers
// (Authorization, Proxy-Authorization, WWW-Authenticate,
// Proxy-Authenticate, Authentication-Info), the identity headers that
// ToTrunk/ToPBX own (P-Asserted-Identity, P-Preferred-Identity,
// Remote-Party-ID, Privacy), Server and User-Agent. A header name already
// present in out is not copied (the B2BUA's own value wins). Everything else
// is dropped (X-*, P-*, Supported, Require...). It then sets User-Agent
// (requests) or Server (responses) to ServerHeader when that is not empty,
// and applies the rules.
//
// Rules: add appends Header: Value; remove drops every Header (only those
// whose value matches Match when Match is set); replace rewrites each
// Header value with regexp Match → Value ($1 allowed), or sets it to Value
// when Match is empty. Rules may not touch the dialog-layer headers. Every
// value written is checked with CheckValue.
//
// # Concurrency
//
// A *Compiled is immutable and safe for concurrent use. The functions touch
// only the messages given; a message must not be used concurrently.
package header

package header

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Rule is one manipulation rule (YAML: action, header, match, value).
type Rule struct {
	Action string // add | remove | replace
	Header string // header name; compact forms allowed
	Match  string // Go regexp on the value: remove only matching / replace what matches
	Value  string // add: the value; replace: the replacement ($1 allowed), or the new value when Match is ""
}

// Policy is the header policy of one direction toward one peer.
type Policy struct {
	Allow        []string // headers that may cross; "" entries ignored; "X-Foo-*" is a prefix; empty = DefaultAllow
	ServerHeader string   // User-Agent (requests) / Server (responses); "" = none
	Rules        []Rule
}

// DefaultAllow is the allow-list used when Policy.Allow is empty: headers
// that describe the session or the body and reveal nothing of the LAN.
var DefaultAllow = []string{
	"Accept", "Accept-Encoding", "Accept-Language", "Allow", "Allow-Events",
	"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Type",
	"Date", "Event", "Expires", "Priority", "Reason", "Retry-After", "Subject",
	"Subscription-State",
}

// dialogOwned are written by the dialog layer of each leg: never copied,
// never touched by rules.
var dialogOwned = map[string]bool{
	"via": true, "from": true, "to": true, "call-id": true, "cseq": true, "contact": true,
	"route": true, "record-route": true, "content-length": true, "max-forwards": true,
	"authorization": true, "proxy-authorization": true, "www-authenticate": true,
	"proxy-authenticate": true, "authentication-info": true,
}

// neverCopied are owned by ToTrunk/ToPBX (identity) or by the policy
// itself (product string): never copied from the other leg.
var neverCopied = map[string]bool{
	"p-asserted-identity": true, "p-preferred-identity": true, "remote-party-id": true,
	"privacy": true, "server": true, "user-agent": true,
}

// bodyBound describe the body: copied only when out carries a body.
var bodyBound = map[string]bool{
	"content-type": true, "content-disposition": true, "content-encoding": true, "content-language": true,
}

type rule struct {
	action string
	lname  string
	name   string
	re     *regexp.Regexp
	value  string
}

// Compiled is a validated Policy. It is immutable and safe for concurrent use.
type Compiled struct {
	allow  map[string]bool
	prefix []string
	server string
	rules  []rule
}

// CompilePolicy validates p. Errors are joined, each prefixed with the key
// of the field ("allow[1]", "server_header", "rules[0].match").
func CompilePolicy(p Policy) (*Compiled, error) {
	var errs []error
	bad := func(key string, err error) { errs = append(errs, fmt.Errorf("%s: %w", key, err)) }
	c := &Compiled{allow: map[string]bool{}, server: p.ServerHeader}
	allow := p.Allow
	if len(allow) == 0 {
		allow = DefaultAllow
	}
	for i, a := range allow {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if strings.HasSuffix(a, "*") {
			if err := checkName(strings.TrimSuffix(a, "*")); err != nil {
				bad(fmt.Sprintf("allow[%d]", i), err)
				continue
			}
			c.prefix = append(c.prefix, strings.ToLower(strings.TrimSuffix(a, "*")))
			continue
		}
		if err := checkName(a); err != nil {
			bad(fmt.Sprintf("allow[%d]", i), err)
			continue
		}
		c.allow[lowerName(a)] = true
	}
	if err := CheckValue(p.ServerHeader); err != nil {
		bad("server_header", err)
	}
	for i, r := range p.Rules {
		key := fmt.Sprintf("rules[%d]", i)
		cr := rule{action: strings.ToLower(r.Action), lname: lowerName(r.Header), name: canonName(r.Header), value: r.Value}
		if err := checkName(r.Header); err != nil {
			bad(key+".header", err)
		} else if dialogOwned[cr.lname] {
			bad(key+".header", fmt.Errorf("%s belongs to the dialog layer and cannot be changed by a rule", cr.name))
		}
		if r.Match != "" {
			re, err := regexp.Compile(r.Match)
			if err != nil {
				bad(key+".match", err)
			}
			cr.re = re
		}
		if err := CheckValue(r.Value); err != nil {
			bad(key+".value", err)
		}
		switch cr.action {
		case "add":
			if r.Value == "" {
				bad(key+".value", errors.New("add needs a value"))
			} else if err := checkTyped(cr.lname, r.Value); err != nil {
				bad(key+".value", err)
			}
			if r.Match != "" {
				bad(key+".match", errors.New("add takes no match"))
			}
		case "remove":
			if r.Value != "" {
				bad(key+".value", errors.New("remove takes no value"))
			}
		case "replace":
		default:
			bad(key+".action", fmt.Errorf("%q is not add, remove or replace", r.Action))
		}
		c.rules = append(c.rules, cr)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// checkTyped refuses a value that sipgo's parser (and so the peer's, very
// likely) would not read back as one header of that name: Content-Type,
// Refer-To, Referred-By are parsed, not carried as text.
func checkTyped(lname, v string) error {
	parse, ok := sip.DefaultHeadersParser()[lname]
	if !ok {
		return nil
	}
	if _, err := parse([]byte(lname), v); err != nil {
		return fmt.Errorf("%w: %q is not a valid %s value", ErrBadValue, v, canonName(lname))
	}
	return nil
}

func (c *Compiled) allowed(lname string) bool {
	if dialogOwned[lname] || neverCopied[lname] {
		return false
	}
	if c.allow[lname] {
		return true
	}
	for _, p := range c.prefix {
		if strings.HasPrefix(lname, p) {
			return true
		}
	}
	return false
}

// CopyAllowed copies the allow-listed headers of in onto out (see the
// package documentation for what is never copied), sets User-Agent to the
// ServerHeader, then applies the rules. Headers whose name out already
// carries are not copied; body headers are copied only when out has a body.
func (c *Compiled) CopyAllowed(in, out *sip.Request) error {
	if err := c.copy(in, out, len(out.Body()) > 0); err != nil {
		return fmt.Errorf("copy headers: %w", err)
	}
	c.product(out, "User-Agent")
	return c.Apply(out)
}

// ApplyResponse is CopyAllowed for a response relayed from one leg (in) to
// the other (out), with Server as the product header.
func (c *Compiled) ApplyResponse(in, out *sip.Response) error {
	if err := c.copy(in, out, len(out.Body()) > 0); err != nil {
		return fmt.Errorf("copy headers: %w", err)
	}
	c.product(out, "Server")
	return c.Apply(out)
}

func (c *Compiled) copy(in, out Message, outHasBody bool) error {
	present := map[string]bool{}
	for _, h := range out.Headers() {
		present[lowerName(h.Name())] = true
	}
	for _, h := range in.Headers() {
		l := lowerName(h.Name())
		if present[l] || !c.allowed(l) || (bodyBound[l] && !outHasBody) {
			continue
		}
		v := h.Value()
		if err := CheckValue(v); err != nil {
			return fmt.Errorf("%s: %w", canonName(h.Name()), err)
		}
		out.AppendHeader(clone(h))
	}
	return nil
}

// clone copies h, keeping sipgo's typed headers typed and writing generic
// ones under the canonical name.
func clone(h sip.Header) sip.Header {
	switch t := h.(type) {
	case *sip.ContentTypeHeader:
		v := sip.ContentTypeHeader(t.Value()) // its headerClone shares the pointer
		return &v
	case *sip.ReferToHeader:
		return t.Clone()
	case *sip.ReferredByHeader:
		return t.Clone()
	}
	return sip.NewHeader(canonName(h.Name()), h.Value())
}

// product replaces every Server/User-Agent of out with the ServerHeader
// (or none when it is empty): esbc speaks for itself on both sides.
func (c *Compiled) product(out Message, name string) {
	removeAll(out, "server")
	removeAll(out, "user-agent")
	if c.server != "" {
		out.AppendHeader(sip.NewHeader(name, c.server))
	}
}

// Apply runs the manipulation rules on m, in order. Replaced headers move
// after the others (only the relative order of same-name headers matters).
func (c *Compiled) Apply(m Message) error {
	for i, r := range c.rules {
		switch r.action {
		case "add":
			if err := checkTyped(r.lname, r.value); err != nil {
				return fmt.Errorf("rule %d (add %s): %w", i, r.name, err)
			}
			m.AppendHeader(sip.NewHeader(r.name, r.value))
		case "remove":
			removed := removeAll(m, r.lname)
			if r.re == nil {
				continue
			}
			for _, h := range removed {
				if !r.re.MatchString(h.Value()) {
					m.AppendHeader(h)
				}
			}
		case "replace":
			// Compute every new value first: a failing rule changes nothing.
			var vals []string
			for _, h := range m.Headers() {
				if lowerName(h.Name()) != r.lname {
					continue
				}
				v := r.value
				if r.re != nil {
					v = r.re.ReplaceAllString(h.Value(), r.value)
				}
				if err := CheckValue(v); err != nil {
					return fmt.Errorf("rule %d (replace %s): %w", i, r.name, err)
				}
				if err := checkTyped(r.lname, v); v != "" && err != nil {
					return fmt.Errorf("rule %d (replace %s): %w", i, r.name, err)
				}
				vals = append(vals, v)
			}
			removeAll(m, r.lname)
			for _, v := range vals {
				if v != "" { // an empty header is no header
					m.AppendHeader(sip.NewHeader(r.name, v))
				}
			}
		}
	}
	return nil
}

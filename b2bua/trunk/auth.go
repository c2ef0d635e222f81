package trunk

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// ErrNoChallenge is returned by Authorize when the response carries no
// digest challenge that esbc can answer (no WWW-/Proxy-Authenticate header,
// or only unsupported algorithms or qop values).
var ErrNoChallenge = errors.New("no usable digest challenge")

// challenge header → credentials header (RFC 3261 §22.2, §22.3).
var authHeaders = [...]struct{ challenge, credentials string }{
	{"WWW-Authenticate", "Authorization"},
	{"Proxy-Authenticate", "Proxy-Authorization"},
}

// Authorize answers the digest challenges of res (a 401 or 407 to req) by
// adding Authorization / Proxy-Authorization headers to req, replacing
// credentials req already carries for the same realm. It neither increments
// the CSeq nor changes Via: the caller resends req as a new transaction
// (Retry does both).
//
// For each realm challenged it answers the strongest challenge it supports
// (RFC 8760 §2.4: SHA-512-256, then SHA-256, then MD5), with qop=auth when
// offered (auth-int is not offered by esbc since it would hash the body) and
// the full Request-URI as digest-uri (RFC 3261 §22.4). The nonce count goes
// up each time the same nonce is answered again (RFC 7616 §3.4).
func Authorize(req *sip.Request, res *sip.Response, username, password string) error {
	if req == nil || res == nil {
		return fmt.Errorf("authorize: %w", ErrNoChallenge)
	}
	uri := req.Recipient.String()
	answered := 0
	for _, ah := range authHeaders {
		best := map[string]*digest.Challenge{} // realm → strongest challenge
		var realms []string                    // in the order the response lists them
		for _, h := range res.GetHeaders(ah.challenge) {
			chal, err := digest.ParseChallenge(h.Value())
			if err != nil {
				continue // not digest (e.g. Bearer) or malformed: another header may do
			}
			chal.Algorithm = strings.ToUpper(chal.Algorithm)
			if algRank(chal.Algorithm) < 0 || !qopOK(chal) {
				continue
			}
			cur, ok := best[chal.Realm]
			if !ok {
				realms = append(realms, chal.Realm)
			}
			if !ok || algRank(chal.Algorithm) > algRank(cur.Algorithm) {
				best[chal.Realm] = chal
			}
		}
		for _, realm := range realms {
			chal := best[realm]
			cred, err := digest.Digest(chal, digest.Options{
				Method:   string(req.Method),
				URI:      uri,
				Username: username,
				Password: password,
				Count:    nonceCounts.next(chal.Nonce),
			})
			if err != nil {
				return fmt.Errorf("authorize realm %q: %w", realm, err)
			}
			removeCredentials(req, ah.credentials, realm)
			req.AppendHeader(sip.NewHeader(ah.credentials, cred.String()))
			answered++
		}
	}
	if answered == 0 {
		return fmt.Errorf("authorize %d: %w", res.StatusCode, ErrNoChallenge)
	}
	return nil
}

// Retry returns a copy of req (sent and challenged by res) ready to be sent
// again as a new transaction: credentials added, CSeq incremented, Via
// removed (the client adds a fresh one with a new branch). The body is shared.
func Retry(req *sip.Request, res *sip.Response, username, password string) (*sip.Request, error) {
	r := req.Clone()
	r.SetBody(req.Body())
	if err := Authorize(r, res, username, password); err != nil {
		return nil, err
	}
	if cseq := r.CSeq(); cseq != nil {
		cseq.SeqNo++
	}
	for r.RemoveHeader("Via") {
	}
	return r, nil
}

func algRank(alg string) int {
	switch alg {
	case "", "MD5":
		return 0
	case "SHA-256":
		return 1
	case "SHA-512-256":
		return 2
	}
	return -1 // "-sess" variants and unknown algorithms are not supported
}

func qopOK(c *digest.Challenge) bool {
	return len(c.QOP) == 0 || c.SupportsQOP("auth")
}

// removeCredentials drops the credentials for realm that req already holds,
// so a retry carries one answer per realm.
func removeCredentials(req *sip.Request, name, realm string) {
	hs := req.GetHeaders(name)
	keep := make([]sip.Header, 0, len(hs))
	for _, h := range hs {
		c, err := digest.ParseCredentials(h.Value())
		if err == nil && c.Realm == realm {
			continue
		}
		keep = append(keep, h)
	}
	if len(keep) == len(hs) {
		return
	}
	for req.RemoveHeader(name) {
	}
	for _, h := range keep {
		req.AppendHeader(h)
	}
}

// nonceTable counts how often each nonce was answered. It is bounded: when
// full it starts over, which at worst sends nc=1 again for an old nonce and
// earns a fresh challenge.
type nonceTable struct {
	mu sync.Mutex
	n  map[string]int // guarded by mu
}

const maxNonces = 4096

var nonceCounts = &nonceTable{n: map[string]int{}}

func (t *nonceTable) next(nonce string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.n) >= maxNonces {
		t.n = map[string]int{}
	}
	t.n[nonce]++
	return t.n[nonce]
}

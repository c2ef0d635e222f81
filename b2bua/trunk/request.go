package trunk

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/b2bua/locate"
)

// errNoAnswer: the target sent nothing within FailoverTimeout.
var errNoAnswer = errors.New("no answer")

// targetError marks a failure of the target itself (no answer, transport
// error, 5xx): the target goes down and the next one is tried.
type targetError struct {
	reason string
	err    error
}

func (e *targetError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *targetError) Unwrap() error { return e.err }

// provisionalWait bounds a transaction once the target has answered
// provisionally (Timer B / F of RFC 3261 with T1 = 500 ms).
const provisionalWait = 32 * time.Second

// send sends req to target as a new client transaction and returns its
// final response. No first answer within FailoverTimeout, a transport error
// or a 5xx answer are returned as *targetError.
func (t *Trunk) send(ctx context.Context, req *sip.Request, target locate.Target) (*sip.Response, error) {
	res, _, err := t.sendOver(ctx, req, target)
	return res, err
}

// sendOver is send that also returns esbc's end of the TCP/TLS connection
// the request went over ("" for udp, or when it was not sent).
func (t *Trunk) sendOver(ctx context.Context, req *sip.Request, target locate.Target) (*sip.Response, string, error) {
	req.SetDestination(target.Addr.String())
	req.SetTransport(sip.NetworkToUpper(target.Transport))
	cli := t.deps.Client
	if target.Transport == "udp" && t.deps.UDPClient != nil {
		cli = t.deps.UDPClient
	}
	tx, err := cli.TransactionRequest(ctx, req, sipgo.ClientRequestBuild, addRport)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, "", &targetError{"transport", err}
	}
	defer tx.Terminate()
	laddr := ""
	if c, ok := tx.(interface{ Connection() sip.Connection }); ok && target.Transport != "udp" {
		if conn := c.Connection(); conn != nil {
			laddr = conn.LocalAddr().String()
		}
	}
	timer := time.NewTimer(t.cfg.FailoverTimeout)
	defer timer.Stop()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				timer.Reset(provisionalWait)
				continue
			}
			if res.StatusCode >= 500 && res.StatusCode < 600 {
				return res, laddr, &targetError{"status", fmt.Errorf("%d %s", res.StatusCode, res.Reason)}
			}
			return res, laddr, nil
		case <-tx.Done():
			if ctx.Err() != nil {
				return nil, laddr, ctx.Err()
			}
			err := tx.Err()
			if err == nil {
				err = errNoAnswer
			}
			return nil, laddr, &targetError{"transport", err}
		case <-timer.C:
			return nil, laddr, &targetError{"timeout", fmt.Errorf("%w within %s", errNoAnswer, t.cfg.FailoverTimeout)}
		case <-ctx.Done():
			return nil, laddr, ctx.Err()
		}
	}
}

// addRport asks for received/rport in the answer (RFC 3581), which is how
// registration detects NAT.
func addRport(_ *sipgo.Client, req *sip.Request) error {
	if via := req.Via(); via != nil && !via.Params.Has("rport") {
		via.Params.Add("rport", "")
	}
	return nil
}

// uri is a SIP URI for user@host on the trunk's transport.
func (t *Trunk) uri(user, host string, port int) sip.Uri {
	u := sip.Uri{Scheme: "sip", User: user, Host: host, Port: port}
	if t.cfg.Transport != "udp" {
		u.UriParams = sip.HeaderParams{{K: "transport", V: t.cfg.Transport}}
	}
	return u
}

// newRequest builds an out-of-dialog request toward the trunk domain with
// From = To = the trunk's address of record (To without user for OPTIONS).
func (t *Trunk) newRequest(method sip.RequestMethod, callID, fromTag string, cseq uint32) *sip.Request {
	host := t.cfg.host()
	req := sip.NewRequest(method, t.uri("", host, 0))
	aor := sip.Uri{Scheme: "sip", User: t.cfg.Username, Host: host}
	from := &sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: fromTag}}}
	to := &sip.ToHeader{Address: aor}
	if method != sip.REGISTER {
		to = &sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: host}}
	}
	cid := sip.CallIDHeader(callID)
	maxfwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	req.AppendHeader(&maxfwd)
	if t.cfg.UserAgent != "" {
		req.AppendHeader(sip.NewHeader("User-Agent", t.cfg.UserAgent))
	}
	return req
}

// contact is the Contact URI registered: the advertised WAN address.
func (t *Trunk) contact() sip.Uri {
	return t.uri(t.cfg.Username, t.cfg.ContactHost, t.cfg.ContactPort)
}

func expiresHeader(d time.Duration) sip.Header {
	e := sip.ExpiresHeader(uint32(d / time.Second))
	return &e
}

func parseSeconds(s string) (time.Duration, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

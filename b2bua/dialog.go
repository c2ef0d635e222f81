package b2bua

import (
	"crypto/rand"
	"encoding/hex"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Dialog is the state of one SIP dialog of a call leg (RFC 3261 §12), in
// plain exported fields so that a standby can rebuild it (HA). It is guarded
// by the mutex of the Call that owns it.
type Dialog struct {
	CallID       string
	LocalTag     string
	RemoteTag    string
	LocalName    string  // display name of the local party
	LocalURI     sip.Uri // From (UAC) or To (UAS) address, without tag
	RemoteName   string
	RemoteURI    sip.Uri
	RemoteTarget sip.Uri  // Contact of the peer: Request-URI of in-dialog requests
	RouteSet     []string // Route header values, in the order to send them
	LocalCSeq    uint32
	RemoteCSeq   uint32
	Contact      sip.Uri // our Contact on this leg
	Transport    string  // "UDP" | "TCP" | "TLS"
	// Destination is the "ip:port" the dialog lives at: the trunk target the
	// INVITE went to, or the source of the INVITE we received. Every
	// in-dialog request goes there, so TLS/TCP requests reuse the dialog's
	// connection (sipgo issue #361) and stay with the serving target.
	Destination string
	// Via is our sent-by toward this leg ("host:port").
	ViaHost string
	ViaPort int
}

// newRequest builds an in-dialog request (RFC 3261 §12.2.1.1). CSeq is
// incremented except for ACK and CANCEL, which reuse cseq.
func (d *Dialog) newRequest(method sip.RequestMethod, cseq uint32) *sip.Request {
	req := sip.NewRequest(method, *d.RemoteTarget.Clone())
	req.AppendHeader(d.via())
	from := &sip.FromHeader{DisplayName: d.LocalName, Address: *d.LocalURI.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", d.LocalTag)
	req.AppendHeader(from)
	to := &sip.ToHeader{DisplayName: d.RemoteName, Address: *d.RemoteURI.Clone(), Params: sip.NewParams()}
	if d.RemoteTag != "" {
		to.Params.Add("tag", d.RemoteTag)
	}
	req.AppendHeader(to)
	cid := sip.CallIDHeader(d.CallID)
	req.AppendHeader(&cid)
	if method != sip.ACK && method != sip.CANCEL {
		d.LocalCSeq++
		cseq = d.LocalCSeq
	}
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	for _, r := range d.RouteSet {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	if method != sip.CANCEL {
		req.AppendHeader(&sip.ContactHeader{Address: *d.Contact.Clone()})
	}
	req.SetTransport(d.Transport)
	req.SetDestination(d.Destination)
	return req
}

func (d *Dialog) via() *sip.ViaHeader {
	v := &sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       d.Transport,
		Host:            d.ViaHost,
		Port:            d.ViaPort,
		Params:          sip.NewParams(),
	}
	v.Params.Add("branch", sip.RFC3261BranchMagicCookie+randHex(10))
	v.Params.Add("rport", "")
	return v
}

// dialogKey identifies a dialog from esbc's side: Call-ID and our tag.
type dialogKey struct {
	callID, localTag string
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newCallID makes a Call-ID that reveals nothing of the other leg.
func newCallID() string { return randHex(16) }

func upperTransport(t string) string {
	switch strings.ToLower(t) {
	case "tls":
		return "TLS"
	case "tcp":
		return "TCP"
	case "ws":
		return "WS"
	case "wss":
		return "WSS"
	}
	return "UDP"
}

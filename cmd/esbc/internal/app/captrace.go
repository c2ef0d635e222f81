package app

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/acl"
	"github.com/esbc/esbc/media/capture"
)

// The diagnostic capture sees SIP that esbc reads through sipgo's read
// filter and SIP it writes on its own listening sockets through the edge's
// write tap. What sipgo writes on the TCP/TLS connections it dialled
// itself (INVITE, ACK, BYE, OPTIONS toward a trunk over TLS) passes
// neither: sipgo v1.7.2 creates those connections internally (no dialer
// hook that could wrap them) and shows their plain-text writes only to its
// debug tracer, a process global. So the tracer is installed once, before
// any sipgo transport runs (init: no data race with a running transport),
// and hands each TCP/TLS write to the capture of the App whose UserAgent
// owns the connection.
//
// Cost while no capture is on: sipgo formats the two addresses of every
// message it reads or writes (a few small allocations) and the tracer
// returns after one map lookup.
func init() {
	sip.SIPDebugTracer(clientTracer{})
	sip.SIPDebug = true
}

// clientTraces holds the running Apps' *clientTrace (keys; values unused).
var clientTraces sync.Map

type clientTracer struct{}

func (clientTracer) SIPTraceRead(string, string, string, []byte) {}

// SIPTraceWrite receives every message sipgo writes. UDP is written on the
// edge-wrapped listening sockets (the write tap sees it); "TCP" covers TCP
// and TLS connections (TLS before encryption).
func (clientTracer) SIPTraceWrite(transport, laddr, raddr string, msg []byte) {
	if transport != "TCP" {
		return
	}
	clientTraces.Range(func(k, _ any) bool {
		return !k.(*clientTrace).write(laddr, raddr, msg)
	})
}

// clientTrace is one App's view of the tracer.
type clientTrace struct {
	capture   func() *capture.Capture
	uas       []*sipgo.UserAgent
	listeners []netip.AddrPort // the App's TCP/TLS listeners (IP may be unspecified)
}

// traceClientWrites registers the App's UserAgents with the tracer; the
// returned function unregisters them.
func traceClientWrites(capt func() *capture.Capture, sides ...*SideSIP) func() {
	ct := &clientTrace{capture: capt}
	for _, s := range sides {
		ct.uas = append(ct.uas, s.UA)
		for _, l := range s.Listeners {
			if ap, err := netip.ParseAddrPort(l.Addr.String()); err == nil && l.Network != "udp" {
				ct.listeners = append(ct.listeners, ap)
			}
		}
	}
	clientTraces.Store(ct, struct{}{})
	return func() { clientTraces.Delete(ct) }
}

// write captures msg if the connection laddr→raddr is one this App's
// UserAgents dialled, and reports whether it was.
func (ct *clientTrace) write(laddr, raddr string, msg []byte) bool {
	c := ct.capture()
	if c.Mode() == capture.ModeOff || ct.accepted(laddr) || !ct.dialled(laddr, raddr) {
		// A connection accepted on a listener is the edge's (its wrapper
		// taps the writes): not captured twice.
		return false
	}
	if len(msg) == 0 || msg[0] == '\r' || msg[0] == '\n' { // CRLF keep-alive
		return true
	}
	src, _ := netip.ParseAddrPort(laddr)
	dst, _ := netip.ParseAddrPort(raddr)
	c.WriteSIP(string(acl.CallID(msg)), src, dst, msg, time.Now())
	return true
}

// accepted reports whether laddr is one of the App's listeners (a
// connection accepted there; a listener on the unspecified address matches
// any IP with its port).
func (ct *clientTrace) accepted(laddr string) bool {
	ap, err := netip.ParseAddrPort(laddr)
	if err != nil {
		return false
	}
	for _, l := range ct.listeners {
		if l.Port() == ap.Port() && (l.Addr().IsUnspecified() || l.Addr().Unmap() == ap.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// dialled reports whether one of the App's UserAgents holds a TCP or TLS
// connection to raddr from laddr.
func (ct *clientTrace) dialled(laddr, raddr string) bool {
	for _, ua := range ct.uas {
		for _, network := range []string{"tls", "tcp"} {
			conn, err := ua.TransportLayer().GetConnection(network, raddr)
			if err != nil || conn == nil {
				continue
			}
			ok := addrString(conn.LocalAddr()) == laddr
			_, _ = conn.TryClose() // GetConnection took a reference
			if ok {
				return true
			}
		}
	}
	return false
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

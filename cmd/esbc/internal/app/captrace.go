package app

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/acl"
	"github.com/esbc/esbc/media/capture"
)

// esbc_sip_messages_total{direction="out"} is counted where the bytes
// leave: on the listening sockets (countingPacketConn, countingListener)
// and, for the TCP/TLS connections sipgo dialled itself, here. So
// retransmissions, sipgo's own answers and the trunks' REGISTER/OPTIONS are
// counted, each message once.
//
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
//
// The owner of a connection is the App whose UserAgent has it in its pool.
// A connection the peer closed right after this write may already have
// left the pool: then, when one App runs (always, outside tests), it is
// that App's if neither end is one of its listeners (not accepted by it,
// not dialled to it by a peer in the same process).
func (clientTracer) SIPTraceWrite(transport, laddr, raddr string, msg []byte) {
	if transport != "TCP" {
		return
	}
	n, done := 0, false
	var only *clientTrace
	clientTraces.Range(func(k, _ any) bool {
		ct := k.(*clientTrace)
		n, only = n+1, ct
		if ct.accepted(laddr) || ct.accepted(raddr) {
			return true // accepted by this App, or a peer's write toward it
		}
		if side, ok := ct.dialled(laddr, raddr); ok {
			ct.write(side, laddr, raddr, msg)
			done = true
			return false
		}
		return true
	})
	if !done && n == 1 && !only.accepted(laddr) && !only.accepted(raddr) {
		only.write(only.sideOf(raddr), laddr, raddr, msg)
	}
}

// clientTrace is one App's view of the tracer.
type clientTrace struct {
	capture   func() *capture.Capture
	count     func(side Side, direction, method string) // nil: not counted
	pbx       func() netip.Addr                         // the PBX's address (lan.pbx.uri), if an IP
	sides     []*SideSIP
	listeners []netip.AddrPort // the App's TCP/TLS listeners (IP may be unspecified)
}

// traceClientWrites registers the App's UserAgents with the tracer; the
// returned function unregisters them.
func traceClientWrites(capt func() *capture.Capture, count func(Side, string, string), pbx func() netip.Addr,
	sides ...*SideSIP) func() {
	ct := &clientTrace{capture: capt, count: count, pbx: pbx, sides: sides}
	for _, s := range sides {
		for _, l := range s.Listeners {
			if ap, err := netip.ParseAddrPort(l.Addr.String()); err == nil && l.Network != "udp" {
				ct.listeners = append(ct.listeners, ap)
			}
		}
	}
	clientTraces.Store(ct, struct{}{})
	return func() { clientTraces.Delete(ct) }
}

// write counts and captures msg, written by side on a connection it dialled.
func (ct *clientTrace) write(side Side, laddr, raddr string, msg []byte) {
	if len(msg) == 0 || msg[0] == '\r' || msg[0] == '\n' { // CRLF keep-alive
		return
	}
	if ct.count != nil {
		countOut(msg, func(direction, method string) { ct.count(side, direction, method) })
	}
	c := ct.capture()
	if c.Mode() == capture.ModeOff {
		return
	}
	src, _ := netip.ParseAddrPort(laddr)
	dst, _ := netip.ParseAddrPort(raddr)
	c.WriteSIP(string(acl.CallID(msg)), src, dst, msg, time.Now())
}

// accepted reports whether addr is one of the App's listeners (a listener
// on the unspecified address matches any IP with its port).
func (ct *clientTrace) accepted(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
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

// dialled reports the side whose UserAgent holds a TCP or TLS connection
// to raddr from laddr.
func (ct *clientTrace) dialled(laddr, raddr string) (Side, bool) {
	for _, s := range ct.sides {
		for _, network := range []string{"tls", "tcp"} {
			conn, err := s.UA.TransportLayer().GetConnection(network, raddr)
			if err != nil || conn == nil {
				continue
			}
			ok := addrString(conn.LocalAddr()) == laddr
			_, _ = conn.TryClose() // GetConnection took a reference
			if ok {
				return s.Side, true
			}
		}
	}
	return "", false
}

// sideOf guesses the side of a connection no longer in a pool: the LAN
// toward the PBX, else the WAN (trunks).
func (ct *clientTrace) sideOf(raddr string) Side {
	if ap, err := netip.ParseAddrPort(raddr); err == nil && ct.pbx != nil && ct.pbx() == ap.Addr().Unmap() {
		return SideLAN
	}
	return SideWAN
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

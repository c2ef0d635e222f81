package acl

import (
	"bytes"
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"
)

// respPool holds scratch buffers for the responses the edge sends itself.
var respPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// PacketConn is a net.PacketConn whose ReadFrom returns only the datagrams
// the Guard admits: it never returns an error for a refused datagram (so
// the reader's loop, e.g. sipgo's, keeps running), it drops it and reads
// the next one. Writes pass through.
type PacketConn struct {
	net.PacketConn
	g    *Guard
	side Side
}

// WrapPacketConn wraps a UDP socket of side s. Refusals are counted.
func (g *Guard) WrapPacketConn(s Side, pc net.PacketConn) *PacketConn {
	return &PacketConn{PacketConn: pc, g: g, side: s}
}

// WriteTo sends b, showing it to the write tap first.
func (c *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.g.writeTap(c.side, c.LocalAddr(), addr, b)
	return c.PacketConn.WriteTo(b, addr)
}

// Unwrap returns the wrapped socket (for socket options such as DSCP).
func (c *PacketConn) Unwrap() net.PacketConn { return c.PacketConn }

// ReadFrom reads the next admitted datagram.
func (c *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, addr, err
		}
		if n == 0 {
			continue
		}
		if c.filter(b[:n], addr, n == len(b)) {
			return n, addr, nil
		}
	}
}

// addrOf extracts the IP of a net.Addr without allocating for UDP and TCP
// addresses.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// filter decides on one datagram; it answers it itself when the policy
// says so. full reports that the datagram filled the read buffer (it may
// have been truncated).
func (c *PacketConn) filter(b []byte, addr net.Addr, full bool) (pass bool) {
	g := c.g
	defer func() {
		if v := recover(); v != nil {
			g.m.drop(c.side, ReasonPanic)
			g.log.Error("acl: panic in datagram filter", zap.Any("panic", v), zap.Stack("stack"))
			pass = false
		}
	}()
	src := addrOf(addr)
	if !src.IsValid() {
		g.m.drop(c.side, ReasonMalformed)
		return false
	}
	if r := g.Admit(c.side, src); r != ReasonNone {
		return false
	}
	p := g.pol.Load()
	act, r, code, resp := p.checkDatagram(c.side, b, full)
	switch act {
	case actPass:
		return true
	case actRespond:
		g.m.drop(c.side, r)
		g.m.responses[c.side&1].Inc()
		if _, err := c.WriteTo(*resp, addr); err != nil {
			g.log.Debug("acl: edge response not sent", zap.Stringer("to", addr), zap.Int("code", code), zap.Error(err))
		}
		respPool.Put(resp)
	default:
		if r != ReasonNone {
			g.m.drop(c.side, r)
		}
	}
	return false
}

// checkDatagram applies the message policy to one datagram. For
// actRespond it returns a pooled response buffer the caller puts back.
func (p *policy) checkDatagram(s Side, b []byte, full bool) (action, Reason, int, *[]byte) {
	// RFC 5626 keep-alives (CRLF) and NUL padding are not messages.
	if len(bytes.Trim(b, "\r\n\x00")) == 0 {
		return actDrop, ReasonNone, 0, nil
	}
	var m message
	p.inspect(b, &m)
	if full || len(b) > p.cfg.MaxMessageBytes {
		m.reason, m.detail = ReasonOversize, "Message Too Large"
	}
	act, r, code := p.decide(s, b, &m, false)
	if act != actRespond {
		return act, r, code, nil
	}
	resp := respPool.Get().(*[]byte)
	*resp = m.appendResponse((*resp)[:0], b, code, p.side[s&1].allowHeader, p.cfg.ServerHeader)
	return act, r, code, resp
}

func addrFrom16(b [16]byte) netip.Addr { return netip.AddrFrom16(b).Unmap() }

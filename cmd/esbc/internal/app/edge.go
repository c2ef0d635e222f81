package app

// edge.go is THE seam between app and edge protection (owned by the
// security issue; app never edits it again).
//
// Contract:
//   - app calls newEdge once at start-up, before it opens any SIP socket.
//   - app opens every SIP socket itself and passes it through
//     wrapPacketConn (UDP) or wrapListener (TCP, and TLS *before* the TLS
//     handshake layer) before handing it to sipgo, so the wrappers see
//     every packet/connection before any parsing: a denied datagram is
//     dropped by not returning it from ReadFrom, a denied connection is
//     closed at Accept (before any TLS handshake).
//   - On a TCP listener the accepted connections are framed message by
//     message (acl.Conn). Below a TLS layer the bytes are encrypted: acl
//     sees the ClientHello and passes the stream through (accept-time ACL
//     and bans only). To filter decrypted TLS messages too, app may pass
//     the TLS listener through wrapTLSListener after the handshake layer.
//   - transportOptions(side) returns extra sipgo transport-layer options
//     (none: filtering happens on the sockets).
//   - d.Admin gets GET/DELETE/POST /api/v1/bans (app guards /api/),
//     d.Subscribe applies every reload to the ACL (live), d.Registerer
//     gets esbc_acl_*.
//   - guard() is the acl.Guard for the B2BUA: ReportAuthFailure,
//     MethodAllowed/AllowHeader, SetTrunkAddrs (resolved trunk servers),
//     SetPBXAddrs.
//   - close is called once at shutdown, after the SIP sockets are closed.

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/esbc/esbc/acl"
	"github.com/esbc/esbc/cmd/esbc/internal/config"
)

// edge filters traffic at the socket level for both sides.
type edge struct {
	d     EdgeDeps
	g     *acl.Guard
	unsub func()
}

// newEdge builds the acl Guard from the snapshot in force, mounts the ban
// API and follows reloads.
func newEdge(d EdgeDeps) (*edge, error) {
	log := d.Logger
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := aclConfig(d.Snapshot())
	if err != nil {
		return nil, err
	}
	g, err := acl.New(cfg, acl.Options{Logger: log, Registerer: d.Registerer})
	if err != nil {
		return nil, err
	}
	e := &edge{d: d, g: g}
	if d.Admin != nil {
		h := g.Handler()
		d.Admin.Handle(acl.BansPath, h)
		d.Admin.Handle(acl.BansPath+"/", h)
	}
	if d.Subscribe != nil {
		e.unsub = d.Subscribe(func(_, next *config.Snapshot) {
			cfg, err := aclConfig(next)
			if err == nil {
				err = g.SetConfig(cfg)
			}
			if err != nil {
				log.Error("acl: reload refused, previous policy stays", zap.Error(err))
				return
			}
			log.Info("acl: policy reloaded", zap.Uint64("generation", next.Generation))
		})
	}
	return e, nil
}

// aclConfig maps a Snapshot to the acl policy.
func aclConfig(s *config.Snapshot) (acl.Config, error) {
	if s == nil {
		return acl.Config{}, fmt.Errorf("acl: no configuration")
	}
	sec := s.Security
	c := acl.Config{
		LAN:           acl.Rules{Allow: s.LANAllow, Deny: s.LANDeny, Methods: sec.Methods.LAN},
		WAN:           acl.Rules{Allow: s.WANAllow, Deny: s.WANDeny, Methods: sec.Methods.WAN},
		Trusted:       s.Trusted,
		RateLimit:     acl.RateLimit{PerIP: float64(sec.RateLimit.PerIP), Burst: sec.RateLimit.Burst, Ban: sec.RateLimit.Ban},
		AuthFailures:  sec.AuthFailures.Max,
		AuthWindow:    sec.AuthFailures.Window,
		UserAgentDeny: sec.UserAgentDeny,
		// The UDP read buffer is sipgo's TransportBufferReadSize: a
		// datagram that fills it may be truncated and is refused anyway.
		MaxMessageBytes: sec.MaxMessageBytes,
		MaxHeaders:      sec.Limits.MaxHeaders,
		MaxLineBytes:    sec.Limits.MaxLineBytes,
		ServerHeader:    sec.ServerHeader,
	}
	if a, ok := uriHostAddr(s.LAN.PBX.URI); ok {
		c.PBXAddrs = append(c.PBXAddrs, a)
	}
	for _, t := range s.Trunks {
		for _, srv := range t.Servers {
			if a, ok := hostPortAddr(srv); ok {
				c.TrunkAddrs = append(c.TrunkAddrs, a)
			}
		}
	}
	return c, c.Validate()
}

// hostPortAddr returns the IP of "ip", "ip:port" or "[v6]:port"; names are
// resolved by b2bua/locate, which feeds guard().SetTrunkAddrs.
func hostPortAddr(hp string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(hp); err == nil {
		return ap.Addr().Unmap(), true
	}
	h := hp
	if host, _, err := net.SplitHostPort(hp); err == nil {
		h = host
	}
	a, err := netip.ParseAddr(strings.Trim(h, "[]"))
	return a.Unmap(), err == nil
}

// uriHostAddr returns the IP host of a SIP URI such as
// "sip:10.0.0.10:5060;transport=udp" or "sip:pbx@[2001:db8::1]".
func uriHostAddr(uri string) (netip.Addr, bool) {
	u := strings.TrimSpace(uri)
	if i := strings.IndexByte(u, ':'); i >= 0 && (strings.EqualFold(u[:i], "sip") || strings.EqualFold(u[:i], "sips")) {
		u = u[i+1:]
	}
	if i := strings.LastIndexByte(u, '@'); i >= 0 {
		u = u[i+1:]
	}
	if i := strings.IndexAny(u, ";?>"); i >= 0 {
		u = u[:i]
	}
	return hostPortAddr(u)
}

func aclSide(s Side) acl.Side {
	if s == SideWAN {
		return acl.WAN
	}
	return acl.LAN
}

// guard is the edge policy, for the B2BUA wiring.
func (e *edge) guard() *acl.Guard { return e.g }

// wrapPacketConn wraps a UDP socket of side before sipgo reads from it.
func (e *edge) wrapPacketConn(side Side, c net.PacketConn) net.PacketConn {
	return e.g.WrapPacketConn(aclSide(side), c)
}

// wrapListener wraps a TCP listener of side (for TLS: the raw TCP
// listener, before the handshake) before sipgo accepts from it.
func (e *edge) wrapListener(side Side, l net.Listener) net.Listener {
	return e.g.WrapListener(aclSide(side), l)
}

// wrapTLSListener wraps a TLS listener (after the handshake layer, whose
// connections decrypt on Read) so that TLS messages get the same
// per-message policy as TCP. Connections were already admitted by
// wrapListener below, so Accept charges the source a second token only.
func (e *edge) wrapTLSListener(side Side, l net.Listener) net.Listener {
	return e.g.WrapListener(aclSide(side), l)
}

// transportOptions returns extra sipgo transport-layer options for side.
func (e *edge) transportOptions(side Side) []sip.TransportLayerOption {
	return nil
}

// close releases what newEdge started.
func (e *edge) close() error {
	if e.unsub != nil {
		e.unsub()
	}
	return nil
}

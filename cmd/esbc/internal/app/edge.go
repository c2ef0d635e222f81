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
//   - capture() is the diagnostic pcapng capture (config key capture,
//     rebuilt on reload when it changes). The edge feeds it every SIP
//     message read on any connection of either side (sipgo read filter:
//     after TLS decryption, client connections included) and every SIP
//     message written through the wrapped listener sockets. What the edge
//     cannot see, the B2BUA/media must feed: SIP written on connections
//     sipgo dialed itself (TLS/TCP toward trunks: WriteSIP) and RTP after
//     SRTP decryption (WriteRTP, EndCall).
//   - close is called once at shutdown, after the SIP sockets are closed.

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/esbc/esbc/acl"
	"github.com/esbc/esbc/cmd/esbc/internal/config"
	"github.com/esbc/esbc/media/capture"
)

// edge filters traffic at the socket level for both sides.
type edge struct {
	d     EdgeDeps
	log   *zap.Logger
	g     *acl.Guard
	unsub func()

	cap    atomic.Pointer[capture.Capture]
	capMu  sync.Mutex     // guards capCfg and the swap of cap
	capCfg capture.Config // the configuration cap was built with
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
	if len(cfg.WAN.Allow) == 0 {
		log.Info("acl: wan.acl.allow is empty: the WAN admits only trunk servers (IP literals in trunks[].servers, and addresses resolved from the trunks' domains)",
			zap.Int("static_trunk_addresses", len(cfg.TrunkAddrs)))
	}
	e := &edge{d: d, log: log, g: g}
	if err := e.setCapture(d.Snapshot()); err != nil {
		return nil, err
	}
	g.SetWriteTap(func(s acl.Side, from, to net.Addr, msg []byte) {
		e.captureSIP(from, to, msg)
	})
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
			} else {
				log.Info("acl: policy reloaded", zap.Uint64("generation", next.Generation))
			}
			if err := e.setCapture(next); err != nil {
				log.Error("capture: reload refused, previous capture stays", zap.Error(err))
			}
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

// transportOptions returns extra sipgo transport-layer options for side:
// a read filter that shows every message read (decrypted) to the capture.
// It never drops anything and never returns an error (LIBRARIES.md).
func (e *edge) transportOptions(side Side) []sip.TransportLayerOption {
	return []sip.TransportLayerOption{sip.WithTransportLayerReadFilter(func(p sip.TransportReadProps, data []byte) ([]byte, error) {
		e.captureSIP(p.RemoteAddr, p.LocalAddr, data)
		return data, nil
	})}
}

// captureSIP hands one SIP message to the capture, if it is on.
func (e *edge) captureSIP(from, to net.Addr, msg []byte) {
	c := e.cap.Load()
	if c == nil || c.Mode() == capture.ModeOff || len(bytes.Trim(msg, "\r\n")) == 0 {
		return
	}
	c.WriteSIP(string(acl.CallID(msg)), addrPort(from), addrPort(to), msg, time.Now())
}

// addrPort converts a socket address; unknown ones become the zero value.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// captureConfig maps the snapshot's capture section.
func captureConfig(s *config.Snapshot) (capture.Config, error) {
	m, err := capture.ParseMode(s.Capture.Mode)
	if err != nil {
		return capture.Config{}, err
	}
	return capture.Config{Dir: s.Capture.Dir, Mode: m, MaxFileBytes: s.Capture.MaxFileBytes, MaxFiles: s.Capture.MaxFiles}, nil
}

// setCapture (re)builds the capture when its configuration changed; the
// old one is closed (flushed) after the swap.
func (e *edge) setCapture(s *config.Snapshot) error {
	cfg, err := captureConfig(s)
	if err != nil {
		return err
	}
	e.capMu.Lock()
	defer e.capMu.Unlock()
	if e.cap.Load() != nil && cfg == e.capCfg {
		return nil
	}
	c, err := capture.New(cfg, e.log.Named("capture"), e.d.Registerer)
	if err != nil {
		return err
	}
	old := e.cap.Swap(c)
	e.capCfg = cfg
	if cfg.Mode != capture.ModeOff {
		e.log.Info("capture on", zap.String("mode", string(cfg.Mode)), zap.String("dir", cfg.Dir))
	}
	return old.Close()
}

// capture is the diagnostic capture in force (never nil after newEdge),
// for the B2BUA and media wiring: WriteSIP for what the edge cannot see,
// WriteRTP after SRTP decryption, EndCall.
func (e *edge) capture() *capture.Capture { return e.cap.Load() }

// close releases what newEdge started.
func (e *edge) close() error {
	if e.unsub != nil {
		e.unsub()
	}
	e.g.SetWriteTap(nil)
	return e.cap.Load().Close()
}

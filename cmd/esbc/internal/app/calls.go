package app

// calls.go is THE seam between app and call handling (owned by the B2BUA
// issue from now on; app never edits it again).
//
// Contract:
//   - app calls installCalls exactly once per process, after both sides'
//     sipgo UserAgent/Server/Client exist and their sockets are bound, and
//     before any socket is served. installCalls installs every SIP request
//     handler on d.LAN.Server and d.WAN.Server; nothing else in app does.
//   - d.Snapshot() is the configuration in force; d.Subscribe delivers
//     (prev, next) after each successful reload (map Snapshot → b2bua.Config
//     there). d.Admin is the admin mux (mount /api/v1/calls and
//     /api/v1/registrations; app already guards /api/ with the bearer
//     token). d.Registerer registers esbc_ metrics. d.Hooks.OnDrain is
//     called at SIGTERM (refuse new INVITEs with 503, wait for calls to end
//     or ctx); d.Hooks.OnClose releases what installCalls started.
//   - The returned error aborts start-up (exit 1).
//
// Foundation behaviour: OPTIONS addressed to esbc → 200 with Allow,
// Accept, Supported (503 while draining, so peers fail over); ACK → no
// answer; CANCEL → 481; every other request → 503.

import (
	"context"
	"net"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// installCalls installs the SIP request handlers on both sides.
func installCalls(d CallsDeps) error {
	var draining atomic.Bool
	d.Hooks.OnDrain("calls", func(context.Context) error {
		draining.Store(true)
		return nil
	})
	for _, s := range []*SideSIP{d.LAN, d.WAN} {
		installFoundationHandlers(d, s, &draining)
	}
	return nil
}

func installFoundationHandlers(d CallsDeps, s *SideSIP, draining *atomic.Bool) {
	log := d.Logger.With(zap.String("side", string(s.Side)))
	own := ownHosts(s)
	respond := func(req *sip.Request, tx sip.ServerTransaction, code int, reason string, extra ...sip.Header) {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		snap := d.Snapshot()
		if snap.Security.ServerHeader != "" {
			res.AppendHeader(sip.NewHeader("Server", snap.Security.ServerHeader))
		}
		for _, h := range extra {
			res.AppendHeader(h)
		}
		if err := tx.Respond(res); err != nil {
			log.Debug("respond failed", zap.Int("code", code), zap.Error(err))
		}
	}
	s.Server.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		if !addressedToUs(req, own) {
			respond(req, tx, 503, "Service Unavailable")
			return
		}
		if draining.Load() {
			respond(req, tx, 503, "Service Unavailable")
			return
		}
		snap := d.Snapshot()
		methods := snap.Security.Methods.LAN
		if s.Side == SideWAN {
			methods = snap.Security.Methods.WAN
		}
		respond(req, tx, 200, "OK",
			sip.NewHeader("Allow", strings.Join(methods, ", ")),
			sip.NewHeader("Accept", "application/sdp"),
			sip.NewHeader("Supported", "replaces, timer"),
		)
	})
	s.Server.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	s.Server.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		respond(req, tx, 481, "Call/Transaction Does Not Exist")
	})
	s.Server.OnNoRoute(func(req *sip.Request, tx sip.ServerTransaction) {
		respond(req, tx, 503, "Service Unavailable")
	})
}

// ownHosts lists the host names under which peers address this side.
func ownHosts(s *SideSIP) map[string]bool {
	own := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	if s.Advertise != "" {
		own[strings.ToLower(s.Advertise)] = true
	}
	for _, l := range s.Listeners {
		if host, _, err := net.SplitHostPort(l.Addr.String()); err == nil {
			own[strings.ToLower(host)] = true
		}
	}
	return own
}

// addressedToUs: an OPTIONS without a user part is a keepalive for the
// SBC itself; one with a user part is for us only if the host is ours.
func addressedToUs(req *sip.Request, own map[string]bool) bool {
	if req.Recipient.User == "" {
		return true
	}
	return own[strings.ToLower(strings.Trim(req.Recipient.Host, "[]"))]
}

var _ = sipgo.NewServer // the B2BUA issue builds on sipgo here

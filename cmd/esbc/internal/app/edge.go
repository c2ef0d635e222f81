package app

// edge.go is THE seam between app and edge protection (owned by the
// security issue from now on; app never edits it again).
//
// Contract:
//   - app calls newEdge once at start-up, before it opens any SIP socket.
//   - app opens every SIP socket itself and passes it through
//     wrapPacketConn (UDP) or wrapListener (TCP, and TLS *before* the TLS
//     handshake layer) before handing it to sipgo, so the wrappers see
//     every packet/connection before any parsing: drop a denied datagram
//     by not returning it from ReadFrom, close a denied connection at
//     Accept.
//   - transportOptions(side) returns extra sipgo transport-layer options
//     for that side's UserAgent (e.g. a TransportReadFilter; it must
//     return (nil, nil) to drop, never an error: see LIBRARIES.md).
//   - d.Admin is the admin mux (mount /api/v1/bans; app guards /api/),
//     d.Snapshot/d.Subscribe give the config and reload notifications,
//     d.Registerer registers esbc_acl_* metrics, d.Hooks.OnClose stops
//     whatever newEdge started.
//   - close is called once at shutdown, after the SIP sockets are closed.
//
// Foundation behaviour: pass-through.

import (
	"net"

	"github.com/emiago/sipgo/sip"
)

// edge filters traffic at the socket level for both sides.
type edge struct {
	d EdgeDeps
}

// newEdge builds the edge filters.
func newEdge(d EdgeDeps) (*edge, error) {
	return &edge{d: d}, nil
}

// wrapPacketConn wraps a UDP socket of side before sipgo reads from it.
func (e *edge) wrapPacketConn(side Side, c net.PacketConn) net.PacketConn {
	return c
}

// wrapListener wraps a TCP listener of side (for TLS: the raw TCP
// listener, before the handshake) before sipgo accepts from it.
func (e *edge) wrapListener(side Side, l net.Listener) net.Listener {
	return l
}

// transportOptions returns extra sipgo transport-layer options for side.
func (e *edge) transportOptions(side Side) []sip.TransportLayerOption {
	return nil
}

// close releases what newEdge started.
func (e *edge) close() error {
	return nil
}

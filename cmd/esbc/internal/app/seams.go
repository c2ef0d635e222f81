package app

import (
	"context"
	cryptotls "crypto/tls"
	"net"
	"net/http"

	"github.com/emiago/sipgo"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/esbc/esbc/acl"
	"github.com/esbc/esbc/cmd/esbc/internal/config"
	"github.com/esbc/esbc/media/capture"
)

// Side names one of the two SIP sides of the SBC.
type Side string

// The two sides. The string is the value of the metric label "side".
const (
	SideLAN Side = "lan" // toward the IP-PBX
	SideWAN Side = "wan" // toward the trunks
)

// SnapshotFunc returns the configuration in force. It never returns nil
// once app has started; callers keep the pointer they got for the life of
// a call (the snapshot is immutable).
type SnapshotFunc func() *config.Snapshot

// SubscribeFunc registers fn to be called after every successful reload,
// with the previous and the new snapshot, on the reload goroutine (one
// call at a time, in registration order). fn must not block for long.
// The returned function unsubscribes.
type SubscribeFunc func(fn func(prev, next *config.Snapshot)) (unsubscribe func())

// HookFunc is a drain or close hook. ctx carries the deadline.
type HookFunc func(ctx context.Context) error

// Hooks lets components take part in the shutdown sequence:
//
//  1. SIGTERM: /readyz turns 503, then every drain hook runs concurrently
//     with a context that ends after shutdown_grace (or at a second
//     SIGTERM). A drain hook stops accepting new work (e.g. new INVITEs
//     get 503) and returns when existing work ended or ctx is done.
//  2. Then close hooks run in reverse registration order (each with a
//     short deadline), then the SIP user agents and sockets are closed.
type Hooks interface {
	OnDrain(name string, fn HookFunc)
	OnClose(name string, fn HookFunc)
}

// BoundListener is one socket app opened for a side.
type BoundListener struct {
	Network string   // udp | tcp | tls
	Addr    net.Addr // the real bound address (ephemeral port resolved)
}

// SideSIP is one side's sipgo stack, built by app before handlers are
// installed. The sockets are already bound (Listeners) but not yet
// served: handlers installed by installCalls are in place before the
// first message is read.
type SideSIP struct {
	Side      Side
	UA        *sipgo.UserAgent
	Server    *sipgo.Server
	Client    *sipgo.Client
	Advertise string // host (IP or name) put in Via/Contact/SDP on this side
	Listeners []BoundListener
}

// CallsDeps is everything calls.go may use. See calls.go.
type CallsDeps struct {
	Logger     *zap.Logger
	Snapshot   SnapshotFunc
	Subscribe  SubscribeFunc
	LAN, WAN   *SideSIP
	Admin      *http.ServeMux        // mount /api/v1/... handlers here (auth is applied by app)
	Registerer prometheus.Registerer // esbc_ metrics
	Hooks      Hooks
	// TrunkTLS returns the client TLS profile toward a trunk (CA from
	// wan.tls.ca_file, server name = trunk tls.server_name or domain,
	// optional client certificate, min_version). It follows reloads.
	TrunkTLS func(trunk string) (*cryptotls.Config, error)
	// Guard is the edge policy (edge.guard()): the trunks' resolved
	// addresses go to SetTrunkAddrs (an empty wan.acl.allow admits them,
	// SPEC §4), failed authentications to ReportAuthFailure. nil: none.
	Guard *acl.Guard
	// Capture returns the diagnostic capture in force (edge.capture(); it
	// is rebuilt by the edge's reload subscriber, which runs before the
	// calls' one). nil: no capture.
	Capture func() *capture.Capture
	// SetTrunkVerifier installs the certificate check of trunk servers
	// used by the WAN UserAgent's client TLS profile (nil uninstalls).
	SetTrunkVerifier func(func(cryptotls.ConnectionState) error)
	// TLSFailed reports a refused trunk certificate (log line and
	// esbc_tls_handshake_failures_total{side="wan"}).
	TLSFailed func(peer string, err error)
}

// EdgeDeps is everything edge.go may use. See edge.go.
type EdgeDeps struct {
	Logger     *zap.Logger
	Snapshot   SnapshotFunc
	Subscribe  SubscribeFunc
	Admin      *http.ServeMux
	Registerer prometheus.Registerer
	Hooks      Hooks
}

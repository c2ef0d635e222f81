package b2bua

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/esbc/esbc/b2bua/header"
	"github.com/esbc/esbc/b2bua/locate"
	"github.com/esbc/esbc/media"
)

// Config is the B2BUA configuration, built by app from the config
// Snapshot. It is immutable once handed to New or SetConfig: a call keeps
// the *Config it started with.
type Config struct {
	LAN Side
	WAN Side
	// PBX is where inbound calls go ("sip:10.0.0.10:5060;transport=udp").
	PBX string
	// PBXTrusted: the PBX's identity headers are believed.
	PBXTrusted bool
	Trunks     map[string]TrunkConfig
	// Router is the dial plan (route.Table satisfies it through RouterFuncs).
	Router Router
	// E164 normalises numbers toward a trunk (route.Table.E164); nil keeps them.
	E164 func(string) (string, error)
	// CallerForPBX formats a trunk caller for the PBX (route.Table.CallerForPBX); nil keeps it.
	CallerForPBX func(string) string
	// ToLAN and ToWAN are the header policies of messages esbc sends toward
	// each side (allow-list, Server/User-Agent, rules); nil: esbc's own
	// minimal list. A trunk's Headers, when set, replaces ToWAN.
	ToLAN, ToWAN *header.Compiled
	// ServerHeader is the Server/User-Agent value on both sides ("" = none).
	ServerHeader string
	// AllowHeaders are extra header names copied between legs (besides the
	// ones esbc always handles itself). Topology hiding still applies.
	AllowHeaders []string
	// SessionExpires (calls.session_expires) is the RFC 4028 interval esbc
	// runs itself on leg B when leg A's peer does not support session
	// timers, and turns on the 422 check of Min-SE; 0 (the zero value) =
	// off: timers are only relayed end to end (see timer.go).
	SessionExpires time.Duration
	// MinSE (calls.min_se) is the smallest interval esbc accepts and
	// announces in Min-SE; 0 = 90s (RFC 4028 §4).
	MinSE time.Duration
	// MaxDuration ends a call after this long (0 = no limit); a trunk's
	// MaxDuration overrides it when shorter.
	MaxDuration time.Duration
	// LANMethods and WANMethods are the request methods accepted per side;
	// others get 405 (empty = all that esbc handles).
	LANMethods, WANMethods []string
	// RetryAfter is sent with 503 while draining.
	RetryAfter time.Duration
	// LANMedia and WANMedia are the media legs' policies (the WAN one is
	// replaced per trunk by TrunkConfig.Media when set).
	LANMedia media.LegConfig
	WANMedia media.LegConfig

	// trunks holds Trunks by pointer (Name filled in), built once by New
	// and SetConfig: a call points at its trunk's entry instead of
	// carrying a copy (312 bytes per call).
	trunks map[string]*TrunkConfig
}

// prepare builds the derived fields of a validated Config, before it is
// stored (it is immutable once stored).
func (c *Config) prepare() {
	c.trunks = make(map[string]*TrunkConfig, len(c.Trunks))
	for name, tc := range c.Trunks {
		if tc.Name == "" {
			tc.Name = name
		}
		c.trunks[name] = &tc
	}
}

// trunk is the TrunkConfig of the trunk called name (a zero one with
// that Name when Trunks has no entry).
func (c *Config) trunk(name string) *TrunkConfig {
	if tc := c.trunks[name]; tc != nil {
		return tc
	}
	tc := c.Trunks[name]
	if tc.Name == "" {
		tc.Name = name
	}
	return &tc
}

// Side is one SIP side as the B2BUA addresses it.
type Side struct {
	// Advertise is the host put in Via and Contact on this side.
	Advertise string
	// Ports is the advertised listen port per transport ("udp","tcp","tls").
	Ports map[string]int
	// Hosts are other names and addresses peers use for esbc on this side
	// (listen addresses); Advertise, localhost and loopback always count.
	Hosts []string
}

// TrunkConfig is what a call needs to know of a trunk.
type TrunkConfig struct {
	Name      string
	Domain    string // host of From/To/Request-URI toward the trunk
	Transport string // udp | tcp | tls
	FromUser  string // user part of From on calls toward the trunk
	CallerID  string // default caller ID (E.164) when the PBX's is not allowed
	// AllowedCallerIDs are PBX-asserted numbers that may pass as caller ID.
	AllowedCallerIDs []string
	TrustPAI         bool
	ReferRelay       bool          // refer: relay (else 403)
	FailoverTimeout  time.Duration // no response from a target in this time → next (default 2s)
	MaxDuration      time.Duration
	// Headers is the header policy toward this trunk (nil: Config.ToWAN).
	Headers *header.Compiled
	// FromDisplay is the display name of From toward the trunk ("" = the PBX's).
	FromDisplay string
	// FarEndNAT latches the trunk leg's media to the SIP source address.
	FarEndNAT bool
	// NoPRACK (prack: false): esbc's INVITEs toward the trunk offer no
	// "Supported: 100rel" (a reliable 18x the trunk sends anyway is still
	// PRACKed). Calls from the trunk (toward the PBX) are not affected.
	NoPRACK bool
	// Media is the trunk leg's media policy (Name "" = Config.WANMedia);
	// Media.Suites are the SDES suites offered toward the trunk and
	// accepted from it (srtp_suites).
	Media media.LegConfig
}

// Route is the outcome of the dial plan for an outbound call.
type Route struct {
	Trunk     string
	Number    string // dialled number as the trunk receives it (E.164)
	Emergency bool
}

// Router is the dial plan.
type Router interface {
	Outbound(dialled string) (Route, error)
	Inbound(user string) (extension string, err error)
}

// Sentinel errors of the dial plan the status mapping understands. A
// Router may also return the errors of b2bua/route wrapped; ErrorFunc in
// Deps maps foreign errors.
var (
	ErrNoRoute          = errors.New("no route")
	ErrInvalidNumber    = errors.New("invalid number")
	ErrEmergencyBlocked = errors.New("emergency number blocked")
	ErrChannels         = errors.New("trunk channels exhausted")
	ErrDraining         = errors.New("draining")
	ErrNotTrunk         = errors.New("source is no trunk server")
	ErrNoTargets        = errors.New("no trunk target answered")
)

// Trunk is the runtime of one trunk a call uses (b2bua/trunk.Trunk).
type Trunk interface {
	Name() string
	Targets(ctx context.Context) ([]locate.Target, error)
	Acquire() bool
	Release()
	Owns(addr netip.Addr) bool
	Authorize(req *sip.Request, res *sip.Response) error
}

// Trunks finds trunk runtimes (b2bua/trunk.Set through an adapter).
type Trunks interface {
	Get(name string) (Trunk, bool)
	ByAddr(addr netip.Addr) (Trunk, bool)
}

// Health is told when a target fails or answers (locate.Health).
type Health interface {
	MarkDown(trunk string, t locate.Target, reason string)
	MarkUp(trunk string, t locate.Target)
}

// MediaEngine creates one media session per call (media.Engine through
// MediaAdapter).
type MediaEngine interface {
	NewSession(id string, a, b media.LegConfig, onInactive func()) (MediaSession, error)
}

// MediaSession is the media of one call (media.Session).
type MediaSession interface {
	Offer(from int, body []byte) ([]byte, error)
	Answer(from int, body []byte) ([]byte, error)
	Stats() media.SessionStats
	State() media.SessionState
	Close() error
}

// Endpoint is one side's sipgo stack.
type Endpoint struct {
	Server *sipgo.Server
	Client *sipgo.Client
	// UDPClient, when set, sends the requests of UDP dialogs: a client made
	// WithClientConnectionAddr(the side's UDP listening socket), so that the
	// peer sees requests from the port it sends to (sipgo otherwise opens a
	// fresh ephemeral socket per client transaction). It cannot dial TCP/TLS.
	UDPClient *sipgo.Client
}

// Deps are the long-lived collaborators of the B2BUA.
type Deps struct {
	Log    *zap.Logger
	Reg    prometheus.Registerer
	Trunks Trunks
	Health Health      // nil: no health feedback
	Media  MediaEngine // nil: SDP relayed unchanged (tests of signalling only)
	// OnEnd receives every ended call once (CDR, end of capture), on the
	// goroutine that ended it, after its media session is closed: it must
	// not block (b2bua/cdr.Writer.Write does not). CallInfo.Legs carry both
	// legs' SIP Call-IDs (one leg for an INVITE refused before routing).
	OnEnd func(CallInfo)
	// CountOut counts a message esbc sends (side "lan"|"wan", method).
	CountOut func(side, method string)
	// AuthFailure is told about a WAN source that failed (acl.ReportAuthFailure).
	AuthFailure func(addr netip.Addr)
}

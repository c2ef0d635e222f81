package media

import (
	"errors"
	"net/netip"
	"time"
)

// SRTPPolicy says whether a leg uses SRTP (SDES, RFC 4568).
type SRTPPolicy int

const (
	// SRTPOff means plain RTP/AVP; crypto attributes are removed.
	SRTPOff SRTPPolicy = iota
	// SRTPOptional means SRTP when the peer offers or accepts it (best-effort
	// SDES in RTP/AVP toward the peer), else plain RTP.
	SRTPOptional
	// SRTPMandatory means RTP/SAVP only; an SDP without usable crypto is
	// ErrNotAcceptable.
	SRTPMandatory
)

func (p SRTPPolicy) String() string {
	switch p {
	case SRTPOff:
		return "off"
	case SRTPOptional:
		return "optional"
	case SRTPMandatory:
		return "mandatory"
	}
	return "unknown"
}

// LegConfig describes one side of a call.
type LegConfig struct {
	Name              string     // "lan" | "wan" (metrics label)
	BindAddr          netip.Addr // local IP the media sockets bind on
	Advertise         netip.Addr // address written into c=/o= toward this leg's peer; zero = BindAddr
	SRTP              SRTPPolicy
	AllowInsecureSDES bool       // else SDES keys are only sent when SignalingSecure
	SignalingSecure   bool       // the leg's SIP transport is TLS
	Codecs            []string   // allowed codec names (PCMU, PCMA, G729, telephone-event…); empty = any
	Video, T38        bool       // does this leg carry them? false → port 0 toward it
	LatchAddr         netip.Addr // far-end NAT: latch to packets from this IP (the SIP source); zero = SDP address
	CallID            string     // this leg's SIP Call-ID, passed to the Tap with its packets; empty = the session id
	// Suites are the SDES suites (RFC 4568 names) esbc offers toward this
	// leg, as a=crypto tags 1..n in this order, and accepts from its offers
	// (the first one of the offer that is in the list). nil = every suite
	// in DefaultSuites order offered, any supported suite accepted.
	Suites []string
}

// DefaultSuites are the SDES suites offered toward a leg whose
// LegConfig.Suites is empty, in this order; a LegConfig.Suites list may
// name any of them.
var DefaultSuites = []string{"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM"}

// offerSuites are the suites offered toward the leg.
func (l *LegConfig) offerSuites() []string {
	if len(l.Suites) == 0 {
		return DefaultSuites
	}
	return l.Suites
}

// acceptsSuite reports whether an offer's suite may be used on the leg.
func (l *LegConfig) acceptsSuite(name string) bool {
	if len(l.Suites) == 0 {
		return true
	}
	for _, s := range l.Suites {
		if s == name {
			return true
		}
	}
	return false
}

// Config is the engine configuration. See doc.go for which fields are hot.
type Config struct {
	PortMin, PortMax  int           // inclusive port range; RTP on even ports, RTCP on the next odd one
	Quarantine        time.Duration // a released port is not reused before this; default 2s
	LatchWindow       time.Duration // latching window after each (re)negotiation; default 5s
	InactivityTimeout time.Duration // 0 disables the watchdog
	DSCP              int           // 0..63
	Transcode         bool          // G.711 µ-law↔A-law when the legs share neither
}

// Sentinel errors a caller branches on.
var (
	// ErrPortsExhausted means no media port pair is free (SIP 503).
	ErrPortsExhausted = errors.New("media: ports exhausted")
	// ErrNotAcceptable means the SDP cannot be anchored (SIP 488).
	ErrNotAcceptable = errors.New("media: not acceptable")
	// ErrClosed is returned by a closed Session or Engine.
	ErrClosed = errors.New("media: closed")
)

// SessionState is a plain snapshot of a session, enough for a standby to
// rebuild it (HA). Keys are key||salt as in a=crypto inline.
type SessionState struct {
	ID      string
	Legs    [2]LegState
	Offerer int // leg of the pending offer, -1 when none
}

// LegState is one leg of a SessionState.
type LegState struct {
	Name    string
	Streams []StreamState
}

// StreamState is one m-line of one leg.
type StreamState struct {
	Index      int            // m-line index (the same on both legs)
	Media      string         // audio | video | image
	Local      netip.AddrPort // our RTP socket toward this leg
	LocalRTCP  netip.AddrPort
	Remote     netip.AddrPort // the peer's RTP address from SDP
	RemoteRTCP netip.AddrPort
	Latched    netip.AddrPort // where packets come from (zero until latched)
	RTCPMux    bool
	Direction  string // the peer's direction attribute
	Codec      string
	Suite      string // SRTP suite, "" for plain RTP
	SendKey    []byte // key||salt esbc encrypts with toward this peer
	RecvKey    []byte // key||salt the peer encrypts with
	SendSSRC   uint32 // last SSRC sent toward this peer
	SendROC    uint32 // its rollover counter
}

// SessionStats holds per-leg quality figures.
type SessionStats struct {
	Legs [2]LegStats
}

// LegStats is what one leg's peer sent us (in) and what we sent it (out).
type LegStats struct {
	Name       string
	Codec      string
	Suite      string
	PacketsIn  uint64
	BytesIn    uint64
	PacketsOut uint64
	BytesOut   uint64
	Lost       int64   // RFC 3550 A.3 cumulative lost, from the peer
	JitterMs   float64 // RFC 3550 A.8 interarrival jitter of the peer's stream
	RTTMs      float64 // round trip esbc↔peer from RTCP SR/RR (RFC 3550 6.4.1); 0 = unknown
	Dropped    uint64  // packets dropped on this leg (wrong source, auth failure, replay…)
}

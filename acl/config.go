package acl

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Side is the SIP side a socket belongs to. Its String is the value of
// the metric label "side".
type Side uint8

// The two sides of the SBC.
const (
	LAN Side = iota // toward the IP-PBX: an empty allow list allows everyone
	WAN             // toward the trunks: an empty allow list allows only trunk addresses
)

func (s Side) String() string {
	if s == WAN {
		return "wan"
	}
	return "lan"
}

// ParseSide maps "lan" / "wan" (any case) to a Side.
func ParseSide(s string) (Side, error) {
	switch strings.ToLower(s) {
	case "lan":
		return LAN, nil
	case "wan":
		return WAN, nil
	}
	return LAN, fmt.Errorf("acl: unknown side %q", s)
}

// Rules is the access policy of one side.
type Rules struct {
	// Allow lists the sources accepted. Empty: everyone on the LAN, only
	// the trunk addresses (SetTrunkAddrs) on the WAN.
	Allow []netip.Prefix
	// Deny lists sources refused even when Allow matches.
	Deny []netip.Prefix
	// Methods lists the request methods accepted (case-sensitive, as on
	// the wire). Empty accepts every method. Others get 405.
	Methods []string
}

// RateLimit is the per-source token bucket (security.rate_limit).
type RateLimit struct {
	// PerIP is the sustained rate in SIP messages per second; 0 disables
	// rate limiting (bans by auth failures still apply).
	PerIP float64
	// Burst is the bucket size. Default: 2 × PerIP (at least 1).
	Burst int
	// Ban is the first ban's duration. Default 10m.
	Ban time.Duration
}

// Config is the whole acl policy. The zero value of every tunable means
// its documented default. Everything is hot (SetConfig) except TableSize.
type Config struct {
	LAN, WAN Rules
	// Trusted sources are never rate limited nor banned (they still pass
	// the side's allow/deny). Trunk servers and the PBX are always trusted
	// (SetTrunkAddrs, SetPBXAddrs).
	Trusted []netip.Prefix
	// TrunkAddrs and PBXAddrs are the addresses known from the
	// configuration (IP literals in trunks[].servers, lan.pbx.uri); they
	// add to the sets given by SetTrunkAddrs / SetPBXAddrs.
	TrunkAddrs, PBXAddrs []netip.Addr
	RateLimit            RateLimit
	// BanAfter is how many rate-limited messages within BanWindow get a
	// source banned. Default: Burst (at least 10).
	BanAfter int
	// BanWindow: default 10s.
	BanWindow time.Duration
	// BanMax caps a repeat offender's ban (each ban doubles the previous
	// one). Default 24h.
	BanMax time.Duration
	// AuthFailures failed authentications (ReportAuthFailure) within
	// AuthWindow ban the source. Default 5 in 5m; a negative value disables.
	AuthFailures int
	AuthWindow   time.Duration
	// UserAgentDeny are case-insensitive substrings of the User-Agent
	// header value that get a message dropped silently.
	UserAgentDeny []string
	// MaxMessageBytes bounds one SIP message (headers + body). Default 65535.
	MaxMessageBytes int
	// MaxHeaders bounds the header fields of one message. Default 100.
	MaxHeaders int
	// MaxLineBytes bounds one header line. Default 8192.
	MaxLineBytes int
	// ServerHeader is the Server header of the responses the edge sends
	// itself (400, 405, 483, 505). Default "esbc"; "-" sends none.
	ServerHeader string
	// MaxConnsPerSource bounds the TCP/TLS connections one untrusted
	// source may hold open at once. Default 32; a negative value disables.
	MaxConnsPerSource int
	// MessageTimeout bounds the time from the first byte of a message on a
	// TCP/TLS stream to its last (slow-header attacks): the connection is
	// closed when it passes. Default 30s; a negative value disables.
	MessageTimeout time.Duration
	// TableSize bounds the per-source state table (rate buckets, bans,
	// auth failures). Default 65536. Restart-only: SetConfig ignores it.
	TableSize int
}

// withDefaults returns c with every zero tunable replaced by its default.
func (c Config) withDefaults() Config {
	if c.RateLimit.Burst <= 0 {
		c.RateLimit.Burst = int(2 * c.RateLimit.PerIP)
		if c.RateLimit.Burst < 1 {
			c.RateLimit.Burst = 1
		}
	}
	if c.RateLimit.Ban <= 0 {
		c.RateLimit.Ban = 10 * time.Minute
	}
	if c.BanAfter <= 0 {
		c.BanAfter = max(c.RateLimit.Burst, 10)
	}
	if c.BanWindow <= 0 {
		c.BanWindow = 10 * time.Second
	}
	if c.BanMax <= 0 {
		c.BanMax = 24 * time.Hour
	}
	if c.BanMax < c.RateLimit.Ban {
		c.BanMax = c.RateLimit.Ban
	}
	if c.AuthFailures == 0 {
		c.AuthFailures = 5
	}
	if c.AuthWindow <= 0 {
		c.AuthWindow = 5 * time.Minute
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 65535
	}
	if c.MaxHeaders <= 0 {
		c.MaxHeaders = 100
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = 8192
	}
	if c.ServerHeader == "" {
		c.ServerHeader = "esbc"
	}
	if c.MaxConnsPerSource == 0 {
		c.MaxConnsPerSource = 32
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = 30 * time.Second
	}
	if c.TableSize <= 0 {
		c.TableSize = 65536
	}
	return c
}

// Validate reports the first inconsistent value.
func (c Config) Validate() error {
	if c.RateLimit.PerIP < 0 {
		return fmt.Errorf("acl: rate_limit.per_ip %v: must be >= 0", c.RateLimit.PerIP)
	}
	for _, p := range append(append(append(append(append([]netip.Prefix(nil), c.LAN.Allow...), c.LAN.Deny...), c.WAN.Allow...), c.WAN.Deny...), c.Trusted...) {
		if !p.IsValid() {
			return fmt.Errorf("acl: invalid prefix %v", p)
		}
	}
	for _, ua := range c.UserAgentDeny {
		if strings.TrimSpace(ua) == "" {
			return fmt.Errorf("acl: empty user_agent_deny entry")
		}
	}
	return nil
}

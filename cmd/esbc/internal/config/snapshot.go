package config

import (
	"net/netip"
	"regexp"
	"time"
)

// Snapshot is one validated, compiled, immutable configuration. It is
// shared by pointer between goroutines: nobody may modify it (nor the
// slices and maps it holds) after Compile returns it. A call keeps the
// snapshot it started with.
type Snapshot struct {
	Config // the validated values, defaults applied

	// Source is the file the snapshot was read from, or "embedded".
	Source string
	// Generation counts successful loads in this process, starting at 1.
	Generation uint64
	// LoadedAt is when the snapshot was compiled.
	LoadedAt time.Time
	// Embedded is true for the built-in loopback default (no file).
	Embedded bool

	// LANListen and WANListen are the parsed lan.listen / wan.listen URLs.
	LANListen []Listen
	WANListen []Listen
	// RTPPortMin and RTPPortMax bound media.rtp_ports (inclusive, min even).
	RTPPortMin, RTPPortMax int
	// Outbound and Inbound are routes with compiled regexps, in file order.
	Outbound []CompiledOutbound
	Inbound  []CompiledInbound
	// ACL prefixes, parsed.
	LANAllow, LANDeny, WANAllow, WANDeny, Trusted []netip.Prefix
	// TrunkIndex maps a trunk name to its index in Config.Trunks.
	TrunkIndex map[string]int
}

// Listen is one parsed listen URL such as "udp://10.0.0.2:5060".
type Listen struct {
	Network string // udp | tcp | tls
	Addr    string // host:port
}

// CompiledOutbound is an outbound route with its regexp compiled.
type CompiledOutbound struct {
	OutboundRoute
	Re *regexp.Regexp
}

// CompiledInbound is an inbound route with its regexp compiled.
type CompiledInbound struct {
	InboundRoute
	Re *regexp.Regexp
}

// Trunk returns the trunk named name, or nil.
func (s *Snapshot) Trunk(name string) *Trunk {
	i, ok := s.TrunkIndex[name]
	if !ok {
		return nil
	}
	return &s.Trunks[i]
}

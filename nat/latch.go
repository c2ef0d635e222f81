package nat

import "net/netip"

// LatchMode is how a media leg chooses the peer it accepts packets from.
type LatchMode uint8

const (
	// LatchOff accepts only the address the SDP announced (strict).
	LatchOff LatchMode = iota
	// LatchIP latches to the first packet whose source IP is the SDP
	// address or the SIP signalling address, on any port (symmetric RTP
	// behind NAT, RFC 4961).
	LatchIP
	// LatchAny latches to the first packet from anywhere. Only for a leg
	// whose SDP and signalling address are both unknown.
	LatchAny
)

// String returns "off", "ip" or "any" (logs, admin API).
func (m LatchMode) String() string {
	switch m {
	case LatchOff:
		return "off"
	case LatchIP:
		return "ip"
	case LatchAny:
		return "any"
	}
	return "unknown"
}

// Verdict is the decision for one received media packet.
type Verdict uint8

const (
	// Drop means the packet is not from the leg's peer (no "RTP bleed"):
	// count it and drop it.
	Drop Verdict = iota
	// Accept means the packet is from the peer: relay it.
	Accept
	// Latched means the packet is accepted and the leg now sends to its
	// source (Latch.Peer).
	Latched
)

// String returns "drop", "accept" or "latched".
func (v Verdict) String() string {
	switch v {
	case Drop:
		return "drop"
	case Accept:
		return "accept"
	case Latched:
		return "latched"
	}
	return "unknown"
}

// Latch is the latching state of one media socket (RTP and RTCP each have
// their own). Its exported fields are the whole state, so that an
// active/standby pair can replicate it. It is owned by one goroutine.
type Latch struct {
	Mode     LatchMode
	Expected netip.AddrPort // from SDP (c= and m= or a=rtcp); may be invalid or unspecified
	Signal   netip.Addr     // source address of the leg's SIP; may be invalid
	Peer     netip.AddrPort // the latched peer; invalid until latched
}

// NewLatch returns a Latch in mode for the SDP address expected and the SIP
// source signal. In LatchOff mode the peer is the SDP address from the start.
func NewLatch(mode LatchMode, expected netip.AddrPort, signal netip.Addr) Latch {
	l := Latch{Mode: mode, Signal: signal.Unmap()}
	l.Reset(expected)
	return l
}

// Reset re-arms the latch for a new SDP address (re-INVITE, UPDATE).
func (l *Latch) Reset(expected netip.AddrPort) {
	l.Expected = netip.AddrPortFrom(expected.Addr().Unmap(), expected.Port())
	l.Peer = netip.AddrPort{}
	if l.Mode == LatchOff && usable(l.Expected) {
		l.Peer = l.Expected
	}
}

func usable(ap netip.AddrPort) bool {
	return ap.IsValid() && !ap.Addr().IsUnspecified() && ap.Port() != 0
}

// Check decides on a packet from src and latches when the policy says so.
// It does not allocate.
func (l *Latch) Check(src netip.AddrPort) Verdict {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if l.Peer.IsValid() {
		if src == l.Peer {
			return Accept
		}
		return Drop
	}
	switch l.Mode {
	case LatchIP:
		ip := src.Addr()
		if (l.Expected.IsValid() && ip == l.Expected.Addr()) || (l.Signal.IsValid() && ip == l.Signal) {
			l.Peer = src
			return Latched
		}
	case LatchAny:
		l.Peer = src
		return Latched
	}
	return Drop
}

// ModeFor is the latching policy for a leg:
//   - far_end_nat set: LatchIP (the SIP source address is trusted too);
//   - no usable SDP address (0.0.0.0, none): LatchIP on the SIP source, or
//     LatchAny when that is unknown too;
//   - an SDP address that is private while the SIP source is another,
//     public address (a peer behind NAT that did not fix its SDP): LatchIP;
//   - otherwise LatchOff (strict: only the SDP address).
func ModeFor(farEndNAT bool, expected netip.AddrPort, signal netip.Addr) LatchMode {
	signal = signal.Unmap()
	exp := expected.Addr().Unmap()
	switch {
	case farEndNAT:
		return LatchIP
	case !usable(expected):
		if signal.IsValid() && !signal.IsUnspecified() {
			return LatchIP
		}
		return LatchAny
	case signal.IsValid() && IsPrivate(exp) && !IsPrivate(signal) && exp != signal:
		return LatchIP
	}
	return LatchOff
}

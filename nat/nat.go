package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is the SIP port when a Via or Contact gives none (RFC 3261
// §18.1.1; TLS uses 5061, but replies to TLS go back over the connection).
const DefaultPort = 5060

// ParseAdvertise parses a configured advertised address: "ip" or "ip:port"
// (IPv6 as "[v6]:port" or bare). port 0 means "the listener's port".
func ParseAdvertise(s string) (netip.Addr, uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Addr{}, 0, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return netip.Addr{}, 0, fmt.Errorf("advertise %q: needs a specific address and port", s)
		}
		return ap.Addr().Unmap(), ap.Port(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("advertise %q: not an IP address", s)
	}
	if a.IsUnspecified() {
		return netip.Addr{}, 0, fmt.Errorf("advertise %q: unspecified address", s)
	}
	return a.Unmap(), 0, nil
}

// Advertised is the address esbc writes into Via, Contact and SDP for a
// listener bound to local: the configured advertise address (its port, or
// the listener's), else local itself. An advertise string that does not
// parse is ignored (config validation rejects it earlier). When local is an
// unspecified address and nothing is advertised the result is local
// unchanged: the caller must pick the outgoing interface's address.
func Advertised(advertise string, local netip.AddrPort) netip.AddrPort {
	a, port, err := ParseAdvertise(advertise)
	if err != nil || !a.IsValid() {
		return netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	}
	if port == 0 {
		port = local.Port()
	}
	return netip.AddrPortFrom(a, port)
}

// IsPrivate reports whether a is not globally routable the way a public SIP
// peer would be: RFC 1918, RFC 6598 shared (carrier-grade NAT) space,
// RFC 4193 unique local, link-local, loopback and unspecified.
func IsPrivate(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() ||
		cgnat.Contains(a)
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Via is the topmost Via header's sent-by and rport flag, as plain values.
type Via struct {
	Host  string // sent-by host: IP literal (IPv6 with or without brackets) or name
	Port  int    // sent-by port; 0 = absent
	RPort bool   // the ;rport parameter is present (RFC 3581)
}

func (v Via) addr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.Trim(v.Host, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func (v Via) port() int {
	if v.Port == 0 {
		return DefaultPort
	}
	return v.Port
}

// ReceivedParams is what a server adds to the topmost Via of a request that
// arrived from src: received (RFC 3261 §18.2.1: when sent-by is a name or a
// different address; RFC 3581 §4: always when rport is asked for) and the
// rport value (0 when the client did not ask for it).
func ReceivedParams(v Via, src netip.AddrPort) (received string, rport int) {
	sa := src.Addr().Unmap()
	if v.RPort {
		return sa.String(), int(src.Port())
	}
	if a, ok := v.addr(); !ok || a != sa {
		return sa.String(), 0
	}
	return "", 0
}

// ResponseAddr is where a response to an unreliable-transport request goes
// (RFC 3261 §18.2.2, RFC 3581 §4): the received address when present, else
// sent-by; the rport value when present, else the sent-by port.
func ResponseAddr(v Via, received string, rport int) (host string, port int) {
	host = strings.Trim(v.Host, "[]")
	if received != "" {
		host = received
	}
	port = v.port()
	if rport > 0 {
		port = rport
	}
	return host, port
}

// BehindNAT reports whether the sender of a request that arrived from src is
// behind NAT: its Via sent-by is a name, another address, or (for UDP, where
// the source port is the SIP port) another port. Over TCP/TLS (reliable)
// only the address counts, since the source port is ephemeral.
func BehindNAT(v Via, src netip.AddrPort, reliable bool) bool {
	a, ok := v.addr()
	if !ok || a != src.Addr().Unmap() {
		return true
	}
	return !reliable && v.port() != int(src.Port())
}

// Reflexive is esbc's own address as a peer saw it, from the received and
// rport parameters of the Via esbc sent (RFC 3581 §4: e.g. in a REGISTER's
// 200), and whether it differs from what esbc sent (esbc is behind NAT and
// should refresh bindings more often). mapped is invalid when received is
// absent or not an IP.
func Reflexive(sent Via, received string, rport int) (mapped netip.AddrPort, natted bool) {
	ra, err := netip.ParseAddr(strings.Trim(received, "[]"))
	if err != nil {
		if rport > 0 && rport != sent.port() {
			return netip.AddrPort{}, true
		}
		return netip.AddrPort{}, false
	}
	port := sent.port()
	if rport > 0 {
		port = rport
	}
	mapped = netip.AddrPortFrom(ra.Unmap(), uint16(port))
	sa, ok := sent.addr()
	return mapped, !ok || sa != mapped.Addr() || sent.port() != port
}

// ContactTarget is where in-dialog requests to a peer go: its Contact when
// fix is false and the Contact is an IP literal, else the signalling source
// src (far_end_nat, or NAT detected). A Contact with a host name and fix
// false gives an invalid AddrPort: the caller resolves the name.
func ContactTarget(contactHost string, contactPort int, src netip.AddrPort, fix bool) netip.AddrPort {
	if fix {
		return netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	}
	a, err := netip.ParseAddr(strings.Trim(contactHost, "[]"))
	if err != nil {
		return netip.AddrPort{}
	}
	if contactPort <= 0 || contactPort > 0xffff {
		contactPort = DefaultPort
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(contactPort))
}

// NeedsContactFix reports whether a peer's Contact cannot be used as it is
// because the peer is behind NAT: the Contact is a private address while
// the packet came from elsewhere, or (UDP) it names another address/port
// than the source.
func NeedsContactFix(contactHost string, contactPort int, src netip.AddrPort, reliable bool) bool {
	a, err := netip.ParseAddr(strings.Trim(contactHost, "[]"))
	if err != nil {
		return false // a name: resolve it, nothing to compare
	}
	a = a.Unmap()
	s := src.Addr().Unmap()
	if a == s {
		if reliable {
			return false
		}
		if contactPort <= 0 {
			contactPort = DefaultPort
		}
		return contactPort != int(src.Port())
	}
	return IsPrivate(a) && !IsPrivate(s) || !reliable
}

// Keepalive intervals (RFC 5626 §4.4.1, and common UDP NAT binding
// lifetimes of 30 s and more).
const (
	UDPKeepalive = 25 * time.Second // OPTIONS/CRLF toward a NATed UDP peer
	TCPKeepalive = 90 * time.Second // CRLFCRLF on TLS/TCP connections
)

// Keepalive is how often to send a keepalive on a flow: TCP/TLS always (the
// trunk connection must survive idle NAT and firewall timeouts), UDP only
// when NAT was detected; 0 means none.
func Keepalive(transport string, natted bool) time.Duration {
	switch strings.ToLower(transport) {
	case "tcp", "tls":
		return TCPKeepalive
	case "udp":
		if natted {
			return UDPKeepalive
		}
	}
	return 0
}

// ErrBadPort is returned by ParsePort for an out-of-range port.
var ErrBadPort = errors.New("bad port")

// ParsePort parses a Via/Contact port ("" = 0, absent).
func ParsePort(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	p, err := strconv.Atoi(s)
	if err != nil || p <= 0 || p > 0xffff {
		return 0, fmt.Errorf("%w %q", ErrBadPort, s)
	}
	return p, nil
}

package locate

import (
	"errors"
	"net/netip"
	"strings"
)

// Target is one place a SIP request can be sent: an address, the transport to
// use there and the name to present for TLS (SNI) and to verify the server's
// certificate against.
type Target struct {
	Host      string         // name for TLS SNI/verification (the SRV target or static host)
	Addr      netip.AddrPort // where to connect
	Transport string         // "udp" | "tcp" | "tls"
	Priority  uint16         // SRV priority; static servers: index in the list
	Weight    uint16         // SRV weight; static servers: 0
}

// String is the stable identity of a target, "host/ip:port/transport"; it is
// the key of the health table and the value of the target metric label.
// Priority and Weight are not part of it.
func (t Target) String() string {
	return t.Host + "/" + t.Addr.String() + "/" + t.Transport
}

// Sentinel errors a caller may branch on.
var (
	// ErrNoTargets means the domain resolved to no usable address (no
	// record, or SRV target "." meaning the service is not offered).
	ErrNoTargets = errors.New("no targets")
	// ErrTransport means the transport is not udp, tcp or tls.
	ErrTransport = errors.New("unsupported transport")
	// ErrDNSUnavailable means every configured DNS server failed and no
	// stale answer could be used.
	ErrDNSUnavailable = errors.New("dns unavailable")
)

// defaultPort is the port of RFC 3261 §19.1.2 for a transport.
func defaultPort(transport string) uint16 {
	if transport == "tls" {
		return 5061
	}
	return 5060
}

// normTransport validates and lower-cases a transport name.
func normTransport(t string) (string, error) {
	switch strings.ToLower(t) {
	case "udp":
		return "udp", nil
	case "tcp":
		return "tcp", nil
	case "tls":
		return "tls", nil
	}
	return "", ErrTransport
}

// srvPrefix is the SRV owner prefix of RFC 3263 §4.2 for a transport.
func srvPrefix(transport string) string {
	switch transport {
	case "tls":
		return "_sips._tcp."
	case "tcp":
		return "_sip._tcp."
	}
	return "_sip._udp."
}

// naptrService is the RFC 3263 §4.1 NAPTR service of a transport.
func naptrService(transport string) string {
	switch transport {
	case "tls":
		return "SIPS+D2T"
	case "tcp":
		return "SIP+D2T"
	}
	return "SIP+D2U"
}

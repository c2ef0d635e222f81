// Package nat holds the pure decisions esbc makes about network address
// translation: which address to advertise, the Via received/rport
// parameters (RFC 3261 §18.2.1, RFC 3581), whether a peer is behind NAT, where
// to send responses and in-dialog requests to a NATed peer, and the symmetric
// RTP latching policy (which media source addresses a leg accepts).
//
// # Owns
//
// Decisions only: no sockets, no goroutines, no SIP library types. Callers
// pass plain values (netip, strings, ints) taken from their SIP messages.
//
// # May import
//
// The standard library only.
//
// # API
//
//	func ParseAdvertise(s string) (netip.Addr, uint16, error)  // "ip" | "ip:port" | "[v6]:port"; "" = none
//	func Advertised(advertise string, local netip.AddrPort) netip.AddrPort
//	func IsPrivate(a netip.Addr) bool // RFC 1918, 6598, 4193, link-local, loopback, unspecified
//
//	type Via struct{ Host string; Port int /* 0 = absent */; RPort bool /* ;rport present */ }
//	func ReceivedParams(v Via, src netip.AddrPort) (received string, rport int) // what a server adds
//	func ResponseAddr(v Via, received string, rport int) (host string, port int)    // where a UDP response goes
//	func BehindNAT(v Via, src netip.AddrPort, reliable bool) bool                   // sender behind NAT?
//	func Reflexive(sent Via, received string, rport int) (mapped netip.AddrPort, natted bool) // esbc behind NAT?
//	func NeedsContactFix(contactHost string, contactPort int, src netip.AddrPort, reliable bool) bool
//	func ContactTarget(contactHost string, contactPort int, src netip.AddrPort, fix bool) netip.AddrPort
//	func Keepalive(transport string, natted bool) time.Duration // TCPKeepalive 90s, UDPKeepalive 25s, 0
//	func ParsePort(s string) (int, error)                       // ErrBadPort
//
//	type LatchMode uint8 // LatchOff (strict SDP address) | LatchIP | LatchAny
//	type Verdict uint8   // Drop | Accept | Latched
//	type Latch struct {  // plain state, replicable; one per media socket (RTP, RTCP), owned by its relay goroutine
//		Mode     LatchMode
//		Expected netip.AddrPort // from SDP c=/m= (or a=rtcp)
//		Signal   netip.Addr     // SIP source address of the leg
//		Peer     netip.AddrPort // where to send / accept from; invalid = not latched yet
//	}
//	func NewLatch(mode LatchMode, expected netip.AddrPort, signal netip.Addr) Latch
//	func (l *Latch) Check(src netip.AddrPort) Verdict // zero allocations; latches when the policy says so
//	func (l *Latch) Reset(expected netip.AddrPort)    // new SDP (re-INVITE): re-arm
//	func ModeFor(farEndNAT bool, expected netip.AddrPort, signal netip.Addr) LatchMode
//
// ModeFor: far_end_nat → LatchIP; no usable SDP address → LatchIP on the SIP
// source (LatchAny when that is unknown too); private SDP address from another,
// public SIP source → LatchIP; otherwise LatchOff. LatchIP accepts the first
// packet whose source IP is the SDP or the SIP address (any port) and from
// then on only that exact source (RFC 4961 symmetric RTP, no RTP bleed).
//
// # Concurrency
//
// Functions are pure and safe for concurrent use. A Latch is a value owned by
// one goroutine (the leg's relay loop); it has no lock.
package nat

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
//	func Advertised(advertise string, local netip.AddrPort) netip.AddrPort
//	func IsPrivate(a netip.Addr) bool                         // RFC 1918, 6598, 4193, link-local, loopback
//	type Via struct{ Host string; Port int; RPort bool /* ;rport present */ }
//	func ReceivedParams(v Via, src netip.AddrPort) (received string, rport int) // what the server adds
//	func ResponseAddr(v Via, received string, rport int) (host string, port int)    // where a response goes
//	func BehindNAT(v Via, src netip.AddrPort) bool             // sent-by differs from the packet source
//	func ContactTarget(contactHost string, contactPort int, src netip.AddrPort, fix bool) netip.AddrPort
//
//	type LatchMode uint8 // LatchOff | LatchIP | LatchAny
//	type Latch struct {  // plain state, replicable; one per media leg, owned by its relay goroutine
//		Mode     LatchMode
//		Expected netip.AddrPort // from SDP c=/m=
//		Signal   netip.Addr     // SIP source address of the leg
//		Peer     netip.AddrPort // latched peer; zero = not latched yet
//	}
//	type Verdict uint8 // Drop | Accept | Latched
//	func (l *Latch) Check(src netip.AddrPort) Verdict // zero allocations
//	func (l *Latch) Reset(expected netip.AddrPort)    // new SDP (re-INVITE): re-arm
//	func ModeFor(farEndNAT bool, expected netip.AddrPort, signal netip.Addr) LatchMode
//
// # Concurrency
//
// Functions are pure and safe for concurrent use. A Latch is a value owned by
// one goroutine (the leg's relay loop); it has no lock.
package nat

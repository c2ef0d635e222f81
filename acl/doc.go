// Package acl is the edge protection of esbc: per-side allow/deny prefix
// sets (IPv4 and IPv6), per-source token-bucket rate limits with automatic
// and escalating bans, auth-failure bans, and the socket wrappers that
// apply them before any SIP parsing.
//
// # What it owns
//
//   - Guard: the policy (Config, swapped atomically by SetConfig), the
//     dynamic address sets (SetTrunkAddrs from the DNS/B2BUA side,
//     SetPBXAddrs), and a fixed-size sharded table of per-source state
//     (token bucket, ban, strikes, auth failures). The table never grows
//     past Config.TableSize: a full shard evicts the least recently seen of
//     a few sampled unbanned entries, so a spoofed-source flood costs a
//     bounded amount of memory. Bans survive SetConfig.
//   - PacketConn (WrapPacketConn): ReadFrom returns only admitted
//     datagrams; a refused datagram is dropped (never an error, so sipgo's
//     UDP read loop keeps running; see LIBRARIES.md).
//   - Listener (WrapListener, WrapRawListener) and Conn (WrapConn): refused
//     sources, and untrusted sources already holding MaxConnsPerSource
//     connections, are closed at Accept; Conn frames SIP messages on the stream
//     by Content-Length (RFC 3261 §18.3, §7.5) and hands the reader whole
//     admitted messages. Missing, duplicate, negative or invalid
//     Content-Length and oversize messages close the connection (the
//     stream cannot be resynchronised). RFC 5626 §3.5.1 CRLF keep-alives
//     are answered here. A message must be complete within MessageTimeout
//     of its first byte (slow-header attacks), else the connection is
//     closed; the reader's own read deadline still applies. A listener below a TLS layer sees a ClientHello
//     (first byte 0x16): that connection passes through untouched (ACL,
//     bans and the connection limit still apply); wrap the TLS listener
//     too to filter the decrypted messages.
//   - WriteTap (SetWriteTap) shows every message written through the
//     wrappers, for the diagnostic capture; CallID extracts the Call-ID.
//   - The per-message policy, from the raw bytes: max_message_bytes,
//     header count and line length, User-Agent deny list (case-insensitive
//     substrings, dropped silently), SIP version (505), method allow-list
//     per side (405 with Allow), Max-Forwards 0 (483), missing Via, CSeq,
//     From, To, Call-ID and bad Content-Length (400 with a reason phrase).
//     A response is sent only to a request that is not ACK and carries Via
//     and CSeq (RFC 3261 §8.2.6, §18.2.2: back to the source address);
//     anything else is dropped. Oversize datagrams get 400 "Message Too Large" (SPEC §5; RFC 3261
//     would say 513). Every refusal is counted in
//     esbc_acl_dropped_total{side,reason}.
//   - Handler: GET/DELETE (and POST) /api/v1/bans.
//   - MethodAllowed, NextMaxForwards: request-level checks for the B2BUA.
//
// # Imports
//
// Standard library, zap and prometheus only: no sipgo, no esbc package.
//
// # Concurrency
//
// Every Guard method is safe for concurrent use. The hot path (Admit)
// takes one shard mutex and does not allocate. A PacketConn may be read
// by several goroutines; a Conn by one reader at a time, with concurrent
// writers.
package acl

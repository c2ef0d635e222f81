// Package media anchors every call's media: it owns the UDP port pool, one
// relay Session per call with two legs (LAN: plain RTP toward the PBX; WAN:
// SRTP/SDES toward a trunk), the SRTP contexts, strict-source latching,
// per-leg quality statistics, the inactivity watchdog and G.711 µ-law↔A-law
// transcoding. SDP rewriting is delegated to media/sdp (pure, golden-tested).
//
// # API (what the B2BUA drives)
//
//	type SRTPPolicy int // SRTPOff, SRTPOptional, SRTPMandatory
//	type LegConfig struct {
//	    Name              string     // "lan" | "wan" (metrics label)
//	    BindAddr          netip.Addr // local IP the media sockets bind on
//	    Advertise         netip.Addr // address written into c=/o= toward this leg's peer (zero = BindAddr)
//	    SRTP              SRTPPolicy
//	    AllowInsecureSDES bool       // else SDES keys are only sent when SignalingSecure
//	    SignalingSecure   bool       // the leg's SIP transport is TLS
//	    Codecs            []string   // allowed codec names (PCMU, PCMA, G729, telephone-event…); empty = any
//	    Video, T38        bool       // does this leg carry them? false → port 0 / 488 if nothing else is left
//	    LatchAddr         netip.Addr // far-end NAT: latch to packets from this IP (the SIP source); zero = SDP address
//	    CallID            string     // this leg's SIP Call-ID, given to the Tap with its packets; empty = the session id
//	    Suites            []string   // SDES suites offered toward the leg (in order) and accepted from it; nil = DefaultSuites
//	}
//	var DefaultSuites []string // AES_CM_128_HMAC_SHA1_80, _32, AEAD_AES_128_GCM, AEAD_AES_256_GCM
//	type Config struct {
//	    PortMin, PortMax  int           // media port range (inclusive); RTP even, RTCP odd
//	    Quarantine        time.Duration // a released port is not reused before this (default 2s)
//	    LatchWindow       time.Duration // symmetric-RTP latching window after each (re)negotiation (default 5s)
//	    InactivityTimeout time.Duration // no packet in either direction for this long → onInactive (0 = off)
//	    DSCP              int           // DSCP for media sockets (0..63), e.g. 46 (EF)
//	    Transcode         bool          // allow G.711 µ-law↔A-law when the legs share neither
//	}
//	func NewEngine(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Engine, error)
//	func (e *Engine) SetConfig(cfg Config) // hot: Quarantine, LatchWindow, InactivityTimeout, DSCP (re-applied to live sockets), Transcode; the port range needs a restart
//	func (e *Engine) Sessions() int        // active sessions
//	func (e *Engine) Close() error         // closes every session, stops the watchdog; idempotent
//	type Tap interface { WriteRTP(callID string, src, dst netip.AddrPort, payload []byte, t time.Time) }
//	func (e *Engine) SetTap(t Tap)         // hot: every relayed packet, plain, to t (nil = off); *capture.Capture is a Tap
//	func (e *Engine) NewSession(id string, a, b LegConfig, onInactive func()) (*Session, error)
//	func (s *Session) ID() string
//	func (s *Session) Offer(from int, body []byte) ([]byte, error)  // from: 0 = leg a, 1 = leg b; returns the offer for the other leg
//	func (s *Session) Answer(from int, body []byte) ([]byte, error) // answer from `from` to the last offer; returns the answer for the offerer
//	func (s *Session) State() SessionState // plain exported-field snapshot (addresses, keys, SSRC/ROC) for HA replication
//	func (s *Session) Stats() SessionStats // per leg: packets, bytes, loss, jitter, RTT, codec, suite, drops
//	func (s *Session) Close() error        // idempotent; ports go to quarantine
//	var ErrPortsExhausted // → 503
//	var ErrNotAcceptable  // → 488 (no common codec, SRTP mandatory without usable crypto, only T.38/video toward
//	                      //        a leg without it, unsupported key derivation rate / suite / session parameter)
//	var ErrClosed         // the session or engine is closed
//
// NewSession returns ErrNotAcceptable for a leg with SRTP mandatory whose
// signalling is not TLS while AllowInsecureSDES is false (keys would travel
// in clear text): a configuration problem, worth a check at config load.
// No port is taken before the first Offer. onInactive (may be nil) is called
// at most once per silence, from the engine's watchdog goroutine: it must
// not block and must not call Engine.Close (it may call Session.Close).
//
// Metrics (when reg is not nil): esbc_media_dropped_total{leg,reason}
// (reason: source, no_peer, srtp, malformed, send), esbc_media_sessions,
// esbc_media_ports_in_use, esbc_media_ports_exhausted_total,
// esbc_media_panics_total.
//
// Offer/Answer: an initial INVITE is Offer(0, sdp) then Answer(1, sdp); an
// early answer (183) may be followed by the final one: a second Answer call
// replaces the first. Re-INVITE/UPDATE are further Offer/Answer pairs from
// either side: hold (sendonly/recvonly/inactive, the inactivity watchdog is
// suspended while any stream is not sendrecv), resume, codec change, a new
// remote address/port (relatching starts over), a re-key (a new a=crypto
// from the peer gives a new decrypt context; the old one keeps decrypting
// until the new one authenticates a packet, so there is no audible gap).
// esbc keeps the keys it sends toward a leg across re-offers while the
// suite is unchanged and generates fresh ones (crypto/rand) when the suite
// changes or the peer re-keys; the rollover counter carries over to the new
// context. An offer that fails (ErrNotAcceptable) leaves the session as it
// was, so the B2BUA can answer 488 and keep the call.
//
// SDP toward each leg: o= is esbc's own ("-", a random session id, a
// version that moves only when the body changes), c= and the m= ports are
// esbc's, a=rtcp, a=crypto and ICE candidate lines are replaced or removed
// (topology hiding); every other line passes byte for byte (media/sdp).
// Per-leg policy: SRTPMandatory → RTP/SAVP + a=crypto; SRTPOptional →
// RTP/AVP with best-effort a=crypto (SRTP if the peer answers with it);
// SRTPOff → RTP/AVP without crypto. Keys are offered in the order of the
// leg's Suites (a=crypto tags 1..n), by default AES_CM_128_HMAC_SHA1_80,
// AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM, AEAD_AES_256_GCM; toward
// the offerer esbc answers in the suite the offerer listed first among
// those it supports and the offerer's leg Suites allow (any supported
// one when Suites is nil). An offer with no such suite is an offer
// without usable crypto: ErrNotAcceptable with SRTPMandatory or an
// RTP/SAVP offer, plain RTP with SRTPOptional and RTP/AVP. NewSession
// refuses a Suites list with a name outside DefaultSuites or twice. Codecs are filtered by both
// legs' Codecs lists (telephone-event always kept); when nothing is left and
// Transcode is on, G.711 µ-law↔A-law is transcoded by table. rtcp-mux is
// used on a leg when its offer (or answer to our offer carrying it) has it.
//
// RTCP is taken only where it was negotiated (the RTP port with rtcp-mux,
// else the RTCP port), so that one context encrypts each SRTCP stream.
//
// Sequence numbers toward an SRTP peer stay continuous when the source
// restarts its sequence under the same SSRC (else the far end's replay
// window drops the stream); SSRC changes pass through as new sources.
//
// # Concurrency
//
// Offer, Answer, State, Stats and Close are safe for concurrent use (one
// mutex per Session, never taken on the packet path). Each RTP socket has
// one reader goroutine; on Linux every RTCP socket of the engine is served
// by one epoll goroutine (rtcppoll_linux.go; RTCP is ~1 packet per 5 s, a
// goroutine and buffer per socket cost memory for nothing). On Linux the
// RTP goroutines wait in Go's netpoller holding no buffer and borrow one
// from an engine-wide pool per datagram (a buffer per socket is 3 KiB per
// call). Each SRTP key has one context, created on first use (on a
// short-lived goroutine: key derivation runs deeper than the packet path
// and would double the RTP goroutine's stack) and shared by
// the RTP and the RTCP reader that use it (the RTP reader its SRTP half,
// the RTCP reader its SRTCP half: one context per worker would carry an
// unused half each); a mutex per context, uncontended but for the rare
// RTCP packet, serialises them (pion's Context is not goroutine-safe).
// Negotiated parameters reach a reader through an atomic pointer to an
// immutable plan, and the reader switches contexts itself when the plan's
// keys change. The RTP path takes only that uncontended lock and allocates
// nothing in steady state (the RTCP poller holds its own mutex per datagram
// so that a closing session can unregister safely); every loop recovers
// from panics, counts them (esbc_media_panics_total) and goes on.
//
// # Diagnostic tap
//
// SetTap hands every relayed RTP/RTCP packet (and T.38 UDPTL datagram) in
// plain form to a Tap, for the pcapng capture of media/capture: each
// packet twice, once per leg with that leg's real addresses and CallID —
// inbound as received (after SRTP/SRTCP decryption), outbound as about to
// be sent (after transcoding and sequence mapping, before encryption) — so
// that Wireshark shows both sides of the call and plays the audio. esbc's
// own address is the bound one, or the advertised one when bound to the
// unspecified address. The tap is read with one atomic load per packet;
// with none the packet path is unchanged (no lock, no allocation). The Tap
// must not block and must copy what it keeps (see tap.go).
//
// # Strict sources (no RTP bleed)
//
// A packet is relayed only if it comes from the leg's peer: the address
// latched during LatchWindow from the signalled IP (LatchAddr when the far
// end is NATed, else the c= address of the peer's SDP), or after the window
// the exact signalled address and port. Everything else is dropped and
// counted in esbc_media_dropped_total{leg,reason}. With LatchAddr (far-end
// NAT) esbc sends toward LatchAddr and the SDP port until it latches, never
// toward the peer's private SDP address. On an SRTP leg only a
// packet that authenticates can (re)latch, so a spoofed source address
// cannot redirect the media. Media sockets ask for a 1 MiB receive queue
// (capped by net.core.rmem_max) to ride out scheduling stalls.
//
// # Imports
//
// media may import media/sdp, pion/srtp, pion/rtp (header parsing only
// through srtp), zap, prometheus and the standard library; nothing of esbc
// above it. media/capture is a sibling owned separately: media does not
// import it (the composition root passes a *capture.Capture as the Tap);
// the tests do, to keep the two signatures in step.
//
// # RFCs
//
// RFC 3550 (RTP/RTCP; A.1 sequence tracking, A.8 jitter, 6.4.1 round trip),
// RFC 3711 (SRTP/SRTCP), RFC 7714 (AES-GCM), RFC 4568 (SDES), RFC 3264
// (offer/answer, hold), RFC 3605 (a=rtcp), RFC 5761 (rtcp-mux), RFC 4733
// (telephone-event, relayed untouched), RFC 4961 (symmetric RTP),
// ITU-T G.711 (µ-law↔A-law tables).
package media

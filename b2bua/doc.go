// Package b2bua is esbc's back-to-back user agent: every call is two SIP
// dialogs, leg A where the INVITE came in and leg B that esbc creates
// toward the other side (PBX → trunk "outbound", trunk → PBX "inbound"),
// with media anchored by package media in between.
//
// # Owns
//
// Call and Leg state (Dialog: Call-ID, tags, CSeq, route set, remote
// target, the destination the dialog lives at), the A↔B mapping of
// requests and responses, topology hiding (leg B is built from scratch:
// own Call-ID, tags, CSeq, Via, Contact; only allow-listed headers cross),
// target failover inside a call, digest answers toward trunks, drain, the
// one function that maps errors to SIP status codes (Status), call metrics
// (esbc_calls_total{direction,trunk,result}, esbc_calls_active,
// esbc_call_setup_seconds, esbc_calls_unknown_source_total,
// esbc_calls_refused_total, esbc_b2bua_panics_total), the admin view of
// calls and the CallInfo handed to Deps.OnEnd (CDR, capture end) after the
// call's media session is closed, with both legs' SIP Call-IDs; each media
// leg is created with its own dialog's Call-ID (media.LegConfig.CallID) so
// the capture files RTP with that leg's SIP.
//
// # May import
//
// sipgo, zap, prometheus, and the esbc packages media, acl, b2bua/route,
// b2bua/header, b2bua/locate, b2bua/trunk, b2bua/cdr. Nothing under cmd/.
//
// # API
//
//	func New(cfg *Config, deps Deps) (*B2BUA, error)
//	func (b *B2BUA) Register(lan, wan Endpoint) error   // installs every SIP handler; before serving
//	func (b *B2BUA) SetConfig(cfg *Config) error         // new calls; a call keeps its snapshot
//	func (b *B2BUA) Drain(ctx) error                     // 503 + Retry-After to new INVITEs; waits for calls
//	func (b *B2BUA) Close(ctx) error                     // BYE on every call, waits for own goroutines
//	func (b *B2BUA) Calls() []CallInfo; ActiveCalls() int; Draining() bool
//	func (b *B2BUA) Snapshot() []CallSnapshot            // plain-value state of every call (HA)
//	func (b *B2BUA) CallsHandler() http.Handler          // GET /api/v1/calls
//	func JSONHandler(fn func() any) http.Handler         // GET /api/v1/registrations
//	func Status(err error) (int, string); MapResponse(code int) int
//	adapters: TrunkSet(*trunk.Set), MediaAdapter(*media.Engine), RouteTable(*route.Table), CDRRecord(CallInfo)
//
// # Call flow
//
// The INVITE handler goroutine runs the set-up: 100 at once, route, channel,
// media Offer, then leg B's INVITE to each target of the trunk in health
// order (failover on no response within failover_timeout, transport error,
// 503; the last target waits for Timer B); 401/407 are answered with the
// trunk's credentials; 18x (with early-media SDP through media Answer) and
// the final response are relayed to leg A; a 2xx is retransmitted on UDP
// until leg A's ACK, and leg B's 2xx is ACKed when leg A's ACK arrives
// (ACK end to end); each retransmission of leg B's 2xx is ACKed again
// while sipgo keeps leg B's INVITE transaction (64*T1, RFC 6026 Timer M),
// after which the call drops it too (a confirmed call keeps its Dialogs
// and media session, not its set-up messages). A delayed offer (INVITE
// without SDP) is handled: leg B's 2xx offer goes through media Offer and
// leg A's ACK answer is carried in the ACK to leg B. CANCEL from leg A
// cancels leg B (after its first provisional, RFC 3261 §9.1); a 2xx that
// crosses a CANCEL or a BYE is ACKed and ended with BYE. In-dialog
// requests (re-INVITE, UPDATE, INFO,
// OPTIONS, REFER per trunk policy, NOTIFY, MESSAGE) are relayed to the
// other leg with SDP through media Offer/Answer; esbc ACKs re-INVITE 2xx
// on the other leg itself and absorbs the incoming ACK. In-dialog requests
// go to the dialog's Destination, so they stay with the serving target and
// reuse its TLS connection (sipgo issue #361); when that connection is gone
// (a peer's own client connection closed) the request is retried once at
// the peer's Contact. A re-INVITE 2xx is
// retransmitted over UDP until its ACK, and a relayed re-INVITE's
// retransmitted 2xx is ACKed again. REFER toward a trunk carries only the
// number of its Refer-To (sip:user@trunk-domain). Supported/Require that
// cross legs lose 100rel (reliability is per leg, below) and replaces
// (esbc cannot replace across legs). An initial INVITE whose Require lists
// a tag other than 100rel and timer gets 420 Bad Extension with
// Unsupported (ErrBadExtension; esbc_calls_refused_total{reason=
// "bad_extension"}).
//
// Reliable provisional responses (RFC 3262, prack.go) are terminated per
// leg. Leg B's INVITE offers "Supported: 100rel" (not on a delayed
// offer: its offer would come in a reliable 18x and need the answer in the
// PRACK, which esbc does not do; nor toward a trunk whose
// TrunkConfig.NoPRACK is set, prack: false, where leg A's 100rel is kept
// out of the copied Supported/Require too); a reliable 18x from leg
// B (Require: 100rel, RSeq) is PRACKed in its early dialog (RAck: rseq
// cseq INVITE; a digest challenge to the PRACK is answered) once per RSeq:
// the first of its early dialog, then only RSeq+1; a retransmission or an
// out-of-order one is neither PRACKed nor relayed (§4). Toward leg A, 18x
// are reliable only when the caller's INVITE requires 100rel (a caller
// that merely supports it gets them unreliably, as before): Require:
// 100rel and an RSeq of esbc's own, retransmitted at T1 doubling until the
// PRACK, which esbc answers 200 itself (481 when it matches nothing) and
// never relays; one reliable 18x is outstanding at a time; the 2xx waits
// for the PRACK of a reliable 18x with SDP; no PRACK in 64*T1 fails the
// set-up with 500 and cancels leg B (§3). The state is Call.prack
// (PrackState, plain fields, in CallSnapshot.Prack). Not supported: an
// offer in a reliable 18x (late-offer calls keep today's flow: no 100rel
// offered, no SDP relayed in 18x) and an offer in a PRACK (488, the 18x
// is acknowledged all the same).
// Session timers (RFC 4028, timer.go): when leg A's peer supports them,
// Session-Expires/Min-SE cross end to end; when it asks for a timer and leg
// B's 2xx has none, it is made the refresher (Session-Expires
// ...;refresher=uac, Require: timer) and its refreshes cross esbc. When leg
// A's peer does not support timers and Config.SessionExpires is set, esbc
// runs the timer on leg B itself: it offers session_expires/min_se, retries
// once after a 422 with the Min-SE asked, refreshes with UPDATE at half the
// interval when it is the refresher (re-INVITE with esbc's last SDP for
// that leg, unchanged, when the peer's Allow lacks UPDATE or it answered
// 501/405; 408/481/no answer ends the call),
// answers the peer's body-less UPDATE refreshes, and never shows leg A a
// timer it did not ask for. An interval below min_se from a peer that
// supports timers gets 422 with Min-SE. On every leg whose peer is the
// refresher a watchdog ends the call (BYE on both legs, reason "session
// expired") when no 2xx-answered refresh arrives before interval −
// min(32 s, interval/3).
//
// In-dialog ordering (order.go): sipgo hands every message to a goroutine
// of its own; requests from each leg's peer are relayed in CSeq order, and
// a request from leg A after esbc's 2xx only once the ACK of that 2xx is on
// the wire toward leg B (a BYE right behind an ACK never overtakes it). A
// request waits, on its own handler goroutine and at most T1, for its
// predecessor; nothing runs for an idle call.
//
// # Wiring
//
// app's calls.go builds Config from the snapshot, the media engine, the
// resolver, target health, the trunk set and the CDR writer, calls New and
// Register(lan, wan) before the sockets are served, mounts CallsHandler and
// a JSONHandler of registrations and targets, and hooks Drain (SIGTERM),
// SetConfig (reload) and Close. Deps.CountOut feeds
// esbc_sip_messages_total{direction="out"}.
//
// # Concurrency
//
// sipgo runs each message on its own goroutine. B2BUA.mu guards the call
// and dialog maps; Call.mu guards a call's state, both Dialogs and the
// per-leg ordering state (Leg.relayed, Leg.wake). No lock is held across
// network I/O; ackB's sync.Once is the one wait across a write (the ACK to
// leg B), on purpose: whoever needs the ACK out first waits for it. Goroutines started by the B2BUA itself (CANCEL
// senders, timer hang-ups) are counted in a WaitGroup that Close waits for.
// Handlers recover from panics and count them.
//
// # RFCs
//
// RFC 3261 (§8.2.2.3 420 Bad Extension, §9 CANCEL, §12 dialogs, §13.3.1.4
// 2xx retransmission, §15 BYE, §22 digest through b2bua/trunk), RFC 3262
// (§3 UAS: reliable 18x, RSeq, retransmission, 2xx after the PRACK of an
// 18x with SDP, 5xx after 64*T1; §4 UAC: PRACK once per RSeq, in order, per
// early dialog; §7 RSeq/RAck; not §5 offers in PRACK), RFC 3264 (through media), RFC 3325/3323
// (through b2bua/header), RFC 6026 (2xx/ACK handling), RFC 4028 (§7.4 422
// retry, §9 422 with Min-SE, §10 refresh at half the interval and ending
// on 408/481, §10 expiry watchdog when the peer refreshes, §9 Table 2
// refresher choice when answering refreshes).
package b2bua

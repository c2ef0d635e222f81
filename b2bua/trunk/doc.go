// Package trunk is the per-trunk runtime of the B2BUA: everything esbc does
// toward one SIP trunk provider that is not a call.
//
// A Trunk owns, for one `trunks[]` entry of the configuration:
//
//   - the registration client (RFC 3261 §10): REGISTER with digest auth
//     (401 and 407), refresh before expiry, retry with exponential backoff,
//     423 Min-Expires, Contact with the advertised WAN address, NAT detection
//     from received/rport of the 200's Via (RFC 3581) which shortens the
//     refresh interval, unregister (Expires: 0) on Close;
//   - registration failover: on timeout, transport error or 5xx the
//     registration moves to the next target; it returns to the primary
//     (the first target in priority order) once the primary has been healthy
//     for FailbackHoldDown, and then the old binding is removed;
//   - OPTIONS keepalive every OptionsInterval to the serving target and OPTIONS
//     probes of the targets that are down; any answer but 503 brings a target
//     up in the shared locate.Health, no answer within FailoverTimeout, a
//     transport error or 503 takes it down;
//   - the RFC 5626 §3.5.1 double-CRLF keepalive on TCP and TLS connections
//     (sipgo answers pings with a single CRLF on its side); for a registering
//     trunk it also watches the connection to the registrar and, when that
//     connection is lost or replaced, registers again at once over the new
//     one (a trunk that sends calls over the connection esbc opened, esbc
//     behind NAT, could not reach esbc until the next refresh otherwise);
//   - the channel limit (Acquire/Release), and the set of resolved server
//     addresses used as the inbound toll-fraud guard (Owns) and fed to the WAN
//     ACL (Addrs);
//   - the metric esbc_trunk_registrations{trunk,state} (1 for the current
//     state, 0 for the others), esbc_trunk_channels_active{trunk} and
//     esbc_trunk_channels_rejected_total{trunk}.
//
// Authorize answers a digest challenge for any request (REGISTER, INVITE,
// in-dialog requests): it is what the B2BUA calls when a trunk answers
// 401/407. The digest arithmetic is github.com/icholy/digest (the library
// sipgo itself uses); Authorize adds what sipgo v1.7.2's DoDigestAuth lacks:
// it chooses the strongest of several challenges (RFC 8760 §2.4: SHA-256
// before MD5, 401 and 407 both in one response), uses the full Request-URI as
// digest-uri (sipgo drops URI parameters such as ;transport=tcp, RFC 3261
// §22.4 wants the Request-URI as sent), keeps the nonce count per nonce so a
// stale=true challenge or a nonce reused across requests is answered with a
// fresh nc, and does not send the request itself, so the B2BUA can resend
// over the dialog's own connection and destination.
//
// # API
//
//	type Config struct {
//		Name      string        // trunks[].name, metric label
//		Domain    string        // trunk domain: SRV name, host of From/To in REGISTER
//		Transport string        // "udp" | "tcp" | "tls"
//		Servers   []string      // static "host:port" in priority order; empty = DNS SRV
//		AuthMethod string       // "digest" | "ip" (ip: never REGISTER)
//		Username, Password string
//		Register  bool          // REGISTER when AuthMethod is digest
//		RegisterExpires  time.Duration // default 600s
//		OptionsInterval  time.Duration // 0 or < 0: no OPTIONS (options_interval: 0 = off)
//		FailoverTimeout  time.Duration // default 2s: no answer in this time = target down
//		FailbackHoldDown time.Duration // default 60s
//		KeepaliveInterval time.Duration // CRLF ping on tcp/tls; default 30s; < 0 disables
//		NATRefresh       time.Duration // refresh interval when NAT is detected; default 60s
//		RetryMin, RetryMax time.Duration // registration backoff; defaults 2s, 5m
//		Channels   int          // 0 = unlimited
//		ContactHost string      // advertised WAN address (wan.advertise)
//		ContactPort int         // advertised WAN port of this transport
//		UserAgent  string       // security.server_header
//	}
//	func (c Config) Equal(o Config) bool
//
//	type Deps struct {
//		Client   *sipgo.Client     // WAN-side client (sends REGISTER/OPTIONS)
//		UDPClient *sipgo.Client    // optional, for udp trunks: WithClientConnectionAddr(WAN UDP listener)
//		UA       *sipgo.UserAgent  // WAN-side UA (its transport layer carries CRLF pings)
//		Resolver *locate.Resolver  // RFC 3263 targets (static servers bypass DNS)
//		Health   *locate.Health    // shared target health
//		Log      *zap.Logger       // nil = zap.NewNop()
//		Reg      prometheus.Registerer // nil = no metrics registered
//		AddrsChanged func()        // optional: a trunk's resolved addresses changed (or trunks
//		                           // were replaced/removed): re-read Set.Addrs() into the WAN ACL
//	}
//
//	func New(cfg Config, deps Deps) (*Trunk, error)
//	func (t *Trunk) Name() string
//	func (t *Trunk) Config() Config
//	func (t *Trunk) Start(ctx context.Context)  // starts registration, OPTIONS and CRLF loops; returns at once
//	func (t *Trunk) Targets(ctx context.Context) ([]locate.Target, error) // priority order, up targets first
//	func (t *Trunk) Serving() (locate.Target, bool) // the target registration/keepalive currently uses
//	func (t *Trunk) Acquire() bool               // false: over the channels limit → 503
//	func (t *Trunk) Release()
//	func (t *Trunk) Active() int                 // channels in use
//	func (t *Trunk) Owns(addr netip.Addr) bool   // is addr one of the trunk's resolved servers
//	func (t *Trunk) Addrs() []netip.Addr         // resolved server addresses (WAN ACL)
//	func (t *Trunk) Registration() RegState      // for /api/v1/registrations
//	func (t *Trunk) Authorize(req *sip.Request, res *sip.Response) error // Authorize with the trunk's credentials
//	func (t *Trunk) Close(ctx context.Context) error // unregister (Expires: 0), stop loops; idempotent
//
//	func Authorize(req *sip.Request, res *sip.Response, username, password string) error
//	// Retry: a clone of req with credentials, CSeq+1 and no Via, ready to send as a new transaction.
//	func Retry(req *sip.Request, res *sip.Response, username, password string) (*sip.Request, error)
//	var ErrNoChallenge // no answerable digest challenge in the response
//	var ErrAuth        // the registrar rejected the credentials
//
//	type RegState struct {
//		Trunk, State, Target, Contact string // State: disabled|unregistered|registering|registered|failed
//		Expires   time.Duration // granted by the registrar
//		ExpiresAt, LastSuccess time.Time
//		NAT       bool          // received/rport differ from the advertised Contact
//		PublicAddr string       // received:rport as the registrar saw it
//		Failures  int           // consecutive failures
//		RetryIn   time.Duration // backoff before the next attempt after a failure
//		LastError string
//	}                       // MarshalJSON: snake_case keys, expires_seconds, retry_in_seconds
//	const StateDisabled, StateUnregistered, StateRegistering, StateRegistered, StateFailed
//	const AuthDigest, AuthIP; Default* durations
//
//	type Set struct{ ... }           // all trunks by name
//	func NewSet(deps Deps) *Set
//	func (s *Set) Apply(ctx context.Context, cfgs []Config) error
//	        // reload: all configs checked first (any error: nothing changes); unchanged trunks keep
//	        // running, Channels-only changes apply in place, changed trunks are replaced (the old one
//	        // unregisters within ctx; the active channel count carries over), removed ones closed
//	func (s *Set) Get(name string) (*Trunk, bool)
//	func (s *Set) All() []*Trunk      // by name
//	func (s *Set) ByAddr(addr netip.Addr) (*Trunk, bool) // the trunk that owns a source address
//	func (s *Set) Addrs() []netip.Addr
//	func (s *Set) Registrations() []RegState
//	func (s *Set) Close(ctx context.Context) error
//
// # Imports
//
// trunk is part of the B2BUA, so it may import sipgo (and icholy/digest), as
// well as b2bua/locate, zap and prometheus. It imports no other esbc package
// and nothing under cmd/.
//
// # Concurrency
//
// All methods of Trunk and Set are safe for concurrent use. Start launches one
// goroutine per loop (registration, OPTIONS, CRLF keepalive), each owned by
// the Trunk, recovering from panics; Close stops them and waits for them.
// Authorize is a pure function of its arguments except for the shared nonce
// count table (mutex-guarded).
//
// RFCs: 3261 §10 (registration), §22 (authentication); 7616 and 8760
// (digest, SHA-256); 3581 (rport); 5626 §3.5.1 (CRLF keepalive); 3263
// (through b2bua/locate).
package trunk

package app

// calls.go is THE seam between app and call handling (owned by the B2BUA
// issue from now on; app never edits it again).
//
// Contract:
//   - app calls installCalls exactly once per process, after both sides'
//     sipgo UserAgent/Server/Client exist and their sockets are bound, and
//     before any socket is served. installCalls installs every SIP request
//     handler on d.LAN.Server and d.WAN.Server; nothing else in app does.
//   - d.Snapshot() is the configuration in force; d.Subscribe delivers
//     (prev, next) after each successful reload (map Snapshot → b2bua.Config
//     there). d.Admin is the admin mux (mount /api/v1/calls and
//     /api/v1/registrations; app already guards /api/ with the bearer
//     token). d.Registerer registers esbc_ metrics. d.Hooks.OnDrain is
//     called at SIGTERM (refuse new INVITEs with 503, wait for calls to end
//     or ctx); d.Hooks.OnClose releases what installCalls started.
//   - The returned error aborts start-up (exit 1). The returned start
//     function is called once the sockets are served (trunks start there).
//
// What it builds: the media engine, the DNS resolver and target health,
// the trunk runtimes (registration, keepalive, channels), the CDR writer
// and the B2BUA, all from the snapshot; a reload pushes the new snapshot
// into each of them (a call keeps the b2bua.Config it started with).

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"go.uber.org/zap"

	"github.com/esbc/esbc/acl"
	"github.com/esbc/esbc/b2bua"
	"github.com/esbc/esbc/b2bua/cdr"
	"github.com/esbc/esbc/b2bua/header"
	"github.com/esbc/esbc/b2bua/locate"
	"github.com/esbc/esbc/b2bua/route"
	"github.com/esbc/esbc/b2bua/trunk"
	"github.com/esbc/esbc/cmd/esbc/internal/config"
	"github.com/esbc/esbc/media"
	"github.com/esbc/esbc/media/capture"
)

// installCalls builds the call-handling components and installs the B2BUA's
// SIP handlers on both sides. The returned start function starts the trunk
// runtimes (registration, OPTIONS, keepalive): app calls it once the
// sockets are served, since their first requests go out from the UDP
// listening sockets, which sipgo must hold by then.
func installCalls(d CallsDeps) (start func() error, err error) {
	log := d.Logger
	snap := d.Snapshot()

	eng, err := media.NewEngine(mediaConfig(snap), log.Named("media"), d.Registerer)
	if err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	res := locate.NewResolver(locateConfig(snap), log.Named("locate"), d.Registerer)
	health := locate.NewHealth(log.Named("health"), d.Registerer)
	lanUDP, err := udpClient(d.LAN)
	if err != nil {
		_ = eng.Close()
		_ = res.Close()
		return nil, err
	}
	wanUDP, err := udpClient(d.WAN)
	if err != nil {
		_ = eng.Close()
		_ = res.Close()
		return nil, err
	}
	eng.SetTap(mediaTap(d.Capture))
	// trunks is assigned before any trunk starts (Apply), so the
	// AddrsChanged callback, run on the trunks' resolving goroutines, sees it.
	var trunks *trunk.Set
	trunkAddrs := func() {
		if d.Guard != nil {
			d.Guard.SetTrunkAddrs(trunks.Addrs())
		}
	}
	trunks = trunk.NewSet(trunk.Deps{
		Client: d.WAN.Client, UDPClient: wanUDP, UA: d.WAN.UA, Resolver: res, Health: health,
		Log: log.Named("trunk"), Reg: d.Registerer, AddrsChanged: trunkAddrs,
	})
	// Installed before the trunks start: their first REGISTER/OPTIONS may
	// open TLS connections.
	if d.SetTrunkVerifier != nil {
		d.SetTrunkVerifier(func(cs cryptotls.ConnectionState) error {
			return verifyByTrunk(cs, trunks, d.TrunkTLS, d.TLSFailed)
		})
	}
	cdrw, err := cdr.NewWriter(snap.CDR.File, log.Named("cdr"), d.Registerer)
	if err != nil {
		_ = eng.Close()
		_ = res.Close()
		return nil, fmt.Errorf("cdr.file: %w", err)
	}
	closeAll := func(ctx context.Context) error {
		return errors.Join(trunks.Close(ctx), res.Close(), eng.Close(), cdrw.Close())
	}

	cfg, err := b2buaConfig(snap, d)
	if err != nil {
		_ = closeAll(context.Background())
		return nil, err
	}
	b, err := b2bua.New(cfg, b2bua.Deps{
		Log: log, Reg: d.Registerer, Trunks: b2bua.TrunkSet(trunks), Health: health,
		Media: b2bua.MediaAdapter(eng),
		// OnEnd runs after the call's media session is closed: no packet
		// of the call reaches the capture after EndCall.
		OnEnd: func(ci b2bua.CallInfo) {
			cdrw.Write(b2bua.CDRRecord(ci))
			endCapture(d.Capture, ci)
		},
		// No CountOut: app counts every message sent where it leaves
		// (socket wrappers, and the client-connection tracer of
		// captrace.go); counting here too would count most messages twice.
		AuthFailure: func(addr netip.Addr) {
			if d.Guard != nil && d.Guard.ReportAuthFailure(addr) {
				log.Warn("source banned after repeated failures", zap.Stringer("source", addr))
			}
		},
	})
	if err != nil {
		_ = closeAll(context.Background())
		return nil, err
	}
	if err := b.Register(b2bua.Endpoint{Server: d.LAN.Server, Client: d.LAN.Client, UDPClient: lanUDP},
		b2bua.Endpoint{Server: d.WAN.Server, Client: d.WAN.Client, UDPClient: wanUDP}); err != nil {
		_ = closeAll(context.Background())
		return nil, err
	}

	pbx := newPBXResolver(res, d.Guard, log)

	if d.Admin != nil {
		d.Admin.Handle("/api/v1/calls", b.CallsHandler())
		d.Admin.Handle("/api/v1/registrations", b2bua.JSONHandler(func() any {
			return map[string]any{"registrations": trunks.Registrations(), "targets": health.Snapshot()}
		}))
	}

	unsubscribe := d.Subscribe(func(_, next *config.Snapshot) {
		// The edge subscribed first (newEdge runs before installCalls), so
		// a capture rebuilt by this reload is already in force.
		eng.SetTap(mediaTap(d.Capture))
		nc, err := b2buaConfig(next, d)
		if err != nil {
			log.Error("reload: calls config not applied", zap.Error(err))
			return
		}
		if err := b.SetConfig(nc); err != nil {
			log.Error("reload: calls config not applied", zap.Error(err))
			return
		}
		eng.SetConfig(mediaConfig(next))
		res.SetConfig(locateConfig(next))
		if err := cdrw.SetPath(next.CDR.File); err != nil {
			log.Error("reload: cdr.file", zap.Error(err))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := trunks.Apply(ctx, trunkConfigs(next, d)); err != nil {
			log.Error("reload: trunks", zap.Error(err))
		}
		trunkAddrs()
		pbx.resolve(next)
	})

	d.Hooks.OnDrain("calls", b.Drain)
	d.Hooks.OnClose("calls", func(ctx context.Context) error {
		unsubscribe()
		pbx.close()
		if d.SetTrunkVerifier != nil {
			d.SetTrunkVerifier(nil)
		}
		return errors.Join(b.Close(ctx), closeAll(ctx))
	})
	return func() error {
		if err := trunks.Apply(context.Background(), trunkConfigs(d.Snapshot(), d)); err != nil {
			return fmt.Errorf("trunks: %w", err)
		}
		trunkAddrs()
		pbx.resolve(d.Snapshot())
		return nil
	}, nil
}

// verifyByTrunk is the certificate check of trunk servers for the WAN
// UserAgent's client TLS profile (App.verifyTrunkServer: Go's own check is
// off because sipgo dials trunk targets by IP and would match the
// certificate against that IP, while trunk certificates carry names).
//
// The chain is always verified, against wan.tls.ca_file (else the system
// roots), with the names of a trunk's TLS profile (trunks[].tls.server_name,
// else its domain). When the handshake names its server (cs.ServerName is
// an address of a trunk's resolved servers) only that trunk's profile is
// tried. sipgo dials by IP and Go sends and reports no IP as server name,
// so in practice the certificate must satisfy the profile of one
// configured TLS trunk: with several TLS trunks, a certificate of one
// trunk's CA and name is also accepted from another trunk's server (the
// binding is per configuration, not per dialled address). A refusal is
// reported once (log and esbc_tls_handshake_failures_total).
func verifyByTrunk(cs cryptotls.ConnectionState, trunks *trunk.Set, profile func(string) (*cryptotls.Config, error),
	failed func(peer string, err error)) error {
	check := func(name string) error {
		cfg, err := profile(name)
		if err != nil {
			return err
		}
		if cfg.VerifyConnection == nil {
			return fmt.Errorf("tls: trunk %s: profile without verification", name)
		}
		return cfg.VerifyConnection(cs)
	}
	var names []string
	if a, err := netip.ParseAddr(cs.ServerName); err == nil {
		if t, ok := trunks.ByAddr(a); ok {
			names = append(names, t.Name())
		}
	}
	if len(names) == 0 {
		var other []string
		for _, t := range trunks.All() {
			if t.Config().Transport == "tls" {
				names = append(names, t.Name())
			} else {
				other = append(other, t.Name())
			}
		}
		if len(names) == 0 {
			names = other
		}
	}
	var errs []error
	for _, n := range names {
		err := check(n)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(names) == 0 {
		errs = append(errs, errors.New("no trunk configured"))
	}
	err := fmt.Errorf("tls: no trunk profile accepts the server certificate %s: %w", certLabel(cs), errors.Join(errs...))
	if failed != nil {
		failed(certLabel(cs), err)
	}
	return err
}

// certLabel names the server of a handshake for the log: the SNI when
// there is one, else the leaf certificate's subject and names.
func certLabel(cs cryptotls.ConnectionState) string {
	if cs.ServerName != "" {
		return cs.ServerName
	}
	if len(cs.PeerCertificates) == 0 {
		return "(no certificate)"
	}
	c := cs.PeerCertificates[0]
	return fmt.Sprintf("subject=%q dns=%v issuer=%q", c.Subject.String(), c.DNSNames, c.Issuer.String())
}

// pbxResolver keeps the guard's PBX set (trusted: never rate limited nor
// banned) on the addresses of lan.pbx.uri when its host is a name; an IP
// host is in the edge's static policy already (aclConfig).
type pbxResolver struct {
	res    *locate.Resolver
	guard  *acl.Guard
	log    *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	gen    atomic.Uint64 // the latest resolve; an older lookup finishing late is dropped
}

func newPBXResolver(res *locate.Resolver, g *acl.Guard, log *zap.Logger) *pbxResolver {
	ctx, cancel := context.WithCancel(context.Background())
	return &pbxResolver{res: res, guard: g, log: log, ctx: ctx, cancel: cancel}
}

// resolve looks the PBX up in the background (bounded) and installs the
// addresses; the reload goroutine is never held by DNS.
func (p *pbxResolver) resolve(s *config.Snapshot) {
	if p.guard == nil {
		return
	}
	gen := p.gen.Add(1)
	hostPort, transport, ok := pbxName(s.LAN.PBX.URI)
	if !ok {
		p.guard.SetPBXAddrs(nil)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		defer cancel()
		host, _, _ := net.SplitHostPort(hostPort)
		ts, err := p.res.Lookup(ctx, host, transport, []string{hostPort})
		if err != nil {
			if p.ctx.Err() == nil {
				p.log.Warn("lan.pbx.uri: cannot resolve the PBX (it is not exempt from rate limits and bans)", zap.String("host", host), zap.Error(err))
			}
			return
		}
		var addrs []netip.Addr
		for _, t := range ts {
			addrs = append(addrs, t.Addr.Addr().Unmap())
		}
		if p.gen.Load() == gen {
			p.guard.SetPBXAddrs(addrs)
		}
	}()
}

func (p *pbxResolver) close() {
	p.cancel()
	p.wg.Wait()
}

// pbxName returns "host:port" and the transport of a SIP URI whose host is
// a name (ok false for an IP host or an unparseable URI).
func pbxName(uri string) (hostPort, transport string, ok bool) {
	u := strings.TrimSpace(uri)
	scheme, rest, found := strings.Cut(u, ":")
	if !found || (!strings.EqualFold(scheme, "sip") && !strings.EqualFold(scheme, "sips")) {
		return "", "", false
	}
	transport, port := "udp", "5060"
	if strings.EqualFold(scheme, "sips") {
		transport, port = "tls", "5061"
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	hp, params, _ := strings.Cut(rest, ";")
	for _, kv := range strings.Split(params, ";") {
		if k, v, _ := strings.Cut(kv, "="); strings.EqualFold(k, "transport") && v != "" {
			transport = strings.ToLower(v)
		}
	}
	hp, _, _ = strings.Cut(hp, "?")
	host := hp
	if h, p, err := net.SplitHostPort(hp); err == nil {
		host, port = h, p
	}
	if host == "" || strings.HasPrefix(host, "[") {
		return "", "", false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return "", "", false
	}
	return net.JoinHostPort(host, port), transport, true
}

// mediaTap is the media engine's tap for capture c: c in the modes that
// capture RTP (call, all), else none. A nil *capture.Capture must not
// become a non-nil media.Tap.
func mediaTap(capt func() *capture.Capture) media.Tap {
	if capt == nil {
		return nil
	}
	c := capt()
	if c == nil {
		return nil
	}
	switch c.Mode() {
	case capture.ModeCall, capture.ModeAll:
		return c
	}
	return nil
}

// endCapture closes the per-call capture files of an ended call: both
// legs' Call-IDs, and the call's own id (the media session id, which the
// media tap uses for a leg without a Call-ID).
func endCapture(capt func() *capture.Capture, ci b2bua.CallInfo) {
	if capt == nil {
		return
	}
	c := capt()
	if c.Mode() != capture.ModeCall {
		return
	}
	c.EndCall(ci.ID)
	for _, l := range ci.Legs {
		if l.CallID != "" {
			c.EndCall(l.CallID)
		}
	}
}

// udpClient is a client of side s that sends from its UDP listening
// socket (nil when the side has no UDP listener): the PBX and UDP trunks see
// requests from the address they send to, not from a fresh ephemeral socket
// per transaction as sipgo does otherwise.
func udpClient(s *SideSIP) (*sipgo.Client, error) {
	for _, l := range s.Listeners {
		if l.Network == "udp" {
			opts := []sipgo.ClientOption{sipgo.WithClientConnectionAddr(l.Addr.String())}
			if s.Advertise != "" {
				opts = append(opts, sipgo.WithClientHostname(s.Advertise))
			}
			c, err := sipgo.NewClient(s.UA, opts...)
			if err != nil {
				return nil, fmt.Errorf("%s udp client: %w", s.Side, err)
			}
			return c, nil
		}
	}
	return nil, nil
}

// b2buaConfig maps a snapshot to the B2BUA's configuration.
func b2buaConfig(s *config.Snapshot, d CallsDeps) (*b2bua.Config, error) {
	rc := route.Config{
		Numbering: route.Numbering{CountryCode: s.Numbering.CountryCode, NationalPrefix: s.Numbering.NationalPrefix,
			InternationalPrefix: s.Numbering.InternationalPrefix},
		Emergency:           s.Routes.Emergency,
		Special:             s.Routes.Special,
		InboundCallerFormat: s.Routes.InboundCallerFormat,
	}
	for _, r := range s.Routes.Outbound {
		rc.Outbound = append(rc.Outbound, route.Outbound{Match: r.Match, Number: r.Number, Trunk: r.Trunk})
	}
	for _, r := range s.Routes.Inbound {
		rc.Inbound = append(rc.Inbound, route.Inbound{Match: r.Match, Extension: r.Extension})
	}
	for _, t := range s.Trunks {
		rc.Trunks = append(rc.Trunks, route.Trunk{Name: t.Name, Emergency: t.Emergency})
	}
	rt, err := route.Compile(rc)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	lanAdv := advertise(s.LAN.Advertise, d.LAN)
	wanAdv := advertise(s.WAN.Advertise, d.WAN)
	cfg := &b2bua.Config{
		LAN:            b2bua.Side{Advertise: lanAdv, Ports: ports(d.LAN), Hosts: hosts(d.LAN)},
		WAN:            b2bua.Side{Advertise: wanAdv, Ports: ports(d.WAN), Hosts: hosts(d.WAN)},
		PBX:            s.LAN.PBX.URI,
		PBXTrusted:     s.LAN.PBX.Trusted,
		Router:         b2bua.RouteTable(rt),
		ServerHeader:   s.Security.ServerHeader,
		AllowHeaders:   s.Headers.Allow,
		MaxDuration:    s.Calls.MaxDuration,
		SessionExpires: s.Calls.SessionExpires,
		MinSE:          s.Calls.MinSE,
		RetryAfter:     s.ShutdownGrace,
		LANMethods:     s.Security.Methods.LAN,
		WANMethods:     s.Security.Methods.WAN,
		Trunks:         make(map[string]b2bua.TrunkConfig, len(s.Trunks)),
	}
	cfg.E164, cfg.CallerForPBX = rt.E164, rt.CallerForPBX
	if cfg.ToLAN, err = headerPolicy(s, s.LAN.PBX.HeaderRules); err != nil {
		return nil, fmt.Errorf("lan.pbx.header_rules: %w", err)
	}
	if cfg.ToWAN, err = headerPolicy(s, nil); err != nil {
		return nil, fmt.Errorf("headers: %w", err)
	}
	cfg.LANMedia = media.LegConfig{Name: "lan", BindAddr: bindAddr(d.LAN), Advertise: ipOf(lanAdv), SRTP: media.SRTPOff}
	cfg.WANMedia = media.LegConfig{Name: "wan", BindAddr: bindAddr(d.WAN), Advertise: ipOf(wanAdv), SRTP: media.SRTPMandatory}
	for _, t := range s.Trunks {
		ml := cfg.WANMedia
		ml.SRTP = srtpPolicy(t.SRTP)
		ml.AllowInsecureSDES = t.AllowSDESInsecure
		ml.Codecs = t.Codecs
		ml.Video, ml.T38 = t.Video, t.T38
		ml.Suites = t.SRTPSuites // nil/empty: media's default list
		var hp *header.Compiled
		if len(t.HeaderRules) > 0 {
			if hp, err = headerPolicy(s, t.HeaderRules); err != nil {
				return nil, fmt.Errorf("trunks[%s].header_rules: %w", t.Name, err)
			}
		}
		cfg.Trunks[t.Name] = b2bua.TrunkConfig{
			Headers: hp,
			Name:    t.Name, Domain: t.Domain, Transport: t.Transport, FromUser: t.FromUser,
			CallerID: t.CallerID, AllowedCallerIDs: t.AllowedCallerIDs, TrustPAI: t.TrustPAI,
			ReferRelay: t.Refer == "relay", FailoverTimeout: t.FailoverTimeout, MaxDuration: t.MaxCallDuration,
			FarEndNAT: t.FarEndNAT, NoPRACK: !t.PRACK, Media: ml,
		}
	}
	return cfg, nil
}

// headerPolicy compiles the global header policy plus side rules.
func headerPolicy(s *config.Snapshot, extra []config.HeaderRule) (*header.Compiled, error) {
	p := header.Policy{Allow: s.Headers.Allow, ServerHeader: s.Security.ServerHeader}
	for _, r := range append(append([]config.HeaderRule(nil), s.Headers.Rules...), extra...) {
		p.Rules = append(p.Rules, header.Rule{Action: r.Action, Header: r.Header, Match: r.Match, Value: r.Value})
	}
	return header.CompilePolicy(p)
}

func trunkConfigs(s *config.Snapshot, d CallsDeps) []trunk.Config {
	out := make([]trunk.Config, 0, len(s.Trunks))
	wp := ports(d.WAN)
	for _, t := range s.Trunks {
		out = append(out, trunk.Config{
			Name: t.Name, Domain: t.Domain, Transport: t.Transport, Servers: t.Servers,
			AuthMethod: t.Auth.Method, Username: t.Auth.Username, Password: t.Auth.Password,
			Register: t.Auth.Register, RegisterExpires: t.Auth.RegisterExpires,
			OptionsInterval: t.OptionsInterval, FailoverTimeout: t.FailoverTimeout,
			FailbackHoldDown: t.FailbackHolddown, Channels: t.Channels,
			ContactHost: advertise(s.WAN.Advertise, d.WAN), ContactPort: wp[t.Transport],
			UserAgent: s.Security.ServerHeader,
		})
	}
	return out
}

func mediaConfig(s *config.Snapshot) media.Config {
	return media.Config{
		PortMin: s.RTPPortMin, PortMax: s.RTPPortMax, Quarantine: s.Media.Quarantine,
		LatchWindow: s.Media.LatchWindow, InactivityTimeout: s.Media.InactivityTimeout,
		DSCP: s.Media.DSCP.RTP, Transcode: s.Media.Transcode,
	}
}

func locateConfig(s *config.Snapshot) locate.Config {
	return locate.Config{Servers: s.DNS.Servers, Timeout: s.DNS.Timeout, Stale: s.DNS.Stale}
}

func srtpPolicy(p string) media.SRTPPolicy {
	switch p {
	case "off":
		return media.SRTPOff
	case "optional":
		return media.SRTPOptional
	}
	return media.SRTPMandatory
}

// advertise is the configured address of a side, else its first bound IP.
func advertise(configured string, s *SideSIP) string {
	if configured != "" {
		return configured
	}
	if a := bindAddr(s); a.IsValid() && !a.IsUnspecified() {
		return a.String()
	}
	return "127.0.0.1"
}

// ports maps each transport of a side to its bound port.
func ports(s *SideSIP) map[string]int {
	out := map[string]int{}
	for _, l := range s.Listeners {
		if _, p, err := net.SplitHostPort(l.Addr.String()); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				if _, ok := out[l.Network]; !ok {
					out[l.Network] = n
				}
			}
		}
	}
	return out
}

// hosts lists the IPs a side listens on.
func hosts(s *SideSIP) []string {
	var out []string
	for _, l := range s.Listeners {
		if h, _, err := net.SplitHostPort(l.Addr.String()); err == nil {
			out = append(out, h)
		}
	}
	return out
}

// bindAddr is the IP media sockets of a side bind on: the side's first
// listener's IP (unspecified when it listens on all addresses).
func bindAddr(s *SideSIP) netip.Addr {
	for _, l := range s.Listeners {
		if h, _, err := net.SplitHostPort(l.Addr.String()); err == nil {
			if a, err := netip.ParseAddr(h); err == nil {
				return a.Unmap()
			}
		}
	}
	return netip.IPv4Unspecified()
}

func ipOf(host string) netip.Addr {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a
}

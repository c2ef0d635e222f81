package app

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"

	"github.com/esbc/esbc/cmd/esbc/internal/config"
	esbctls "github.com/esbc/esbc/tls"
)

// Version and Commit are set at build time with
// -ldflags "-X github.com/esbc/esbc/cmd/esbc/internal/app.Version=..."
var (
	Version = "dev"
	Commit  = "unknown"
)

// Options configure Run.
type Options struct {
	// ConfigPath is the YAML file. If it does not exist and Explicit is
	// false, Run uses the embedded loopback default.
	ConfigPath string
	Explicit   bool
	// Stderr receives the logs (default os.Stderr).
	Stderr io.Writer
	// Signals delivers SIGHUP/SIGTERM/SIGINT; nil means the process's own.
	Signals <-chan os.Signal
	// WatchDebounce is the quiet time after a file event before a reload
	// (default 300ms).
	WatchDebounce time.Duration
	// OnReady, if set, is called once everything listens.
	OnReady func(*App)
}

// App is one running esbc. Its methods are for tests and the admin API.
type App struct {
	o       Options
	log     *zap.Logger
	level   zap.AtomicLevel
	m       *metrics
	store   *config.Store
	initial *config.Snapshot
	certs   *esbctls.Store
	tlsM    *esbctls.Metrics
	admin   *admin
	edge    *edge
	hooks   hooks
	ready   atomic.Bool
	drain   atomic.Bool

	lan, wan *SideSIP
	closers  []io.Closer    // sockets and UAs app opened, closed in reverse
	pending  []servePending // bound sockets waiting for serveSide
	serving  sync.WaitGroup

	watchdog <-chan time.Time // systemd watchdog ticks (nil outside systemd)
	watcher  *watcher

	reloadMu sync.Mutex // serialises reloads
	restart  atomic.Pointer[[]string]

	// trunkVerify checks trunk server certificates for the WAN UA's client
	// TLS profile; installed by installCalls (it needs the trunk set).
	trunkVerify atomic.Pointer[func(cryptotls.ConnectionState) error]
	untrace     func() // stops feeding the capture with client-connection writes
}

// Run runs esbc until ctx ends or SIGTERM, and returns the exit code.
func Run(ctx context.Context, o Options) int {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.WatchDebounce == 0 {
		o.WatchDebounce = 300 * time.Millisecond
	}
	snap, err := config.Load(o.ConfigPath)
	embedded := false
	if errors.Is(err, config.ErrNotFound) && !o.Explicit {
		snap, err, embedded = config.Embedded(), nil, true
	}
	if err != nil {
		printConfigError(o.Stderr, err)
		return 1
	}
	a := &App{o: o, initial: snap, m: newMetrics()}
	a.level = levelOf(snap.Log.Level)
	a.log = newLogger(snap.Log.Format, a.level, o.Stderr)
	defer func() { _ = a.log.Sync() }()
	if embedded {
		a.log.Warn("no configuration file: running on the embedded loopback default (LAN udp+tcp 127.0.0.1:5060, WAN tls 127.0.0.1:5061, self-signed certificate)",
			zap.String("looked_for", o.ConfigPath))
	}
	a.store = config.NewStore(snap)
	a.m.generation.Set(float64(snap.Generation))
	empty := []string{}
	a.restart.Store(&empty)

	// Watch from the moment the file was read, so that no change made
	// while starting is missed.
	a.watcher = newWatcher(a.log.Named("watch"), a.watchedFiles, o.WatchDebounce)
	defer a.watcher.close()

	if err := a.start(ctx); err != nil {
		a.log.Error("start failed", zap.Error(err))
		a.stop(context.Background())
		return 1
	}
	a.log.Info("esbc ready", zap.String("version", Version), zap.String("config", snap.Source))
	notify(daemon.SdNotifyReady)
	if o.OnReady != nil {
		o.OnReady(a)
	}
	return a.loop(ctx)
}

// printConfigError writes one line per error; a failed write to stderr has
// nowhere else to be reported, so its error is dropped.
func printConfigError(w io.Writer, err error) {
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			_, _ = fmt.Fprintln(w, e.Error())
		}
		return
	}
	_, _ = fmt.Fprintln(w, err.Error())
}

func levelOf(s string) zap.AtomicLevel {
	l, err := zap.ParseAtomicLevel(s)
	if err != nil {
		return zap.NewAtomicLevelAt(zap.InfoLevel)
	}
	return l
}

func newLogger(format string, level zap.AtomicLevel, w io.Writer) *zap.Logger {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	enc := zapcore.NewJSONEncoder(encCfg)
	if format == "console" {
		encCfg = zap.NewDevelopmentEncoderConfig()
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	ws := zapcore.Lock(zapcore.AddSync(w))
	return zap.New(zapcore.NewCore(enc, ws, level), zap.ErrorOutput(ws))
}

// Snapshot returns the configuration in force.
func (a *App) Snapshot() *config.Snapshot { return a.store.Current() }

// Listeners returns the sockets bound for side.
func (a *App) Listeners(side Side) []BoundListener {
	if side == SideLAN {
		return a.lan.Listeners
	}
	return a.wan.Listeners
}

// AdminAddr returns the admin listener's address ("" when disabled).
func (a *App) AdminAddr() string {
	if a.admin == nil || a.admin.ln == nil {
		return ""
	}
	return a.admin.ln.Addr().String()
}

func (a *App) start(ctx context.Context) error {
	snap := a.store.Current()
	a.tlsM = esbctls.NewMetrics(a.m.reg)
	a.certs = esbctls.NewStore()
	if err := a.loadCertificate(snap); err != nil {
		return err
	}
	subscribe := func(fn func(prev, next *config.Snapshot)) func() { return a.store.Subscribe(fn) }

	status := func() any { return a.status() }
	a.admin = newAdmin(a.log.Named("admin"), a.m, a.store.Current, &a.ready, status)
	if snap.Admin.Listen != "" {
		if err := a.admin.listen(ctx, snap.Admin.Listen); err != nil {
			return fmt.Errorf("admin.listen %s: %w", snap.Admin.Listen, err)
		}
		a.log.Info("admin listener bound", zap.String("addr", a.admin.ln.Addr().String()))
	}

	e, err := newEdge(EdgeDeps{Logger: a.log.Named("edge"), Snapshot: a.store.Current, Subscribe: subscribe,
		Admin: a.admin.mux, Registerer: a.m.reg, Hooks: &a.hooks})
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	a.edge = e

	if a.lan, err = a.buildSide(ctx, SideLAN, snap); err != nil {
		return err
	}
	if a.wan, err = a.buildSide(ctx, SideWAN, snap); err != nil {
		return err
	}
	pbx := func() netip.Addr {
		ip, _ := uriHostAddr(a.store.Current().LAN.PBX.URI)
		return ip
	}
	a.untrace = traceClientWrites(a.edge.capture, a.m.countSIP, pbx, a.lan, a.wan)
	startCalls, err := installCalls(CallsDeps{
		Logger: a.log.Named("calls"), Snapshot: a.store.Current, Subscribe: subscribe,
		LAN: a.lan, WAN: a.wan, Admin: a.admin.mux, Registerer: a.m.reg, Hooks: &a.hooks,
		TrunkTLS: a.trunkTLS,
		Guard:    a.edge.guard(), Capture: a.edge.capture,
		SetTrunkVerifier: func(f func(cryptotls.ConnectionState) error) {
			if f == nil {
				a.trunkVerify.Store(nil)
				return
			}
			a.trunkVerify.Store(&f)
		},
		TLSFailed: func(peer string, err error) { a.tlsM.Failed(a.log, string(SideWAN), peer, err) },
	})
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	a.serveSide(a.lan)
	a.serveSide(a.wan)
	a.waitServing(a.lan)
	a.waitServing(a.wan)
	if err := startCalls(); err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	if a.admin.ln != nil {
		a.admin.serve()
	}
	a.ready.Store(true)
	return nil
}

// loadCertificate installs the WAN certificate (or, on the embedded
// default, a self-signed one made in memory).
func (a *App) loadCertificate(s *config.Snapshot) error {
	if s.WAN.TLS.CertFile != "" {
		return a.certs.Load(s.WAN.TLS.CertFile, s.WAN.TLS.KeyFile)
	}
	if a.certs.Certificate() != nil {
		return nil
	}
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if s.WAN.Advertise != "" {
		hosts = append(hosts, s.WAN.Advertise)
	}
	c, err := esbctls.SelfSigned(hosts, 365*24*time.Hour)
	if err != nil {
		return err
	}
	a.certs.Set(c)
	if s.Embedded || hasTLS(s) {
		a.log.Warn("using an in-memory self-signed TLS certificate: trunks will not trust it; set wan.tls.cert_file")
	}
	return nil
}

func hasTLS(s *config.Snapshot) bool {
	for _, l := range append(slices.Clone(s.LANListen), s.WANListen...) {
		if l.Network == "tls" {
			return true
		}
	}
	return false
}

func (a *App) serverTLS() *cryptotls.Config {
	v, _ := esbctls.ParseMinVersion(a.initial.WAN.TLS.MinVersion)
	cfg := esbctls.ServerConfig(a.certs, v)
	// min_version is hot: look it up at every handshake.
	cfg.GetConfigForClient = func(*cryptotls.ClientHelloInfo) (*cryptotls.Config, error) {
		mv, _ := esbctls.ParseMinVersion(a.store.Current().WAN.TLS.MinVersion)
		if mv == v {
			return nil, nil
		}
		c := esbctls.ServerConfig(a.certs, mv)
		return c, nil
	}
	return cfg
}

// trunkTLS builds the client profile toward trunk from the snapshot in
// force. Its VerifyConnection does not report failures: the caller
// (verifyByTrunk, which may try several trunks' profiles for one
// handshake) reports a refusal once through CallsDeps.TLSFailed.
func (a *App) trunkTLS(name string) (*cryptotls.Config, error) {
	s := a.store.Current()
	t := s.Trunk(name)
	if t == nil {
		return nil, fmt.Errorf("trunk %q: not configured", name)
	}
	mv, _ := esbctls.ParseMinVersion(s.WAN.TLS.MinVersion)
	sn := t.TLS.ServerName
	if sn == "" {
		sn = t.Domain
	}
	return esbctls.ClientConfig(esbctls.ClientOptions{
		CAFile: s.WAN.TLS.CAFile, ServerName: sn, CertFile: t.TLS.ClientCertFile, KeyFile: t.TLS.ClientKeyFile,
		MinVersion: mv,
	})
}

// verifyTrunkServer is the VerifyConnection of the WAN UserAgent's client
// TLS profile (see buildSide): the check installed by installCalls, or a
// refusal before it is installed (no trunk is known yet).
func (a *App) verifyTrunkServer(cs cryptotls.ConnectionState) error {
	f := a.trunkVerify.Load()
	if f == nil {
		return errors.New("tls: trunk verifier not installed")
	}
	return (*f)(cs)
}

// defaultClientTLS is the WAN UA's TLS profile for dials that do not go
// through trunkTLS: CAs of wan.tls.ca_file (else system), min_version.
func defaultClientTLS(s *config.Snapshot) (*cryptotls.Config, error) {
	mv, _ := esbctls.ParseMinVersion(s.WAN.TLS.MinVersion)
	cfg := &cryptotls.Config{MinVersion: mv}
	if s.WAN.TLS.CAFile != "" {
		pem, err := os.ReadFile(s.WAN.TLS.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AppendCertsFromPEM(pem)
	}
	return cfg, nil
}

func (a *App) buildSide(ctx context.Context, side Side, s *config.Snapshot) (*SideSIP, error) {
	listens, advertise := s.LANListen, s.LAN.Advertise
	if side == SideWAN {
		listens, advertise = s.WANListen, s.WAN.Advertise
	}
	log := a.log.Named("sip").With(zap.String("side", string(side)))
	slogger := slog.New(zapslog.NewHandler(log.Core(), zapslog.WithName("sipgo")))
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent(s.Security.ServerHeader),
		sipgo.WithUserAgentTransportLayerOptions(append([]sip.TransportLayerOption{sip.WithTransportLayerLogger(slogger)},
			a.edge.transportOptions(side)...)...),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slogger)),
	}
	if advertise != "" {
		uaOpts = append(uaOpts, sipgo.WithUserAgentHostname(advertise))
	}
	if side == SideWAN {
		ct, err := defaultClientTLS(s)
		if err != nil {
			return nil, fmt.Errorf("wan.tls.ca_file: %w", err)
		}
		// sipgo dials trunk targets by IP and would verify the certificate
		// against that IP (trunk certificates carry names). Go's own check
		// is skipped; verifyTrunkServer does the whole verification
		// instead: the chain against wan.tls.ca_file (else the system
		// roots) and the names of the trunks' TLS profiles.
		ct.InsecureSkipVerify = true
		ct.VerifyConnection = a.verifyTrunkServer
		uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(ct))
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, fmt.Errorf("%s user agent: %w", side, err)
	}
	a.closers = append(a.closers, ua)
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(slogger))
	if err != nil {
		return nil, fmt.Errorf("%s server: %w", side, err)
	}
	cliOpts := []sipgo.ClientOption{sipgo.WithClientLogger(slogger)}
	if advertise != "" {
		cliOpts = append(cliOpts, sipgo.WithClientHostname(advertise))
	}
	cli, err := sipgo.NewClient(ua, cliOpts...)
	if err != nil {
		return nil, fmt.Errorf("%s client: %w", side, err)
	}
	ss := &SideSIP{Side: side, UA: ua, Server: srv, Client: cli, Advertise: advertise}
	count := func(direction, method string) { a.m.countSIP(side, direction, method) }
	ua.TransportLayer().OnMessage(func(msg sip.Message) {
		switch m := msg.(type) {
		case *sip.Request:
			count("in", string(m.Method))
		case *sip.Response:
			if cs := m.CSeq(); cs != nil {
				count("in", string(cs.MethodName))
			}
		}
	})

	lc := listenConfig(s.Media.DSCP.SIP, func(err error) {
		log.Warn("cannot set DSCP on SIP socket", zap.Int("dscp", s.Media.DSCP.SIP), zap.Error(err))
	})
	for _, l := range listens {
		key := fmt.Sprintf("%s.listen %s://%s", side, l.Network, l.Addr)
		var bound net.Addr
		switch l.Network {
		case "udp":
			pc, err := listenPacket(ctx, lc, l.Addr)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			a.closers = append(a.closers, pc)
			bound = pc.LocalAddr()
			ss.Listeners = append(ss.Listeners, BoundListener{Network: "udp", Addr: bound})
			a.pending = append(a.pending, servePending{side: ss, udp: &countingPacketConn{PacketConn: a.edge.wrapPacketConn(side, pc), count: count}})
		case "tcp", "tls":
			ln, err := listenStream(ctx, lc, l.Addr)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			a.closers = append(a.closers, ln)
			bound = ln.Addr()
			wrapped := a.edge.wrapListener(side, ln)
			p := servePending{side: ss}
			if l.Network == "tls" {
				// edge below TLS (accept-time ACL on the raw socket) and
				// above it (per-message policy on the decrypted stream).
				tl := esbctls.NewListener(wrapped, a.serverTLS(), string(side), log, a.tlsM)
				p.tls = &countingListener{Listener: a.edge.wrapTLSListener(side, tl), count: count}
			} else {
				p.tcp = &countingListener{Listener: wrapped, count: count}
			}
			ss.Listeners = append(ss.Listeners, BoundListener{Network: l.Network, Addr: bound})
			a.pending = append(a.pending, p)
		}
		log.Info("sip listener bound", zap.String("network", l.Network), zap.String("addr", bound.String()))
	}
	return ss, nil
}

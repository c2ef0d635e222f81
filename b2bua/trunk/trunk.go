package trunk

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/esbc/esbc/b2bua/locate"
)

// Deps are the shared components a Trunk works with. Client and Resolver
// are required; a nil Health gets a private one, a nil Log zap.NewNop(), a
// nil Reg registers no metrics.
type Deps struct {
	Client *sipgo.Client // WAN-side client: sends REGISTER and OPTIONS
	// UDPClient, when set, is used instead of Client by udp trunks: a client
	// made WithClientConnectionAddr(the WAN UDP listening socket), so that
	// REGISTER/OPTIONS leave from the advertised port (the registrar's rport
	// then matches the Contact: no false NAT) instead of a fresh ephemeral
	// socket per request. (A client bound that way cannot dial TCP/TLS.)
	UDPClient *sipgo.Client
	UA        *sipgo.UserAgent      // WAN-side UA: its transport layer carries CRLF pings; nil disables them
	Resolver  *locate.Resolver      // RFC 3263 targets; static servers bypass DNS
	Health    *locate.Health        // target health shared with the B2BUA
	Log       *zap.Logger           // nil = zap.NewNop()
	Reg       prometheus.Registerer // nil = no metrics registered
	// AddrsChanged, when set, is called after a trunk's resolved server
	// addresses changed (first resolution included), on the goroutine that
	// resolved them: the app re-reads Set.Addrs() into the WAN ACL (SPEC §4:
	// an empty allow list follows the trunks' servers). It must not block.
	AddrsChanged func()
}

// Trunk is the runtime of one trunk. See the package documentation.
type Trunk struct {
	cfg  Config // immutable after New
	deps Deps
	log  *zap.Logger
	m    *metrics
	ch   *channels // may be shared with the Trunk this one replaced

	mu          sync.Mutex
	addrs       map[netip.Addr]struct{} // guarded by mu: addresses of the last lookup
	serving     locate.Target           // guarded by mu: target of registration / keepalive
	haveServing bool                    // guarded by mu
	regFlow     flow                    // guarded by mu: connection of the last successful REGISTER
	reg         RegState                // guarded by mu
	sess        regSession              // guarded by mu
	started     bool                    // guarded by mu
	closed      bool                    // guarded by mu
	cancel      context.CancelFunc      // guarded by mu: stops the loops

	wg   sync.WaitGroup // the loops
	kick chan struct{}  // keepalive → registration: a target went down
	// reflow: keepalive → registration: the connection to the registrar
	// was lost or replaced; register again now, over the new one.
	reflow chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// channels counts calls against a limit. It outlives a Trunk replaced at
// reload so that calls up on the old Trunk still count.
type channels struct {
	limit atomic.Int64 // 0 = unlimited
	n     atomic.Int64
}

// New checks cfg, applies the defaults and returns a Trunk that does nothing
// until Start.
func New(cfg Config, deps Deps) (*Trunk, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.Client == nil || deps.Resolver == nil {
		return nil, fmt.Errorf("trunk %q: deps: client and resolver are required", cfg.Name)
	}
	if deps.Log == nil {
		deps.Log = zap.NewNop()
	}
	if deps.Health == nil {
		deps.Health = locate.NewHealth(deps.Log, nil)
	}
	t := &Trunk{
		cfg:    cfg,
		deps:   deps,
		log:    deps.Log.With(zap.String("trunk", cfg.Name)),
		m:      newMetrics(deps.Reg),
		ch:     &channels{},
		addrs:  map[netip.Addr]struct{}{},
		kick:   make(chan struct{}, 1),
		reflow: make(chan struct{}, 1),
	}
	t.ch.limit.Store(int64(cfg.Channels))
	t.reg = RegState{Trunk: cfg.Name, State: StateUnregistered}
	if !cfg.registers() {
		t.reg.State = StateDisabled
	}
	t.sess = newRegSession()
	return t, nil
}

// Name returns the trunk's name.
func (t *Trunk) Name() string { return t.cfg.Name }

// Config returns the trunk's configuration with the defaults applied.
func (t *Trunk) Config() Config {
	c := t.cfg
	c.Servers = slices.Clone(c.Servers)
	c.Channels = int(t.ch.limit.Load())
	return c
}

// Start sets the hold-down in Health and launches the registration, OPTIONS
// and CRLF keepalive loops; it returns at once. The loops end when ctx ends
// or at Close. Start after Close, or a second Start, does nothing.
func (t *Trunk) Start(ctx context.Context) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started || t.closed {
		return
	}
	t.started = true
	t.deps.Health.SetHoldDown(t.cfg.Name, t.cfg.FailbackHoldDown)
	t.m.setState(t.cfg.Name, t.reg.State)
	t.m.active.WithLabelValues(t.cfg.Name).Set(float64(t.ch.n.Load()))
	ctx, t.cancel = context.WithCancel(ctx)
	if t.cfg.registers() {
		t.goLoop(ctx, "register", t.regLoop)
	}
	if t.cfg.OptionsInterval > 0 {
		t.goLoop(ctx, "options", t.optionsLoop)
	} else {
		// Without OPTIONS nobody refreshes the addresses for Owns: do it once.
		t.goLoop(ctx, "lookup", func(ctx context.Context) { _, _ = t.Targets(ctx) })
	}
	if t.cfg.KeepaliveInterval > 0 && t.cfg.Transport != "udp" && t.deps.UA != nil {
		t.goLoop(ctx, "crlf", t.crlfLoop)
	}
}

// goLoop runs loop on its own goroutine until it returns; a panic is logged
// and the loop restarted, unless ctx has ended.
func (t *Trunk) goLoop(ctx context.Context, name string, loop func(context.Context)) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for ctx.Err() == nil {
			if !t.runLoop(ctx, name, loop) {
				return
			}
		}
	}()
}

// runLoop reports whether loop panicked.
func (t *Trunk) runLoop(ctx context.Context, name string, loop func(context.Context)) (panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			t.log.Error("trunk loop panic", zap.String("loop", name), zap.Any("panic", r), zap.Stack("stack"))
			panicked = true
		}
	}()
	loop(ctx)
	return false
}

// Close stops the loops and, when registered, removes the binding
// (REGISTER with Expires: 0) within ctx. It is idempotent; later calls
// return the first call's result.
func (t *Trunk) Close(ctx context.Context) error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		cancel := t.cancel
		t.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		t.wg.Wait()
		t.closeErr = t.unregister(ctx)
		t.m.forget(t.cfg.Name)
	})
	return t.closeErr
}

// Targets resolves the trunk's servers and returns them in the order to try:
// up targets first (past their fail-back hold-down before those still in
// it), each group in priority order. It also refreshes the addresses that
// Owns and Addrs report.
func (t *Trunk) Targets(ctx context.Context) ([]locate.Target, error) {
	ts, err := t.deps.Resolver.Lookup(ctx, t.cfg.Domain, t.cfg.Transport, t.cfg.Servers)
	if err != nil {
		return nil, fmt.Errorf("trunk %s: targets: %w", t.cfg.Name, err)
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("trunk %s: targets: %w", t.cfg.Name, locate.ErrNoTargets)
	}
	addrs := make(map[netip.Addr]struct{}, len(ts))
	for _, x := range ts {
		addrs[x.Addr.Addr().Unmap()] = struct{}{}
	}
	t.mu.Lock()
	changed := !maps.Equal(t.addrs, addrs)
	t.addrs = addrs
	t.mu.Unlock()
	if changed && t.deps.AddrsChanged != nil {
		t.deps.AddrsChanged()
	}
	return t.deps.Health.Order(t.cfg.Name, ts), nil
}

// Serving returns the target that registration (or, for a trunk that does
// not register, the OPTIONS keepalive) uses now.
func (t *Trunk) Serving() (locate.Target, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serving, t.haveServing
}

func (t *Trunk) setServing(x locate.Target) {
	t.mu.Lock()
	t.serving, t.haveServing = x, true
	t.mu.Unlock()
}

// Acquire takes a channel for a call; false means the trunk is at its
// channels limit (the B2BUA answers 503). Every true must be paired with
// one Release.
func (t *Trunk) Acquire() bool {
	for {
		n, limit := t.ch.n.Load(), t.ch.limit.Load()
		if limit > 0 && n >= limit {
			t.m.rejected.WithLabelValues(t.cfg.Name).Inc()
			return false
		}
		if t.ch.n.CompareAndSwap(n, n+1) {
			t.m.active.WithLabelValues(t.cfg.Name).Inc()
			return true
		}
	}
}

// Release gives back a channel taken by Acquire.
func (t *Trunk) Release() {
	if t.ch.n.Add(-1) < 0 {
		t.ch.n.Add(1)
		t.log.Error("trunk channel released more often than acquired")
		return
	}
	t.m.active.WithLabelValues(t.cfg.Name).Dec()
}

// Active returns the number of channels in use.
func (t *Trunk) Active() int { return int(t.ch.n.Load()) }

// Owns reports whether addr is an address of one of the trunk's servers as
// last resolved (the inbound toll-fraud guard). IPv4-mapped IPv6 addresses
// match their IPv4 form.
func (t *Trunk) Owns(addr netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.addrs[addr.Unmap()]
	return ok
}

// Addrs returns the trunk's server addresses as last resolved, sorted.
func (t *Trunk) Addrs() []netip.Addr {
	t.mu.Lock()
	out := make([]netip.Addr, 0, len(t.addrs))
	for a := range t.addrs {
		out = append(out, a)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// Authorize answers the challenge res to req with the trunk's credentials
// (see the package-level Authorize).
func (t *Trunk) Authorize(req *sip.Request, res *sip.Response) error {
	if t.cfg.AuthMethod != AuthDigest {
		return fmt.Errorf("trunk %s: challenged but auth method is %s: %w", t.cfg.Name, t.cfg.AuthMethod, ErrNoChallenge)
	}
	return Authorize(req, res, t.cfg.Username, t.cfg.Password)
}

// hostOf returns the host of "host:port" (or the string itself without a port).
func hostOf(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return h
}

// markDown takes x down in Health and wakes the registration loop.
func (t *Trunk) markDown(x locate.Target, reason string) {
	t.deps.Health.MarkDown(t.cfg.Name, x, reason)
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

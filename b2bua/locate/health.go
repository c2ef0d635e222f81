package locate

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// DefaultHoldDown is how long a target that came back up waits before it is
// preferred again, unless SetHoldDown says otherwise for its trunk.
const DefaultHoldDown = 30 * time.Second

// TargetState is one row of Health.Snapshot (admin API).
type TargetState struct {
	Trunk     string    `json:"trunk"`
	Target    string    `json:"target"` // Target.String()
	Up        bool      `json:"up"`
	Preferred bool      `json:"preferred"` // up and past its hold-down
	Since     time.Time `json:"since"`     // last change (or first seen)
	Reason    string    `json:"reason,omitempty"`
}

// Health is the per-trunk health table of targets. Targets never reported
// are up. It is safe for concurrent use and never blocks on I/O.
type Health struct {
	log   *zap.Logger
	gauge *prometheus.GaugeVec
	now   func() time.Time // clock; replaced by tests

	mu     sync.Mutex
	trunks map[string]*trunkHealth // guarded by mu
}

type trunkHealth struct {
	holdDown time.Duration
	targets  map[string]*targetHealth // key Target.String()
}

type targetHealth struct {
	up      bool
	wasDown bool // has been down at least once: hold-down applies after MarkUp
	since   time.Time
	reason  string
}

// NewHealth returns an empty health table. It exports
// esbc_trunk_target_up{trunk,target} (1 up, 0 down) when reg is not nil.
func NewHealth(log *zap.Logger, reg prometheus.Registerer) *Health {
	if log == nil {
		log = zap.NewNop()
	}
	return &Health{
		log: log,
		gauge: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "esbc_trunk_target_up",
			Help: "Whether a trunk's server target is considered up (1) or down (0).",
		}, []string{"trunk", "target"})),
		now:    time.Now,
		trunks: make(map[string]*trunkHealth),
	}
}

// trunk returns the trunk's table, creating it. Callers hold h.mu.
func (h *Health) trunk(name string) *trunkHealth {
	th := h.trunks[name]
	if th == nil {
		th = &trunkHealth{holdDown: DefaultHoldDown, targets: make(map[string]*targetHealth)}
		h.trunks[name] = th
	}
	return th
}

// target returns the target's state, creating it up. Callers hold h.mu.
func (h *Health) target(trunk string, th *trunkHealth, key string, now time.Time) *targetHealth {
	ts := th.targets[key]
	if ts == nil {
		ts = &targetHealth{up: true, since: now}
		th.targets[key] = ts
		h.gauge.WithLabelValues(trunk, key).Set(1)
	}
	return ts
}

// SetHoldDown sets the trunk's fail-back hold-down (negative = 0).
func (h *Health) SetHoldDown(trunk string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trunk(trunk).holdDown = max(d, 0)
}

// MarkDown records that t failed (transport or TLS error, no answer within
// failover_timeout, 503, failed OPTIONS probe). Only a change is logged.
func (h *Health) MarkDown(trunk string, t Target, reason string) {
	now := h.now()
	key := t.String()
	h.mu.Lock()
	ts := h.target(trunk, h.trunk(trunk), key, now)
	changed := ts.up
	ts.reason = reason
	if changed {
		ts.up, ts.wasDown, ts.since = false, true, now
		h.gauge.WithLabelValues(trunk, key).Set(0)
	}
	h.mu.Unlock()
	if changed {
		h.log.Warn("trunk target down", zap.String("trunk", trunk), zap.String("target", key), zap.String("reason", reason))
	}
}

// MarkUp records that t answered (a response, an OPTIONS probe). A target
// that was down is preferred again only after the trunk's hold-down.
func (h *Health) MarkUp(trunk string, t Target) {
	now := h.now()
	key := t.String()
	h.mu.Lock()
	th := h.trunk(trunk)
	ts := h.target(trunk, th, key, now)
	changed := !ts.up
	if changed {
		ts.up, ts.since, ts.reason = true, now, ""
		h.gauge.WithLabelValues(trunk, key).Set(1)
	}
	hold := th.holdDown
	h.mu.Unlock()
	if changed {
		h.log.Info("trunk target up", zap.String("trunk", trunk), zap.String("target", key), zap.Duration("hold_down", hold))
	}
}

// Up reports whether t is up (never reported = up), regardless of hold-down.
func (h *Health) Up(trunk string, t Target) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	th := h.trunks[trunk]
	if th == nil {
		return true
	}
	ts := th.targets[t.String()]
	return ts == nil || ts.up
}

// Preferred reports whether t is up and past its fail-back hold-down (never
// reported = preferred): a registration should move back to it.
func (h *Health) Preferred(trunk string, t Target) bool {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	th := h.trunks[trunk]
	if th == nil {
		return true
	}
	ts := th.targets[t.String()]
	return ts == nil || ts.preferred(now, th.holdDown)
}

// preferred: up, and either never down or back for at least the hold-down.
func (ts *targetHealth) preferred(now time.Time, hold time.Duration) bool {
	return ts.up && (!ts.wasDown || now.Sub(ts.since) >= hold)
}

// Order returns a new slice with ts in three groups, each keeping the input
// (RFC 2782) order: preferred targets, then targets that are up but still in
// their fail-back hold-down, then down targets (last, so that a call still
// tries them when everything is down). Targets seen for the first time are
// recorded as up so that the admin API and the metric list them.
func (h *Health) Order(trunk string, ts []Target) []Target {
	now := h.now()
	out := make([]Target, 0, len(ts))
	var holding, down []Target
	h.mu.Lock()
	th := h.trunk(trunk)
	for _, t := range ts {
		st := h.target(trunk, th, t.String(), now)
		switch {
		case st.preferred(now, th.holdDown):
			out = append(out, t)
		case st.up:
			holding = append(holding, t)
		default:
			down = append(down, t)
		}
	}
	h.mu.Unlock()
	out = append(out, holding...)
	return append(out, down...)
}

// Snapshot lists every known target, sorted by trunk then target.
func (h *Health) Snapshot() []TargetState {
	now := h.now()
	h.mu.Lock()
	var out []TargetState
	for name, th := range h.trunks {
		for key, ts := range th.targets {
			out = append(out, TargetState{Trunk: name, Target: key, Up: ts.up,
				Preferred: ts.preferred(now, th.holdDown), Since: ts.since, Reason: ts.reason})
		}
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Trunk != out[j].Trunk {
			return out[i].Trunk < out[j].Trunk
		}
		return out[i].Target < out[j].Target
	})
	return out
}

// Forget drops a trunk's state and metric series (trunk removed at reload).
func (h *Health) Forget(trunk string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if th := h.trunks[trunk]; th != nil {
		for key := range th.targets {
			h.gauge.DeleteLabelValues(trunk, key)
		}
	}
	delete(h.trunks, trunk)
}

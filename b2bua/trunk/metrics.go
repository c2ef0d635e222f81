package trunk

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Registration states of RegState.State and of the state label.
const (
	StateDisabled     = "disabled"     // the trunk does not register (ip auth or register: false)
	StateUnregistered = "unregistered" // not registered yet, or unregistered at Close
	StateRegistering  = "registering"  // a REGISTER is in flight
	StateRegistered   = "registered"   // the registrar accepted the binding
	StateFailed       = "failed"       // the last attempt failed; retrying with backoff
)

var allStates = [...]string{StateDisabled, StateUnregistered, StateRegistering, StateRegistered, StateFailed}

// metrics are shared by all trunks registered on the same Registerer.
type metrics struct {
	registrations *prometheus.GaugeVec   // esbc_trunk_registrations{trunk,state}
	active        *prometheus.GaugeVec   // esbc_trunk_channels_active{trunk}
	rejected      *prometheus.CounterVec // esbc_trunk_channels_rejected_total{trunk}
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		registrations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "esbc_trunk_registrations",
			Help: "Registration state per trunk: 1 for the current state, 0 for the others.",
		}, []string{"trunk", "state"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "esbc_trunk_channels_active",
			Help: "Calls holding a channel of the trunk.",
		}, []string{"trunk"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_trunk_channels_rejected_total",
			Help: "Calls refused because the trunk was at its channels limit.",
		}, []string{"trunk"}),
	}
	if reg != nil {
		m.registrations = register(reg, m.registrations)
		m.active = register(reg, m.active)
		m.rejected = register(reg, m.rejected)
	}
	return m
}

// register registers c, or returns the collector already registered under
// the same name so that several trunks (and a trunk replaced at reload)
// share one series family.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

func (m *metrics) setState(trunk, state string) {
	for _, s := range allStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.registrations.WithLabelValues(trunk, s).Set(v)
	}
}

func (m *metrics) forget(trunk string) {
	for _, s := range allStates {
		m.registrations.DeleteLabelValues(trunk, s)
	}
	m.active.DeleteLabelValues(trunk)
	m.rejected.DeleteLabelValues(trunk)
}

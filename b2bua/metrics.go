package b2bua

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esbc/esbc/b2bua/route"
)

// metrics are the B2BUA's Prometheus series (esbc_ prefix).
type metrics struct {
	calls     *prometheus.CounterVec // direction, trunk, result
	active    prometheus.Gauge
	setup     *prometheus.HistogramVec // direction
	tollFraud prometheus.Counter
	refused   *prometheus.CounterVec // side, reason
	ended     *prometheus.CounterVec // reason (answered calls)
	panics    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_calls_total", Help: "Calls ended, by direction, trunk and result.",
		}, []string{"direction", "trunk", "result"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esbc_calls_active", Help: "Calls in progress.",
		}),
		setup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "esbc_call_setup_seconds", Help: "Time from INVITE to 2xx.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30},
		}, []string{"direction"}),
		tollFraud: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esbc_calls_unknown_source_total", Help: "INVITEs from WAN sources that are no trunk server (refused).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_calls_refused_total", Help: "INVITEs refused before a leg B was attempted, by side and reason.",
		}, []string{"side", "reason"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_calls_ended_total", Help: "Answered calls ended, by who or what ended them.",
		}, []string{"reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esbc_b2bua_panics_total", Help: "Panics recovered in SIP handlers.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.active, m.setup, m.tollFraud, m.refused, m.ended, m.panics} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, err
				}
			}
		}
	}
	return m, nil
}

func (m *metrics) done(direction, trunk, result string, _ float64) {
	m.calls.WithLabelValues(direction, trunk, result).Inc()
}

// hungUp counts an answered call that ended, by endedReason(reason).
func (m *metrics) hungUp(reason string) {
	m.ended.WithLabelValues(endedReason(reason)).Inc()
}

// endedReason is the reason label of esbc_calls_ended_total for a call's
// end reason (Call.Reason, the CDR's reason): a fixed set, so the series
// stay few.
func endedReason(reason string) string {
	switch reason {
	case "bye from lan":
		return "bye_lan"
	case "bye from wan":
		return "bye_wan"
	case "media inactivity":
		return "media_inactivity"
	case "max duration":
		return "max_duration"
	case "session expired":
		return "session_expired"
	case "session refresh failed":
		return "session_refresh_failed"
	case "no ACK":
		return "no_ack"
	case "shutdown":
		return "shutdown"
	}
	return "other"
}

// rejected counts an INVITE refused before a leg B was attempted (onInvite).
func (m *metrics) rejected(side, reason string) {
	m.refused.WithLabelValues(side, reason).Inc()
}

// refusedReason is the reason label of esbc_calls_refused_total: a fixed
// set, so the series stay few.
func refusedReason(err error) string {
	switch {
	case errors.Is(err, ErrDraining):
		return "draining"
	case errors.Is(err, ErrNotTrunk):
		return "unknown_source"
	case errors.Is(err, ErrBadRequest):
		return "bad_request"
	case errors.Is(err, ErrIntervalTooSmall):
		return "interval_too_small"
	case errors.Is(err, ErrBadExtension):
		return "bad_extension"
	case errors.Is(err, ErrChannels):
		return "channels"
	case errors.Is(err, ErrNoRoute), errors.Is(err, route.ErrNoRoute):
		return "no_route"
	case errors.Is(err, ErrInvalidNumber), errors.Is(err, route.ErrInvalidNumber):
		return "invalid_number"
	case errors.Is(err, ErrEmergencyBlocked), errors.Is(err, route.ErrEmergencyBlocked):
		return "emergency_blocked"
	}
	return "other"
}

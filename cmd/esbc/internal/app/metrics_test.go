package app

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}

// counterReaches waits (bounded) until c reaches want and returns its
// value: a message is counted right after it is written, so the peer may
// see it a moment before the counter moves.
func counterReaches(t *testing.T, c prometheus.Counter, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for counterValue(c) < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return counterValue(c)
}

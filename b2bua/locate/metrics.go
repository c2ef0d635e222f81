package locate

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// register registers c with reg (nil = don't) and returns the collector that
// is registered: an earlier identical one when it already exists, so that a
// reload building a new Resolver or Health keeps counting in the same series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
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

type resolverMetrics struct {
	queries *prometheus.CounterVec // type, result
	cache   *prometheus.CounterVec // result
	// Children resolved once: the hit path runs on every call.
	hit, miss, refresh, stale prometheus.Counter
}

func newResolverMetrics(reg prometheus.Registerer) *resolverMetrics {
	m := &resolverMetrics{
		queries: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_dns_queries_total",
			Help: "DNS queries sent by the trunk resolver, by record type and result (one per server tried).",
		}, []string{"type", "result"})),
		cache: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_dns_cache_total",
			Help: "DNS cache lookups of the trunk resolver: hit, miss, refresh (ahead of expiry) and stale (expired answer served because DNS failed).",
		}, []string{"result"})),
	}
	m.hit = m.cache.WithLabelValues("hit")
	m.miss = m.cache.WithLabelValues("miss")
	m.refresh = m.cache.WithLabelValues("refresh")
	m.stale = m.cache.WithLabelValues("stale")
	return m
}

package acl

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Reason is why the edge refused a packet, a message or a connection. Its
// String is the value of the metric label "reason".
type Reason uint8

// Reasons. ReasonNone means accepted.
const (
	ReasonNone           Reason = iota
	ReasonDenied                // source not allowed by the side's allow/deny (or not a trunk on the WAN)
	ReasonBanned                // source banned
	ReasonRateLimit             // source over security.rate_limit
	ReasonOversize              // message over max_message_bytes (400 on UDP where routable)
	ReasonUserAgent             // User-Agent on the deny list (silent)
	ReasonVersion               // SIP version other than 2.0 (505 where routable)
	ReasonTooManyHeaders        // more than max_headers header fields (400)
	ReasonLineTooLong           // a header line over max_line_bytes (400)
	ReasonMalformed             // unparseable start line, header or Content-Length (400 where routable)
	ReasonMethod                // method not accepted on this side (405)
	ReasonTooManyHops           // Max-Forwards: 0 (483)
	ReasonFraming               // stream framing error: the connection is closed
	ReasonPanic                 // the filter itself panicked (counted, packet dropped)
	ReasonConnLimit             // too many open TCP/TLS connections from one source
	ReasonSlow                  // a message on a stream not completed within MessageTimeout: closed
	numReasons
)

var reasonNames = [numReasons]string{
	"none", "denied", "banned", "rate_limit", "oversize", "user_agent", "version",
	"too_many_headers", "line_too_long", "malformed", "method", "too_many_hops",
	"framing", "panic", "conn_limit", "slow_message",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// metrics holds the esbc_acl_* collectors with their label values resolved
// up front, so the hot path never allocates for a label lookup.
type metrics struct {
	dropped     [2][numReasons]prometheus.Counter
	rateLimited [2]prometheus.Counter
	bans        [3]prometheus.Counter // by banReason
	evictions   prometheus.Counter
	responses   [2]prometheus.Counter
	collectors  []prometheus.Collector
}

func newMetrics(banned func() float64) *metrics {
	m := &metrics{}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "esbc_acl_dropped_total",
		Help: "SIP packets, messages and connections refused at the edge, by side and reason.",
	}, []string{"side", "reason"})
	rl := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "esbc_acl_rate_limited_total",
		Help: "SIP messages dropped because their source was over security.rate_limit.",
	}, []string{"side"})
	bans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "esbc_acl_bans_total",
		Help: "Sources banned, by reason (rate_limit, auth_failure, manual).",
	}, []string{"reason"})
	ev := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "esbc_acl_table_evictions_total",
		Help: "Per-source entries evicted because the source table was full (spoofed-source flood).",
	})
	resp := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "esbc_acl_responses_total",
		Help: "Error responses (400/405/483/505) sent by the edge itself, by side.",
	}, []string{"side"})
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "esbc_acl_banned",
		Help: "Sources currently banned.",
	}, banned)
	for s := LAN; s <= WAN; s++ {
		for r := ReasonDenied; r < numReasons; r++ {
			m.dropped[s][r] = dropped.WithLabelValues(s.String(), r.String())
		}
		m.rateLimited[s] = rl.WithLabelValues(s.String())
		m.responses[s] = resp.WithLabelValues(s.String())
	}
	for r := banRate; r <= banManual; r++ {
		m.bans[r] = bans.WithLabelValues(r.String())
	}
	m.evictions = ev
	m.collectors = []prometheus.Collector{dropped, rl, bans, ev, resp, gauge}
	return m
}

func (m *metrics) drop(s Side, r Reason) {
	if r > ReasonNone && r < numReasons {
		m.dropped[s&1][r].Inc()
	}
	if r == ReasonRateLimit {
		m.rateLimited[s&1].Inc()
	}
}

package app

import (
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are app's own series, on app's own registry.
type metrics struct {
	reg             *prometheus.Registry
	reloads         *prometheus.CounterVec // esbc_config_reload_total{result}
	restartRequired prometheus.Gauge       // esbc_config_restart_required
	generation      prometheus.Gauge       // esbc_config_generation
	sipMessages     *prometheus.CounterVec // esbc_sip_messages_total{side,direction,method}
	panics          *prometheus.CounterVec // esbc_panics_total{component}
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_config_reload_total",
			Help: "Configuration reloads by result (success|error).",
		}, []string{"result"}),
		restartRequired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esbc_config_restart_required",
			Help: "1 when the configuration in force changed settings that apply only after a restart.",
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esbc_config_generation",
			Help: "Generation of the configuration in force (1 at start, +1 per successful reload).",
		}),
		sipMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_sip_messages_total",
			Help: "SIP messages by side, direction (in|out) and method (CSeq method for responses).",
		}, []string{"side", "direction", "method"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_panics_total",
			Help: "Recovered panics by component.",
		}, []string{"component"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "esbc_build_info",
		Help: "Build information; the value is always 1.",
	}, []string{"version", "commit", "goversion"})
	buildInfo.WithLabelValues(Version, Commit, runtime.Version()).Set(1)
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("error")
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, m.reloads, m.restartRequired, m.generation, m.sipMessages, m.panics,
	)
	return m
}

// countSIP counts one message; method is normalised to a known token so
// that a peer cannot blow up the label space.
func (m *metrics) countSIP(side Side, direction, method string) {
	m.sipMessages.WithLabelValues(string(side), direction, methodLabel(method)).Inc()
}

var knownMethodLabels = map[string]bool{
	"INVITE": true, "ACK": true, "BYE": true, "CANCEL": true, "OPTIONS": true, "INFO": true, "UPDATE": true,
	"PRACK": true, "NOTIFY": true, "REFER": true, "SUBSCRIBE": true, "MESSAGE": true, "REGISTER": true, "PUBLISH": true,
}

func methodLabel(m string) string {
	m = strings.ToUpper(m)
	if knownMethodLabels[m] {
		return m
	}
	return "other"
}

// sipMethodOf extracts the request method, or for a response its CSeq
// method, from the start of a serialised SIP message ("" if none).
func sipMethodOf(b []byte) string {
	line := b
	if i := indexCRLF(b); i >= 0 {
		line = b[:i]
	}
	if len(line) >= 8 && string(line[:8]) == "SIP/2.0 " {
		return cseqMethod(b)
	}
	for i, c := range line {
		if c == ' ' {
			return string(line[:i])
		}
	}
	return ""
}

func indexCRLF(b []byte) int {
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\r' && b[i+1] == '\n' {
			return i
		}
	}
	return -1
}

// cseqMethod finds "CSeq: <n> <METHOD>" in the header section.
func cseqMethod(b []byte) string {
	s := string(b)
	if end := strings.Index(s, "\r\n\r\n"); end >= 0 {
		s = s[:end]
	}
	for _, line := range strings.Split(s, "\r\n")[1:] {
		name, val, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "CSeq") {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 2 {
			return f[1]
		}
	}
	return ""
}

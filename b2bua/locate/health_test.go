package locate

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func tgt(host, addr string, prio uint16) Target {
	return Target{Host: host, Addr: netip.MustParseAddrPort(addr), Transport: "tls", Priority: prio}
}

func hosts(ts []Target) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Host)
	}
	return strings.Join(s, " ")
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, trunk, target string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "esbc_trunk_target_up" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labels(m)["trunk"] == trunk && labels(m)["target"] == target {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func TestHealthOrderAndHoldDown(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := NewHealth(nil, reg)
	clk := newFakeClock()
	h.now = clk.Now
	h.SetHoldDown("skype", 30*time.Second)
	p, s1, s2 := tgt("p", "127.0.0.1:5061", 10), tgt("s1", "127.0.0.2:5061", 20), tgt("s2", "[::1]:5061", 20)
	all := []Target{p, s1, s2}

	steps := []struct {
		name  string
		do    func()
		order string
		pUp   bool
	}{
		{"unknown targets are up, RFC order kept", func() {}, "p s1 s2", true},
		{"primary down goes last", func() { h.MarkDown("skype", p, "timeout") }, "s1 s2 p", false},
		{"repeated down changes nothing", func() { h.MarkDown("skype", p, "503") }, "s1 s2 p", false},
		{"all down: order kept, all tried", func() { h.MarkDown("skype", s1, "tls"); h.MarkDown("skype", s2, "tls") }, "p s1 s2", false},
		{"secondary back first (hold-down applies to it too, but it beats down ones)", func() { h.MarkUp("skype", s2) }, "s2 p s1", false},
		{"primary back: up but in hold-down, after preferred s2", func() { clk.Advance(40 * time.Second); h.MarkUp("skype", p) }, "s2 p s1", true},
		{"hold-down not yet over", func() { clk.Advance(29 * time.Second) }, "s2 p s1", true},
		{"hold-down over: primary preferred again", func() { clk.Advance(time.Second) }, "p s2 s1", true},
		{"s1 back, in hold-down", func() { h.MarkUp("skype", s1) }, "p s2 s1", true},
	}
	for _, st := range steps {
		st.do()
		if got := hosts(h.Order("skype", all)); got != st.order {
			t.Fatalf("%s: order %q, want %q", st.name, got, st.order)
		}
		if got, want := h.Preferred("skype", p), st.pUp && strings.HasPrefix(st.order, "p "); got != want {
			t.Fatalf("%s: Preferred(p) = %v, want %v", st.name, got, want)
		}
		if got := h.Up("skype", p); got != st.pUp {
			t.Fatalf("%s: Up(p) = %v, want %v", st.name, got, st.pUp)
		}
		v, ok := gaugeValue(t, reg, "skype", p.String())
		if !ok || (v == 1) != st.pUp {
			t.Fatalf("%s: gauge %v (present %v), want up=%v", st.name, v, ok, st.pUp)
		}
	}
	// Other trunks are independent; the default hold-down applies there.
	if !h.Up("other", p) || hosts(h.Order("other", all)) != "p s1 s2" {
		t.Error("state leaked to another trunk")
	}
	h.MarkDown("other", p, "x")
	h.MarkUp("other", p)
	clk.Advance(DefaultHoldDown - time.Second)
	if got := hosts(h.Order("other", all)); got != "s1 s2 p" {
		t.Errorf("default hold-down: %q", got)
	}
	clk.Advance(time.Second)
	if got := hosts(h.Order("other", all)); got != "p s1 s2" {
		t.Errorf("after default hold-down: %q", got)
	}

	snap := h.Snapshot()
	if len(snap) != 6 || snap[0].Trunk != "other" || snap[3].Trunk != "skype" {
		t.Fatalf("snapshot %+v", snap)
	}
	for _, ts := range snap {
		if ts.Trunk == "skype" && ts.Target == s1.String() && (!ts.Up || !ts.Preferred || ts.Reason != "") {
			t.Errorf("s1 state %+v", ts)
		}
	}
	h.MarkDown("skype", s2, "OPTIONS timeout")
	for _, ts := range h.Snapshot() {
		if ts.Target == s2.String() && ts.Trunk == "skype" && (ts.Up || ts.Reason != "OPTIONS timeout" || !ts.Since.Equal(clk.Now())) {
			t.Errorf("s2 state %+v", ts)
		}
	}

	h.Forget("skype")
	if _, ok := gaugeValue(t, reg, "skype", p.String()); ok {
		t.Error("series kept after Forget")
	}
	if len(h.Snapshot()) != 3 {
		t.Errorf("snapshot after Forget: %+v", h.Snapshot())
	}
}

func TestHealthZeroHoldDownAndRegistryReuse(t *testing.T) {
	reg := prometheus.NewRegistry()
	h1 := NewHealth(nil, reg)
	h2 := NewHealth(nil, reg) // a second table (reload) shares the series
	h2.SetHoldDown("t", 0)
	a, b := tgt("a", "127.0.0.1:5061", 0), tgt("b", "127.0.0.2:5061", 1)
	h2.MarkDown("t", a, "x")
	if v, ok := gaugeValue(t, reg, "t", a.String()); !ok || v != 0 {
		t.Fatalf("gauge %v %v", v, ok)
	}
	h2.MarkUp("t", a)
	if got := hosts(h2.Order("t", []Target{a, b})); got != "a b" {
		t.Errorf("zero hold-down: %q", got)
	}
	if !h1.Up("t", a) || !h1.Preferred("t", a) {
		t.Error("unknown trunk must be up")
	}
}

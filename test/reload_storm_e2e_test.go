//go:build e2e

package test

// SPEC §6 "Reload: under load, zero calls lost" for inbound calls,
// black-box: a trunk (sipgo over UDP) calls through the built binary to
// the PBX (sipgo over UDP, RTP echo) at a steady rate while the
// configuration storm of TestReloadUnderLoad (reloadStorm: valid changes
// of live settings interleaved with invalid files, SIGHUPs, bursts of
// SIGHUPs and changes left to the file watcher) runs. Each valid step
// also moves the inbound route to another PBX extension, so the PBX sees
// which configuration every call was routed by.

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	stormCalls  = 150
	stormRate   = 20 // calls per second
	stormHold   = 2 * time.Second
	stormNumber = "+14155550123"
)

// stormExt is the PBX extension the inbound route of step k names.
func stormExt(k int) string { return fmt.Sprintf("%d", 1000+k) }

// stormConfig is reloadConfig with an inbound route to stormExt(v.k)
// (also written into the invalid files: their extension must never be
// seen at the PBX).
func stormConfig(v reloadVariant, n reloadNet) []byte {
	route := fmt.Sprintf("routes:\n  inbound:\n    - { match: '^\\+1\\d{10}$', extension: %q }\n  outbound:\n", stormExt(v.k))
	return []byte(strings.Replace(string(reloadConfig(v, n)), "routes:\n  outbound:\n", route, 1))
}

// TestReloadStormInbound: 150 inbound calls (trunk → esbc → PBX) at 20/s,
// each held 2 s, during a configuration storm. Every call is set up and
// ends normally (0 failed; a BYE at the PBX for each); the calls up before
// the storm keep their media through it; every 10th call checks media;
// every configuration change is counted in esbc_config_reload_total by
// result (valid ones success, invalid ones error, the previous
// configuration staying in force after each error); the inbound route in
// force routes each new call (only valid steps' extensions at the PBX,
// several of them).
func TestReloadStormInbound(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary under load")
	}
	failoverLeakCheck(t)
	dir := t.TempDir()
	pbx := newEdgeUA(t, "pbx", "127.0.0.1", "udp", nil, nil)
	trunk := newEdgeUA(t, "trunk", "127.0.0.1", "udp", nil, nil)
	r := &reloadRig{bin: serviceBuild(t, dir), cfg: dir + "/esbc.yaml",
		rn: reloadNet{pbxPort: pbx.port, trunkPort: trunk.port, trunkTransport: "udp", codecs: "PCMU, telephone-event", rtp: reloadRTPRange()}}
	write := func(v reloadVariant) { serviceWrite(t, r.cfg, stormConfig(v, r.rn)) }
	write(reloadVariant{k: 0, level: reloadLevel(0)})
	p := r.start(t)
	wan := p.addr("wan/udp")
	reloadWaitTrunkUp(t, p, "127.0.0.1/"+trunk.addr()+"/udp", "lan/udp", "wan/udp")
	if got := reloadConfigInForce(t, p).step(); got != 0 {
		t.Fatalf("configuration in force at start: step %d, want 0", got)
	}
	okBefore := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`)
	errBefore := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`)

	dial := func() (*edgeCall, error) { return trunk.call(wan, stormNumber) }
	early := reloadEarlyCalls(t, p, 2, "the storm", dial)

	var step atomic.Int64
	load := reloadLoad(stormCalls, stormRate, stormHold, 10, func() int { return int(step.Load()) }, nil, dial)
	st := reloadStorm(t, p, write, &step, load.done)
	load.wait(t, p, 90*time.Second)

	reloadEndEarly(t, early, fmt.Sprintf("%d changes", st.steps))
	n := load.tally(t, "step")
	setupFailed, byeFailed, mediaFailed, mediaChecked, spanned := n.setupFailed, n.byeFailed, n.mediaFailed, n.mediaChecked, n.spanned
	want := int64(stormCalls + len(early))
	failoverPoll(10*time.Second, func() bool { return pbx.byes.Load() >= want })
	okDelta := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`) - okBefore
	errDelta := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`) - errBefore
	inForce := reloadConfigInForce(t, p)
	exts := pbx.requestUsers()
	t.Logf("%d inbound calls at %d/s held %s: %d set-up failures, %d BYE failures, %d of %d media checks failed, "+
		"%d calls lived through a change; PBX: %d answered, %d BYEs, extensions %v", stormCalls, stormRate, stormHold,
		setupFailed, byeFailed, mediaFailed, mediaChecked, spanned, pbx.answered.Load(), pbx.byes.Load(), exts)
	t.Logf("%d configuration changes (%d valid, %d invalid, %d by the file watcher alone, %d SIGHUPs): "+
		"reload_total success +%v, error +%v; generation %d", st.steps, st.valid, st.invalid, st.watcherOnly, st.sighups,
		okDelta, errDelta, inForce.Generation)

	if setupFailed != 0 || byeFailed != 0 {
		t.Errorf("trunk: %d failed set-ups, %d failed BYEs; want 0\nesbc's warnings and errors:\n%s",
			setupFailed, byeFailed, reloadProblems(p.logs(), 40))
	}
	if pbx.answered.Load() != want || pbx.byes.Load() != want {
		t.Errorf("PBX: %d answered, %d BYEs; want %d of each (every call ended normally on both legs)",
			pbx.answered.Load(), pbx.byes.Load(), want)
	}
	if spanned == 0 {
		t.Errorf("no call lived through a configuration change: the test did not test reload under load")
	}
	st.check(t, inForce, okBefore, okDelta, errDelta)
	// Every refused reload is counted once: the error counter equals the
	// "reload failed" lines esbc logged (at error level: logged whatever
	// log.level the storm set). Successes are exact through the generation
	// (st.check).
	refused := func() int {
		return strings.Count(p.logs(), `"msg":"reload failed: the previous configuration stays in force"`)
	}
	if !failoverPoll(10*time.Second, func() bool {
		return float64(refused()) == reloadMetric(t, p, `esbc_config_reload_total{result="error"}`)
	}) {
		t.Errorf("esbc_config_reload_total{result=\"error\"} = %v, but esbc logged %d refused reloads",
			reloadMetric(t, p, `esbc_config_reload_total{result="error"}`), refused())
	}
	// Inbound routes are hot: the PBX saw only valid steps' extensions
	// (step 0 and odd steps), and more than one of them.
	for ext := range exts {
		k, err := strconv.Atoi(ext)
		k -= 1000
		switch {
		case err != nil || k < 0 || k > st.lastValid:
			t.Errorf("PBX extension %q: no configuration's inbound route", ext)
		case k != 0 && k%2 == 0:
			t.Errorf("PBX extension %q: the inbound route of an invalid file (step %d) was used", ext, k)
		}
	}
	if len(exts) < 3 {
		t.Errorf("the PBX saw %d extensions over %d valid changes: inbound route changes not applied to new calls", len(exts), st.valid)
	}
	if strings.Contains(p.logs(), `"level":"panic"`) || strings.Contains(p.logs(), "panic:") {
		t.Errorf("esbc logged a panic:\n%s", failoverTail(p.logs(), 40))
	}
}

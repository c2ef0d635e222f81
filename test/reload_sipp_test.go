//go:build e2e

package test

// TestReloadUnderLoad with independent peers: SIPp plays the PBX (UAC over
// UDP, G.711 played for the hold time) and the trunk (UAS over TCP with
// -rtp_echo, srtp off), esbc is the built binary between them, and the
// same configuration storm runs while the calls are up, this time on a
// Kubernetes-style ConfigMap mount (symlink swaps). Run with
//
//	go test -tags e2e -race -run TestReload ./test/

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestReloadUnderLoadSIPp(t *testing.T) {
	e2eRequireTool(t, "sipp")
	e2eLeakCheck(t)
	dir := t.TempDir()
	trunkPort, trunkMedia := e2eFreePort(t), e2eFreeMediaPort(t)
	pbxPort, pbxMedia := e2eFreePort(t), e2eFreeMediaPort(t)
	trunk := e2eStartSIPp(t, dir, "trunk", true,
		"-sf", e2eScenario(t, "uas_answer.xml"), "-t", "t1",
		"-i", "127.0.0.1", "-p", strconv.Itoa(trunkPort), "-mp", strconv.Itoa(trunkMedia), "-rtp_echo",
		"-max_socket", "1000")
	waitSIPpListening(t, trunk, "tcp", trunkPort)

	bin := serviceBuild(t, dir)
	// The configuration is a Kubernetes-style ConfigMap mount: every change
	// is a symlink swap.
	cmDir := filepath.Join(dir, "configmap")
	if err := os.Mkdir(cmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, publish := reloadConfigMap(t, cmDir)
	rn := reloadNet{pbxPort: pbxPort, trunkPort: trunkPort, trunkTransport: "tcp",
		codecs: "PCMA, PCMU, telephone-event", rtp: reloadRTPRange()}
	write := func(v reloadVariant) { publish(reloadConfig(v, rn)) }
	write(reloadVariant{k: 0, level: reloadLevel(0)})
	p := (&reloadRig{bin: bin, cfg: cfg}).start(t)
	okBefore := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`)
	errBefore := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`)

	lan := p.addr("lan/udp")
	pbx := failoverUAC(t, dir, "pbx", lan, pbxPort, pbxMedia, reloadDialled, reloadCalls, reloadRate, reloadHold)

	var step atomic.Int64
	st := reloadStorm(t, p, write, &step, pbx.done)
	err := pbx.wait(t, 150*time.Second)
	c := pbx.counts(t)
	okDelta := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`) - okBefore
	errDelta := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`) - errBefore
	t.Logf("SIPp PBX: %d created, %d successful, %d failed (exit %v); %d configuration changes (%d valid, %d invalid, "+
		"%d by the file watcher alone, %d SIGHUPs): reload_total success +%v, error +%v", c["Outgoing calls created"],
		c["Successful call"], c["Failed call"], err, st.steps, st.valid, st.invalid, st.watcherOnly, st.sighups, okDelta, errDelta)
	if err != nil || c["Successful call"] != reloadCalls || c["Failed call"] != 0 {
		t.Errorf("SIPp PBX: want %d successful and 0 failed calls, got %v (exit %v)\nerrors:\n%s\nesbc:\n%s",
			reloadCalls, c, err, pbx.file(pbx.errFile, 30), reloadProblems(p.logs(), 30))
	}
	st.check(t, reloadConfigInForce(t, p), okBefore, okDelta, errDelta)

	// Every call ended on the trunk side too, and no channel is left.
	if !failoverPoll(10*time.Second, func() bool {
		return reloadMetric(t, p, `esbc_trunk_channels_active{trunk="reload"}`) == 0
	}) {
		t.Errorf("esbc_trunk_channels_active{trunk=\"reload\"} = %v after every call ended",
			reloadMetric(t, p, `esbc_trunk_channels_active{trunk="reload"}`))
	}
	trunk.stop()
	checkCallee(t, trunk, reloadCalls)

	// Header rules are hot: new calls carry the rule of the configuration
	// in force when they were set up. Only valid steps (odd) may show up,
	// never an invalid file's (even), and more than one step was seen.
	seen := map[string]int{}
	for _, m := range requests(trunk.messages(t), "INVITE", false) {
		v := m.Header("X-Reload-Gen")
		seen[v]++
		var k int
		if _, err := fmt.Sscanf(v, "gen-%d", &k); err != nil || (k != 0 && k%2 == 0) {
			t.Errorf("an INVITE toward the trunk carries X-Reload-Gen %q: not a valid configuration's", v)
		}
	}
	t.Logf("X-Reload-Gen of the INVITEs toward the trunk: %v", seen)
	if len(seen) < 3 {
		t.Errorf("X-Reload-Gen took %d values over %d valid changes: header rule changes not applied to new calls", len(seen), st.valid)
	}
	if strings.Contains(p.logs(), "panic:") {
		t.Errorf("esbc logged a panic:\n%s", failoverTail(p.logs(), 40))
	}
}

// reloadConfigMap lays out dir as Kubernetes mounts a ConfigMap volume
// (esbc.yaml -> ..data/esbc.yaml, ..data -> ..<version>) and returns the
// configuration path and a writer that publishes a new version the way
// the kubelet does: a new version directory, then an atomic rename of a
// fresh ..data symlink over the old one.
func reloadConfigMap(t *testing.T, dir string) (string, func([]byte)) {
	t.Helper()
	version := 0
	publish := func(data []byte) {
		t.Helper()
		version++
		v := fmt.Sprintf("..%d", version)
		if err := os.Mkdir(filepath.Join(dir, v), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, v, "esbc.yaml"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(v, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if version > 2 { // the kubelet removes the old version
			_ = os.RemoveAll(filepath.Join(dir, fmt.Sprintf("..%d", version-2)))
		}
	}
	cfg := filepath.Join(dir, "esbc.yaml")
	if err := os.Symlink(filepath.Join("..data", "esbc.yaml"), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg, publish
}

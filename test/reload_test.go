package test

// SPEC §6 "Reload: under load, zero calls lost", black-box: the esbc binary
// between a PBX (sipgo UA over UDP, the failover tests' peer) and a trunk
// server (sipgo UA over UDP, srtp off) carries 300 calls at ~20 calls/s,
// each held 3 s, while the test rewrites the configuration every ~0.5 s:
// valid changes (log level, a route, channels, rate limits, header rules)
// alternate with invalid files (unknown key, bad regexps, broken YAML); most
// changes are followed by SIGHUP, some are left to the file watcher alone.
// Every file is written by rename-replace, as editors and config managers do.

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	reloadCalls    = 300
	reloadRate     = 20 // calls per second
	reloadHold     = 3 * time.Second
	reloadInterval = 500 * time.Millisecond // between configuration changes
	reloadMaxSteps = 120                    // bound on configuration changes
	reloadDialled  = "916502530000"
)

// reloadFreeUDPPort is a UDP port free on ip right now (never 5060/5061).
func reloadFreeUDPPort(t *testing.T, ip string) int {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		if port != 5060 && port != 5061 {
			return port
		}
	}
	t.Fatal("no free UDP port")
	return 0
}

// reloadRTPRange is a media port range for esbc: 1,200 ports (300 calls
// of two legs at RTP+RTCP; ~70 are up at once here, and freed ports rest
// in quarantine), below the ephemeral range and apart from the ranges of
// the e2e (20000-25999) and failover (26000-28999) tests.
func reloadRTPRange() string {
	lo := 10000 + 2*(os.Getpid()%2000)
	return fmt.Sprintf("%d-%d", lo, lo+1199)
}

// reloadVariant is what one configuration file says. The valid fields
// carry the step number k so that the test can tell which file is in force.
type reloadVariant struct {
	k        int
	level    string // log.level
	invalid  string // "" or the kind of mistake written into the file
	channels int    // trunks[0].channels; 0 = reloadChannels(k)
	// restartOnly changes keys that apply only after a restart: lan.listen
	// (one more listener), log.format, media.dscp.sip, media.rtp_ports.
	restartOnly bool
}

// reloadChannels etc. are the step's marks in the configuration in force.
func reloadChannels(k int) int  { return 200 + k }
func reloadPerIP(k int) int     { return 10000 + k }
func reloadHeader(k int) string { return fmt.Sprintf("gen-%d", k) }
func reloadRoute(k int) string  { return fmt.Sprintf(`^8%d(\d+)$`, k) }
func reloadLevel(k int) string  { return []string{"info", "warn", "error"}[k%3] }
func reloadInvalidKind(i int) string {
	return []string{"unknown key", "bad route regexp", "bad header regexp", "yaml syntax", "unknown top-level key"}[i%5]
}

// reloadNet is where esbc's peers are: the PBX's UDP port, the trunk's
// port and transport (udp|tcp), and esbc's media port range.
type reloadNet struct {
	pbxPort, trunkPort int
	trunkTransport     string
	codecs             string
	rtp                string
}

// reloadConfig is esbc's configuration for variant v: LAN over UDP and WAN
// over UDP and TCP on loopback, one trunk, srtp off.
func reloadConfig(v reloadVariant, n reloadNet) []byte {
	trunkExtra, routeMatch, headerMatch, tail := "", reloadRoute(v.k), "", ""
	switch v.invalid {
	case "unknown key":
		trunkExtra = "    srtpp: \"off\"\n"
	case "bad route regexp":
		routeMatch = `^8(\d+$`
	case "bad header regexp":
		headerMatch = `([`
	case "yaml syntax":
		tail = "routes: [\n"
	case "unknown top-level key":
		tail = "bogus: { answer: 42 }\n"
	}
	channels := v.channels
	if channels == 0 {
		channels = reloadChannels(v.k)
	}
	format, lanListen, dscp, rtp := "json", `"udp://127.0.0.1:0"`, 24, n.rtp
	if v.restartOnly {
		format, lanListen, dscp = "console", `"udp://127.0.0.1:0", "tcp://127.0.0.1:0"`, 26
		var lo, hi int
		fmt.Sscanf(n.rtp, "%d-%d", &lo, &hi)
		rtp = fmt.Sprintf("%d-%d", lo, hi-200)
	}
	return []byte(fmt.Sprintf(`
log: { level: %s, format: %s }
admin: { listen: "127.0.0.1:0" }
shutdown_grace: 5s
lan:
  listen: [%s]
  advertise: 127.0.0.1
  pbx: { uri: "sip:127.0.0.1:%d;transport=udp", trusted: true }
  acl: { allow: ["127.0.0.0/8"] }
wan:
  listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]
  advertise: 127.0.0.1
  acl: { allow: ["127.0.0.0/8"] }
trunks:
  - name: reload
    domain: trunk.test
    transport: %s
    servers: ["127.0.0.1:%d"]
    auth: { method: ip }
    from_user: "990500000231"
    caller_id: "+14155550100"
    allowed_caller_ids: ["+14155550100"]
    srtp: "off"
    codecs: [%s]
    channels: %d
    options_interval: 1s
    failover_timeout: 2s
    header_rules:
      - { action: add, header: X-Reload-Gen, match: '%s', value: "%s" }
%snumbering: { country_code: "1", national_prefix: "1", international_prefix: "011" }
routes:
  outbound:
    - { match: '^9(\d+)$', number: '$1', trunk: reload }
    - { match: '%s', number: '$1', trunk: reload }
security:
  rate_limit: { per_ip: %d, burst: 40000, ban: 1s }
media:
  rtp_ports: "%s"
  dscp: { sip: %d }
  inactivity_timeout: 30s
cdr: { file: "" }
%s`, v.level, format, lanListen, n.pbxPort, n.trunkTransport, n.trunkPort, n.codecs, channels, headerMatch,
		reloadHeader(v.k), trunkExtra, routeMatch, reloadPerIP(v.k), rtp, dscp, tail))
}

// reloadInForce is what /api/v1/config shows of the marks of a variant.
type reloadInForce struct {
	Generation uint64 `json:"generation"`
	Config     struct {
		Log    struct{ Level string }
		Trunks []struct {
			Channels    int
			HeaderRules []struct{ Value string } `json:"header_rules"`
		}
		Routes struct {
			Outbound []struct{ Match string }
		}
		Security struct {
			RateLimit struct {
				PerIP int `json:"per_ip"`
			} `json:"rate_limit"`
		}
	}
}

func reloadConfigInForce(t *testing.T, p *serviceProc) reloadInForce {
	t.Helper()
	var c reloadInForce
	body := p.get(t, "/api/v1/config")
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatalf("/api/v1/config: %v\n%s", err, body)
	}
	return c
}

// step is the step number the configuration in force carries, or -1 when
// its marks disagree with each other (a half-applied configuration).
func (c reloadInForce) step() int {
	if len(c.Config.Trunks) != 1 || len(c.Config.Trunks[0].HeaderRules) != 1 || len(c.Config.Routes.Outbound) != 2 {
		return -1
	}
	k := c.Config.Trunks[0].Channels - 200
	if c.Config.Trunks[0].HeaderRules[0].Value != reloadHeader(k) || c.Config.Security.RateLimit.PerIP != reloadPerIP(k) ||
		c.Config.Routes.Outbound[1].Match != reloadRoute(k) || c.Config.Log.Level != reloadLevel(k) {
		return -1
	}
	return k
}

// reloadMetric is the value of the sample line that starts with series
// (name and labels exactly as /metrics prints them); -1 when absent.
func reloadMetric(t *testing.T, p *serviceProc, series string) float64 {
	t.Helper()
	for _, l := range strings.Split(p.get(t, "/metrics"), "\n") {
		if strings.HasPrefix(l, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(l[len(series):]), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", series, l)
			}
			return v
		}
	}
	return -1
}

// reloadApply runs write (a new configuration), sends esbc SIGHUP and
// waits (bounded) until a successful reload is counted; what names the
// change in failures.
func reloadApply(t *testing.T, p *serviceProc, what string, write func()) {
	t.Helper()
	ok := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`)
	write()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !failoverPoll(15*time.Second, func() bool {
		return reloadMetric(t, p, `esbc_config_reload_total{result="success"}`) > ok
	}) {
		t.Fatalf("%s not applied\n%s", what, failoverTail(p.logs(), 20))
	}
}

// reloadProblems is up to n of esbc's log lines at warn or above, other
// than the expected reload errors.
func reloadProblems(logs string, n int) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if (strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`)) &&
			!strings.Contains(l, "reload failed") && len(out) < n {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// reloadStats counts the configuration changes of a storm.
type reloadStats struct {
	steps, valid, invalid int
	sighups               int // signals sent
	watcherOnly           int // changes left to the file watcher alone
	lastValid             int // step of the last valid file
}

// reloadStorm rewrites esbc's configuration (write, rename-replace) every
// reloadInterval until done is closed (at least 12 changes, at most
// reloadMaxSteps): odd steps valid, even steps invalid (cycling through
// the kinds of mistake), every third change without SIGHUP (the file
// watcher alone), every fifth with three SIGHUPs back to back. After each valid change it waits (bounded) until the
// change is in force and stores its number in step; after each invalid one,
// until the error is counted, and checks that the previous configuration
// stayed in force.
func reloadStorm(t *testing.T, p *serviceProc, write func(reloadVariant), step *atomic.Int64, done <-chan struct{}) reloadStats {
	t.Helper()
	var st reloadStats
	for k := 1; k <= reloadMaxSteps; k++ {
		select {
		case <-done:
			if k > 12 { // at least two rounds of every kind of change
				return st
			}
		default:
		}
		start := time.Now()
		v := reloadVariant{k: k, level: reloadLevel(k)}
		if k%2 == 0 {
			v.invalid = reloadInvalidKind(k / 2)
		}
		signal := k%3 != 0 // every third change is left to the file watcher
		if !signal {
			st.watcherOnly++
		}
		errNow := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`)
		write(v)
		burst := 1
		if k%5 == 0 {
			burst = 3 // an impatient admin: SIGHUPs back to back
		}
		for i := 0; signal && i < burst; i++ {
			st.sighups++
			if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		st.steps++
		deadline := time.Now().Add(15 * time.Second)
		if v.invalid == "" {
			st.valid++
			for reloadConfigInForce(t, p).step() != k {
				if time.Now().After(deadline) {
					t.Fatalf("step %d (valid, sighup %v): not in force after 15 s; in force: %+v\n%s",
						k, signal, reloadConfigInForce(t, p), failoverTail(p.logs(), 20))
				}
				time.Sleep(20 * time.Millisecond)
			}
			st.lastValid = k
			step.Store(int64(k))
		} else {
			st.invalid++
			for reloadMetric(t, p, `esbc_config_reload_total{result="error"}`) <= errNow {
				if time.Now().After(deadline) {
					t.Fatalf("step %d (%s, sighup %v): no reload error counted after 15 s\n%s",
						k, v.invalid, signal, failoverTail(p.logs(), 20))
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got := reloadConfigInForce(t, p).step(); got != st.lastValid {
				t.Errorf("step %d (%s): configuration in force is step %d, want the previous valid one (%d)",
					k, v.invalid, got, st.lastValid)
			}
		}
		time.Sleep(time.Until(start.Add(reloadInterval))) // pacing of the changes, not a readiness wait
	}
	return st
}

// check compares the reload counters and the configuration in force at
// the end with the storm: each change draws at most one reload per SIGHUP
// (the signal channel may coalesce a burst) and at most one from the file
// watcher, and at least one; the generation is 1 + the successful reloads.
func (st reloadStats) check(t *testing.T, inForce reloadInForce, okBefore, okDelta, errDelta float64) {
	t.Helper()
	if okDelta < float64(st.valid) || errDelta < float64(st.invalid) || okDelta+errDelta > float64(st.steps+st.sighups) {
		t.Errorf("reload_total: success +%v, error +%v; want >= %d and >= %d, together <= %d",
			okDelta, errDelta, st.valid, st.invalid, st.steps+st.sighups)
	}
	if inForce.step() != st.lastValid {
		t.Errorf("configuration in force at the end: step %d, want %d", inForce.step(), st.lastValid)
	}
	if float64(inForce.Generation) != 1+okDelta+okBefore {
		t.Errorf("generation %d, want 1 + %v successful reloads", inForce.Generation, okDelta+okBefore)
	}
}

// reloadWaitTrunkUp waits (bounded) until esbc's SIP sockets are served
// (an OPTIONS to each listener of optionsTo answered, over the transport
// its key names: sipgo holds the socket before it reads from it) and its
// health table has the trunk server target (as trunk.target) up. Calls
// placed in the first moments after "esbc ready" can fail (see
// TestRobustCallAtReady); targets start up before their first probe.
func reloadWaitTrunkUp(t *testing.T, p *serviceProc, target string, optionsTo ...string) {
	t.Helper()
	for _, key := range optionsTo {
		_, transport, _ := strings.Cut(key, "/")
		if res := serviceOptions(t, p.addr(key), strings.ToUpper(transport), nil); res.StatusCode != 200 {
			t.Fatalf("OPTIONS to %s: %s", key, res.StartLine())
		}
	}
	admin := failoverAdmin{base: "http://" + p.addr("admin")}
	if !failoverPoll(15*time.Second, func() bool { return admin.targetUp(t, target) == 1 }) {
		t.Fatalf("trunk server %s not up 15 s after start\n%s", target, failoverTail(p.logs(), 30))
	}
}

// reloadCallResult is what the caller saw of one call of a load run.
type reloadCallResult struct {
	setupErr error
	byeErr   error
	stepUp   int // the mark (configuration step, rotation) in force when the call was answered
	stepBye  int // ... when its BYE was sent
	echoes   int // RTP packets of 10 that came back; -1 when not checked
}

// reloadLoadRun is a load of calls placed in the background.
type reloadLoadRun struct {
	results []reloadCallResult // complete once done is closed
	done    chan struct{}
}

// reloadLoad places n calls with dial, rate per second, each held for hold,
// in the background. Every echoEvery-th call (0: none) sends 10 RTP
// packets first. mark (the configuration step or rotation in force) is
// read at each answer and BYE; before, when not nil, runs before call i is
// placed.
func reloadLoad[C rtpCall](n, rate int, hold time.Duration, echoEvery int, mark func() int, before func(i int),
	dial func() (C, error)) *reloadLoadRun {
	l := &reloadLoadRun{results: make([]reloadCallResult, n), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := range n {
			<-tick.C
			if before != nil {
				before(i)
			}
			wg.Add(1)
			go func(i int, r *reloadCallResult) {
				defer wg.Done()
				r.echoes = -1
				c, err := dial()
				if err != nil {
					r.setupErr = err
					return
				}
				r.stepUp = mark()
				start := time.Now()
				if echoEvery > 0 && i%echoEvery == 0 {
					r.echoes = c.echoes(10)
				}
				time.Sleep(hold - time.Since(start)) // the call's hold time, not a readiness wait
				r.stepBye = mark()
				r.byeErr = c.hangup()
			}(i, &l.results[i])
		}
		wg.Wait()
	}()
	return l
}

// wait waits (bounded by d) until every call of the load has ended.
func (l *reloadLoadRun) wait(t *testing.T, p *serviceProc, d time.Duration) {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(d):
		t.Fatalf("calls still running %s after the start\n%s", d, failoverTail(p.logs(), 30))
	}
}

// reloadTally is what the calls of a load run saw.
type reloadTally struct {
	setupFailed, byeFailed    int
	spanned                   int // calls that lived through a change of the mark
	mediaChecked, mediaFailed int // media checks (fewer than 5 of 10 packets back: failed)
}

// tally counts the results of the load; it reports the first five set-up
// and BYE failures and every failed media check. mark names what the
// load's mark counts ("step", "rotation").
func (l *reloadLoadRun) tally(t *testing.T, mark string) reloadTally {
	t.Helper()
	var n reloadTally
	for i, r := range l.results {
		switch {
		case r.setupErr != nil:
			n.setupFailed++
			if n.setupFailed <= 5 {
				t.Errorf("call %d: set-up failed: %v", i, r.setupErr)
			}
			continue
		case r.byeErr != nil:
			n.byeFailed++
			if n.byeFailed <= 5 {
				t.Errorf("call %d (answered under %s %d, BYE under %s %d): BYE failed: %v", i, mark, r.stepUp, mark, r.stepBye, r.byeErr)
			}
		case r.stepBye != r.stepUp:
			n.spanned++
		}
		if r.echoes >= 0 {
			n.mediaChecked++
			if r.echoes < 5 {
				n.mediaFailed++
				t.Errorf("call %d (answered under %s %d): %d of 10 RTP packets came back", i, mark, r.stepUp, r.echoes)
			}
		}
	}
	return n
}

// reloadEarlyCalls places n calls with dial before the changes of a test
// (what: "the changes", "the rotations"), each with media both ways.
func reloadEarlyCalls[C rtpCall](t *testing.T, p *serviceProc, n int, what string, dial func() (C, error)) []C {
	t.Helper()
	var early []C
	for i := range n {
		c, err := dial()
		if err != nil {
			t.Fatalf("call %d before %s: %v\n%s", i, what, err, failoverTail(p.logs(), 30))
		}
		early = append(early, c)
		mediaOK(t, fmt.Sprintf("early call %d before %s", i, what), c)
	}
	return early
}

// reloadEndEarly checks that the calls placed before the changes lived
// through them (after: "12 changes", "2 rotations"): media still flows
// both ways and their BYE succeeds.
func reloadEndEarly[C rtpCall](t *testing.T, early []C, after string) {
	t.Helper()
	for i, c := range early {
		mediaOK(t, fmt.Sprintf("early call %d after %s", i, after), c)
		if err := c.hangup(); err != nil {
			t.Errorf("early call %d: BYE after %s: %v", i, after, err)
		}
	}
}

func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary under load")
	}
	failoverLeakCheck(t)

	r := newReloadRig(t)
	trunk, pbx, cfg, rn := r.trunk, r.pbx, r.cfg, r.rn
	write := func(v reloadVariant) { serviceWrite(t, cfg, reloadConfig(v, rn)) }
	p := r.run(t, reloadVariant{k: 0, level: reloadLevel(0)})
	if got := reloadConfigInForce(t, p).step(); got != 0 {
		t.Fatalf("configuration in force at start: step %d, want 0", got)
	}
	okBefore := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`)
	errBefore := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`)

	// Calls up before any change: they must keep media and end with a BYE
	// that succeeds after every change below.
	dial := func() (*failoverCall, error) { return pbx.call(reloadDialled) }
	early := reloadEarlyCalls(t, p, 3, "the changes", dial)

	var step atomic.Int64 // the last step whose configuration was seen in force
	load := reloadLoad(reloadCalls, reloadRate, reloadHold, 0, func() int { return int(step.Load()) }, nil, dial)

	// The configuration changes, every reloadInterval until the calls are
	// over (bounded by reloadMaxSteps).
	st := reloadStorm(t, p, write, &step, load.done)
	load.wait(t, p, 120*time.Second)

	// The early calls lived through every change: media still flows both
	// ways and their BYE succeeds.
	reloadEndEarly(t, early, fmt.Sprintf("%d changes", st.steps))
	n := load.tally(t, "step")
	setupFailed, byeFailed, spanned := n.setupFailed, n.byeFailed, n.spanned
	// esbc answers the PBX's BYE and sends its own to the trunk on its
	// own: wait (bounded) for the last ones to arrive.
	want := reloadCalls + len(early)
	failoverPoll(10*time.Second, func() bool { _, _, b := trunk.counts(); return b >= want })
	invites, answered, byes := trunk.counts()
	okDelta := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`) - okBefore
	errDelta := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`) - errBefore
	inForce := reloadConfigInForce(t, p)
	t.Logf("%d calls at %d/s held %s: %d set-up failures, %d BYE failures, %d calls lived through a change; "+
		"trunk: %d INVITEs, %d answered, %d BYEs", reloadCalls, reloadRate, reloadHold, setupFailed, byeFailed, spanned,
		invites, answered, byes)
	t.Logf("%d configuration changes (%d valid, %d invalid, %d by the file watcher alone, %d SIGHUPs): "+
		"reload_total success +%v, error +%v; generation %d", st.steps, st.valid, st.invalid, st.watcherOnly, st.sighups,
		okDelta, errDelta, inForce.Generation)

	if pbx.failed.Load() != 0 || setupFailed != 0 || byeFailed != 0 {
		t.Errorf("PBX: %d calls placed, %d failed set-ups, %d failed BYEs; want 0 failures\nesbc's warnings and errors:\n%s",
			pbx.placed.Load(), pbx.failed.Load(), byeFailed, reloadProblems(p.logs(), 40))
	}
	if answered != want || byes != want {
		t.Errorf("trunk: %d answered, %d BYEs; want %d of each (every call ended normally on both legs)", answered, byes, want)
	}
	if spanned == 0 {
		t.Errorf("no call lived through a configuration change: the test did not test reload under load")
	}
	// Each change draws one reload per SIGHUP and at most one from the
	// file watcher: at least one reload per file, at most two.
	st.check(t, inForce, okBefore, okDelta, errDelta)
	if strings.Contains(p.logs(), `"level":"panic"`) || strings.Contains(p.logs(), "panic:") {
		t.Errorf("esbc logged a panic:\n%s", failoverTail(p.logs(), 40))
	}
}

// TestReloadChannelsShrink: the admin lowers a trunk's channels below the
// calls in progress. The calls up keep going (media, BYE); new calls get
// 503 until the calls in progress fall below the new limit; raising the
// limit again lets new calls through at once.
func TestReloadChannelsShrink(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	r := newReloadRig(t)
	pbx, cfg, rn := r.pbx, r.cfg, r.rn
	p := r.run(t, reloadVariant{k: 0, level: "info"})
	reload := func(channels int) {
		t.Helper()
		serviceWrite(t, cfg, reloadConfig(reloadVariant{k: 1, level: "info", channels: channels}, rn))
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !failoverPoll(15*time.Second, func() bool {
			c := reloadConfigInForce(t, p).Config.Trunks
			return len(c) == 1 && c[0].Channels == channels
		}) {
			t.Fatalf("channels %d not in force\n%s", channels, failoverTail(p.logs(), 20))
		}
	}
	newCall := func() (int, *failoverCall) {
		t.Helper()
		c, err := pbx.call(reloadDialled)
		if err != nil {
			return robustStatus(err), nil
		}
		return 200, c
	}

	var up []*failoverCall
	for i := range 10 {
		code, c := newCall()
		if c == nil {
			t.Fatalf("call %d: %d\n%s", i, code, failoverTail(p.logs(), 20))
		}
		up = append(up, c)
	}
	rejected := max(reloadMetric(t, p, `esbc_trunk_channels_rejected_total{trunk="reload"}`), 0) // absent until the first
	reload(5)
	if code, c := newCall(); c != nil || code != 503 {
		t.Errorf("new call with 10 up and channels 5: %d, want 503", code)
		if c != nil {
			_ = c.hangup()
		}
	}
	if v := reloadMetric(t, p, `esbc_trunk_channels_rejected_total{trunk="reload"}`); v != rejected+1 {
		t.Errorf("esbc_trunk_channels_rejected_total %v → %v, want +1", rejected, v)
	}
	// The calls up keep media; six of them end: 4 left, under the limit.
	for i, c := range up[:6] {
		mediaOK(t, fmt.Sprintf("call %d after channels went down to 5", i), c)
		if err := c.hangup(); err != nil {
			t.Errorf("call %d: BYE after channels went down to 5: %v", i, err)
		}
	}
	up = up[6:]
	if !failoverPoll(10*time.Second, func() bool {
		return reloadMetric(t, p, `esbc_trunk_channels_active{trunk="reload"}`) == 4
	}) {
		t.Fatalf("esbc_trunk_channels_active = %v, want 4", reloadMetric(t, p, `esbc_trunk_channels_active{trunk="reload"}`))
	}
	code, c := newCall()
	if c == nil {
		t.Fatalf("new call with 4 up and channels 5: %d, want 200", code)
	}
	up = append(up, c)
	if code, c := newCall(); c != nil || code != 503 {
		t.Errorf("new call with 5 up and channels 5: %d, want 503", code)
		if c != nil {
			up = append(up, c)
		}
	}
	reload(300)
	if code, c := newCall(); c == nil {
		t.Errorf("new call after channels went back to 300: %d, want 200", code)
	} else {
		up = append(up, c)
	}
	for i, c := range up {
		if err := c.hangup(); err != nil {
			t.Errorf("call %d: BYE: %v", i, err)
		}
	}
	if !failoverPoll(10*time.Second, func() bool {
		return reloadMetric(t, p, `esbc_trunk_channels_active{trunk="reload"}`) == 0
	}) {
		t.Errorf("esbc_trunk_channels_active = %v after every call ended", reloadMetric(t, p, `esbc_trunk_channels_active{trunk="reload"}`))
	}
}

// TestReloadRestartOnlyKeys: a reload that changes keys which apply only
// after a restart (lan.listen, log.format, media.dscp.sip, media.rtp_ports)
// succeeds, says so (esbc_config_restart_required 1, the keys in
// /api/v1/status), and changes nothing of what runs: the listeners stay as
// they are, the log stays JSON, calls go on. Reverting clears the gauge.
func TestReloadRestartOnlyKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	failoverLeakCheck(t)
	r := newReloadRig(t)
	pbx, cfg, rn := r.pbx, r.cfg, r.rn
	p := r.run(t, reloadVariant{k: 0, level: "info"})
	lan := p.addr("lan/udp")
	up, err := pbx.call(reloadDialled)
	if err != nil {
		t.Fatal(err)
	}

	reload := func(v reloadVariant) {
		t.Helper()
		reloadApply(t, p, fmt.Sprintf("reload (restartOnly %v)", v.restartOnly), func() { serviceWrite(t, cfg, reloadConfig(v, rn)) })
	}
	reload(reloadVariant{k: 1, level: "info", restartOnly: true})
	if v := reloadMetric(t, p, "esbc_config_restart_required"); v != 1 {
		t.Errorf("esbc_config_restart_required = %v, want 1", v)
	}
	status := p.get(t, "/api/v1/status")
	for _, k := range []string{"lan.listen", "log.format", "media.dscp.sip", "media.rtp_ports"} {
		if !strings.Contains(status, `"`+k+`"`) {
			t.Errorf("/api/v1/status does not list %s as waiting for a restart:\n%s", k, status)
		}
	}
	// Nothing of what runs changed: the same LAN listener answers, no new
	// one was opened, the log is still JSON, calls go on.
	if res := serviceOptions(t, lan, "UDP", nil); res.StatusCode != 200 {
		t.Errorf("OPTIONS to the LAN listener after the reload: %s", res.StartLine())
	}
	if a := p.addr("lan/tcp"); a != "" {
		t.Errorf("a LAN TCP listener was opened at %s by a reload (lan.listen needs a restart)", a)
	}
	for _, l := range strings.Split(p.logs(), "\n") {
		if l != "" && !strings.HasPrefix(l, "{") {
			t.Errorf("log line not JSON after log.format: console was reloaded: %q", l)
			break
		}
	}
	if !strings.Contains(p.logs(), `"msg":"configuration changes that apply only after a restart"`) {
		t.Errorf("restart-only keys not logged")
	}
	mediaOK(t, "call up across the reload", up)
	c, err := pbx.call(reloadDialled)
	if err != nil {
		t.Fatalf("new call after a restart-only reload: %v", err)
	}
	mediaOK(t, "call set up after the reload", c)
	for _, x := range []*failoverCall{up, c} {
		if err := x.hangup(); err != nil {
			t.Errorf("BYE: %v", err)
		}
	}

	reload(reloadVariant{k: 3, level: "info"})
	if v := reloadMetric(t, p, "esbc_config_restart_required"); v != 0 {
		t.Errorf("esbc_config_restart_required = %v after reverting, want 0", v)
	}
}

// reloadRig is the common set-up of the binary-level reload and robustness
// tests: a UDP trunk and a PBX (the failover peers), the esbc binary built
// into a temporary directory and the path of its configuration file there.
type reloadRig struct {
	trunk *failoverTrunk
	pbx   *failoverPBX
	bin   string // the built esbc
	cfg   string // configuration file path
	rn    reloadNet
}

func newReloadRig(t *testing.T) *reloadRig {
	t.Helper()
	trunk := newFailoverTrunk(t, "trunk", "udp", "127.0.0.1", reloadFreeUDPPort(t, "127.0.0.1"))
	trunk.start()
	pbx := newFailoverPBX(t)
	dir := t.TempDir()
	return &reloadRig{
		trunk: trunk, pbx: pbx, bin: serviceBuild(t, dir), cfg: filepath.Join(dir, "esbc.yaml"),
		rn: reloadNet{pbxPort: pbx.port(), trunkPort: trunk.port, trunkTransport: "udp", codecs: "PCMU, telephone-event", rtp: reloadRTPRange()},
	}
}

// run writes the rig's configuration for v, starts esbc on it, points the
// PBX at its LAN UDP listener and waits until the trunk is up.
func (r *reloadRig) run(t *testing.T, v reloadVariant) *serviceProc {
	t.Helper()
	serviceWrite(t, r.cfg, reloadConfig(v, r.rn))
	p := r.start(t)
	r.pbx.dialTo(p.addr("lan/udp"))
	reloadWaitTrunkUp(t, p, r.trunk.target("127.0.0.1"), "lan/udp", "wan/udp")
	return p
}

// start runs esbc on the rig's configuration; at the end of the test it is
// stopped with SIGTERM and must exit 0 within 20 s.
func (r *reloadRig) start(t *testing.T) *serviceProc {
	t.Helper()
	p := serviceStart(t, r.bin, r.cfg)
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.exit:
			if err != nil {
				t.Errorf("esbc exit after SIGTERM: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("esbc did not stop 20 s after SIGTERM")
		}
	})
	return p
}

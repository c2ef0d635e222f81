//go:build bench

// SIP load figures through the esbc binary (make bench):
//
//	go test -tags bench -v -timeout 30m -run 'SIP' ./test/bench/
//
// SIPp plays the PBX (UAC, UDP) and the trunk (UAS; UDP, or TCP behind
// stunnel for TLS). Every figure is printed on a line starting "BENCH sip";
// nothing here asserts a timing. A rate counts only with 0 failed calls.
// Knobs (environment):
//
//	ESBC_BENCH_CPS      rates tried in order, stopping at the first with a failed call
//	                    (default "100,200,300,400,600,800,1000,1200,1500,2000")
//	ESBC_BENCH_SECONDS  length of each rate step (default 30)
//	ESBC_BENCH_CALLS    concurrent calls of the memory figure (default 1000)
//	ESBC_BENCH_KEEP=1   keep the work directory (esbc log, SIPp screens and errors)
//	ESBC_BINARY         use this esbc binary instead of building ./cmd/esbc
package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sipEnvInts(name, def string) []int {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// sipNet is the ports and files of one figure.
type sipNet struct {
	dir                        string
	admin, lan, wan            int
	trunk, trunkMedia, tlsPort int
	pbx, pbxMedia              int
	rtpLo, rtpHi               int
	trunkTransport, caFile     string
	channels                   int
	inactivity                 time.Duration
}

func newSIPNet(t *testing.T, trunkTransport string) *sipNet {
	t.Helper()
	dir := t.TempDir()
	if os.Getenv("ESBC_BENCH_KEEP") == "1" { // keep logs and SIPp traces for a post-mortem
		var err error
		if dir, err = os.MkdirTemp("", "esbc-bench-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("work directory kept: %s", dir)
	}
	n := &sipNet{dir: dir, trunkTransport: trunkTransport, channels: 20000, inactivity: 120 * time.Second}
	n.admin, n.lan, n.wan = sipFreePort(t), sipFreePort(t), sipFreePort(t)
	n.trunk, n.trunkMedia, n.pbx, n.pbxMedia = sipFreePort(t), sipFreePort(t), sipFreePort(t), sipFreePort(t)
	if trunkTransport == "tls" {
		n.tlsPort = sipFreePort(t)
	}
	n.rtpLo = 30000 + 2*(os.Getpid()%1000)
	n.rtpHi = n.rtpLo + 14999
	return n
}

func (n *sipNet) config() string {
	server := n.trunk
	tls := ""
	if n.trunkTransport == "tls" {
		server = n.tlsPort
		tls = fmt.Sprintf("  tls: { ca_file: %q, min_version: \"1.2\" }\n", n.caFile)
	}
	return fmt.Sprintf(`
log: { level: warn, format: json }
admin: { listen: "127.0.0.1:%[1]d" }
shutdown_grace: 5s
lan:
  listen: ["udp://127.0.0.1:%[2]d"]
  advertise: 127.0.0.1
  pbx: { uri: "sip:127.0.0.1:%[4]d;transport=udp", trusted: true }
wan:
  listen: ["udp://127.0.0.1:%[3]d"]
  advertise: 127.0.0.1
%[10]strunks:
  - name: sipp
    domain: trunk.example.test
    transport: %[6]s
    servers: ["127.0.0.1:%[5]d"]
    auth: { method: ip }
    from_user: "990500000231"
    caller_id: "+14155550100"
    channels: %[9]d
    srtp: "off"
    codecs: [PCMA, PCMU, telephone-event]
    options_interval: 1h
    failover_timeout: 5s
numbering: { country_code: "1", national_prefix: "1", international_prefix: "011" }
routes:
  outbound:
    - { match: '^9(\d+)$', number: '$1', trunk: sipp }
security:
  rate_limit: { per_ip: 1000000, burst: 2000000, ban: 1s }
media:
  rtp_ports: "%[7]d-%[8]d"
  inactivity_timeout: %[11]s
cdr: { file: %[12]q }
`, n.admin, n.lan, n.wan, n.pbx, server, n.trunkTransport, n.rtpLo, n.rtpHi, n.channels, tls,
		n.inactivity, filepath.Join(n.dir, "cdr.jsonl"))
}

// startTrunk starts the SIPp UAS as the trunk (and stunnel in front of it for tls).
func (n *sipNet) startTrunk(t *testing.T) *sipSIPp {
	t.Helper()
	switch n.trunkTransport {
	case "udp":
		s := sipStartSIPp(t, n.dir, "trunk", "-sf", sipScenario("uas_answer.xml"), "-t", "u1",
			"-i", "127.0.0.1", "-p", strconv.Itoa(n.trunk), "-mp", strconv.Itoa(n.trunkMedia))
		sipWaitBound(t, "udp", n.trunk)
		return s
	case "tls":
		s := sipStartSIPp(t, n.dir, "trunk", "-sf", sipScenario("uas_answer_tls.xml"), "-t", "t1",
			"-i", "127.0.0.1", "-p", strconv.Itoa(n.trunk), "-mp", strconv.Itoa(n.trunkMedia),
			"-key", "tls_port", strconv.Itoa(n.tlsPort), "-max_socket", "10000")
		sipWaitBound(t, "tcp", n.trunk)
		n.startStunnel(t)
		return s
	}
	t.Fatalf("transport %s", n.trunkTransport)
	return nil
}

// startStunnel terminates TLS on tlsPort for the SIPp trunk (TCP), with a
// self-signed certificate for trunk.example.test that esbc trusts via
// trunks[].tls.ca_file.
func (n *sipNet) startStunnel(t *testing.T) {
	t.Helper()
	bin := sipRequireTool(t, "stunnel4", "stunnel4")
	cert, key := filepath.Join(n.dir, "trunk.crt"), filepath.Join(n.dir, "trunk.key")
	sipSelfSigned(t, cert, key)
	n.caFile = cert
	conf := filepath.Join(n.dir, "stunnel.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`foreground = yes
pid =
debug = 3
[sip]
accept = 127.0.0.1:%d
connect = 127.0.0.1:%d
cert = %s
key = %s
`, n.tlsPort, n.trunk, cert, key)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf)
	logf, err := os.Create(filepath.Join(n.dir, "stunnel.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	sipWaitBound(t, "tcp", n.tlsPort)
}

func sipSelfSigned(t *testing.T, certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "trunk.example.test"},
		DNSNames:     []string{"trunk.example.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pbxCalls runs the SIPp UAC (PBX) for calls calls at rate per second, each
// held hold, and returns its counters once it has ended.
func (n *sipNet) pbxCalls(t *testing.T, name string, calls, rate int, hold time.Duration, limit int) (map[string]int, *sipSIPp, time.Duration) {
	t.Helper()
	start := time.Now()
	s := sipStartSIPp(t, n.dir, name, fmt.Sprintf("127.0.0.1:%d", n.lan), "-sf", sipScenario("uac_bench.xml"), "-t", "u1",
		"-i", "127.0.0.1", "-p", strconv.Itoa(n.pbx), "-mp", strconv.Itoa(n.pbxMedia), "-s", "916502530000",
		"-m", strconv.Itoa(calls), "-r", strconv.Itoa(rate), "-l", strconv.Itoa(limit),
		"-d", strconv.Itoa(int(hold/time.Millisecond)), "-recv_timeout", "20000")
	err := s.wait(t, time.Duration(calls/rate)*time.Second+hold+90*time.Second)
	c := s.counts()
	if err != nil {
		t.Logf("sipp %s: %v", name, err)
	}
	return c, s, time.Since(start)
}

// cpsLadder tries each rate for ESBC_BENCH_SECONDS and reports the highest
// with every call successful.
func cpsLadder(t *testing.T, transport string) {
	n := newSIPNet(t, transport)
	n.startTrunk(t)
	e := sipStartESBC(t, n.dir, n.config(), n.admin)
	secs := sipEnvInts("ESBC_BENCH_SECONDS", "30")[0]
	best := 0
	for i, rate := range sipEnvInts("ESBC_BENCH_CPS", "100,200,300,400,600,800,1000,1200,1500,2000") {
		calls := rate * secs
		cpu0 := e.cpu(t)
		c, s, wall := n.pbxCalls(t, fmt.Sprintf("pbx-%d-%d", i, rate), calls, rate, 0, rate*10)
		cpu := e.cpu(t) - cpu0
		rss, peak := e.mem(t)
		ok := c["Successful call"] == calls && c["Failed call"] == 0
		fmt.Printf("BENCH sip cps trunk=%s rate=%d calls=%d successful=%d failed=%d wall=%.1fs esbc_cpu=%.0f%% rss=%dKiB peak_rss=%dKiB ok=%v\n",
			transport, rate, calls, c["Successful call"], c["Failed call"], wall.Seconds(),
			100*cpu.Seconds()/wall.Seconds(), rss, peak, ok)
		if !ok {
			t.Logf("rate %d failed calls; errors:\n%s", rate, sipTail(s.errs, 10))
			break
		}
		best = rate
		// Let retransmission timers and media sessions of the step drain.
		time.Sleep(2 * time.Second)
	}
	fmt.Printf("BENCH sip cps trunk=%s best_rate_with_0_failed=%d (over %ds per step)\n", transport, best, secs)
	if best == 0 {
		t.Errorf("no rate passed with 0 failed calls; esbc log:\n%s", sipTail(e.log, 20))
	}
}

// TestSIPCallsPerSecondUDP: PBX (UDP) → esbc → trunk (UDP), zero hold time.
func TestSIPCallsPerSecondUDP(t *testing.T) { cpsLadder(t, "udp") }

// TestSIPCallsPerSecondTLS: PBX (UDP) → esbc → trunk over TLS (SIPp over
// TCP behind stunnel: SIPp 3.6.1 has no TLS), zero hold time.
func TestSIPCallsPerSecondTLS(t *testing.T) { cpsLadder(t, "tls") }

// TestSIPMemoryPerCall: RSS of esbc with ESBC_BENCH_CALLS calls up at once
// (signalling and media sessions allocated; no RTP flowing), against the
// RSS after a warm-up, and the peak RSS.
func TestSIPMemoryPerCall(t *testing.T) {
	want := sipEnvInts("ESBC_BENCH_CALLS", "1000")[0]
	n := newSIPNet(t, "udp")
	n.startTrunk(t)
	e := sipStartESBC(t, n.dir, n.config(), n.admin)
	idle, _ := e.mem(t)
	// Warm-up: pools, caches and goroutine stacks reach their working size.
	n.pbxCalls(t, "warmup", 200, 100, 0, 1000)
	time.Sleep(2 * time.Second)
	base, _ := e.mem(t)

	hold := 25 * time.Second
	rate := 250
	done := make(chan map[string]int, 1)
	go func() {
		c, _, _ := n.pbxCalls(t, "hold", want, rate, hold, want+10)
		done <- c
	}()
	deadline := time.Now().Add(hold + time.Duration(want/rate)*time.Second)
	var active float64
	for time.Now().Before(deadline) {
		active = e.metric(t, "esbc_trunk_channels_active", "trunk=sipp")
		if int(active) >= want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	rss, peak := e.mem(t)
	c := <-done
	ok := c["Successful call"] == want && c["Failed call"] == 0
	per := 0.0
	if active > 0 {
		per = float64(rss-base) / active
	}
	fmt.Printf("BENCH sip memory calls=%d active_seen=%.0f rss_idle=%dKiB rss_after_warmup=%dKiB rss_at_calls=%dKiB peak_rss=%dKiB per_call=%.1fKiB successful=%d failed=%d ok=%v\n",
		want, active, idle, base, rss, peak, per, c["Successful call"], c["Failed call"], ok)
	if int(active) < want {
		t.Errorf("only %.0f of %d calls were up at once", active, want)
	}
	if !ok {
		t.Errorf("calls failed: %v\n%s", c, sipTail(e.log, 20))
	}
}

// TestSIPMemoryRounds: the same load three times with a pause longer than
// the transaction timers (32 s) in between. Heap and goroutines should come
// back to the same level after each round; growth round after round is a
// leak. Figures only.
func TestSIPMemoryRounds(t *testing.T) {
	n := newSIPNet(t, "udp")
	n.startTrunk(t)
	e := sipStartESBC(t, n.dir, n.config(), n.admin)
	rate, secs := 200, 15
	for round := 1; round <= 3; round++ {
		c, _, _ := n.pbxCalls(t, fmt.Sprintf("round-%d", round), rate*secs, rate, 0, rate*10)
		time.Sleep(40 * time.Second)
		rss, peak := e.mem(t)
		fmt.Printf("BENCH sip rounds round=%d calls=%d successful=%d failed=%d after_40s_idle: rss=%dKiB peak_rss=%dKiB heap_inuse=%.0fKiB goroutines=%.0f active_calls=%.0f\n",
			round, rate*secs, c["Successful call"], c["Failed call"], rss, peak,
			e.metric(t, "go_memstats_heap_inuse_bytes")/1024, e.metric(t, "go_goroutines"),
			e.metric(t, "esbc_trunk_channels_active"))
	}
}

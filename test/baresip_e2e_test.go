//go:build e2e

package test

// Interop of the esbc binary with baresip, an SRTP implementation that owes
// nothing to esbc's media code or to pion: baresip (libre's SRTP) is the
// internet trunk, over SIP-TLS with SDES keys, and a sipgo UA with plain RTP
// is the PBX.
//
// baresip 1.0.0 offers only AES_CM_128_HMAC_SHA1_80 (its preferred suite is
// compiled in) and, as answerer, takes the first a=crypto line it supports.
// esbc offers AES_CM_128_HMAC_SHA1_80, _32, AEAD_AES_128_GCM and
// AEAD_AES_256_GCM in that order, so a straight call only ever negotiates
// _80: that call goes to baresip directly (trunk "baresip"). To drive the
// other suites, trunk "itsp" reaches baresip through a SIP-aware TLS relay
// (baresipRelay) that, for one call, deletes from esbc's offer every
// a=crypto line but the suite under test, as a trunk that supports that
// suite alone would send it. The keys, the SRTP packets, the answer and the
// in-dialog requests (sent to the Contacts, not through the relay) are
// untouched: the crypto is baresip's against esbc's.
//
// Wire facts of baresip 1.0.0 the checks allow for: it starts sending media
// as it answers, before esbc has its 200 OK (esbc drops those few packets as
// no_peer); it sends an RTCP APP "PING" twice as its stream starts, once in
// the clear and once as SRTCP, and its RTCP BYE+SDES ("Adjo") in the clear;
// esbc must drop the clear ones (reason srtp) and pass the SRTCP one.

import (
	"bufio"
	"bytes"
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
)

const (
	baresipModuleDir = "/usr/lib/baresip/modules"
	baresipTrunkUser = "+14155550123" // the number the PBX dials (9 + national) in E.164
	baresipDID       = "+14155550100" // the number baresip dials toward esbc
)

// The modules the test loads (config "module") and the application
// modules ("module_app": accounts file, and the dial/hangup commands).
var (
	baresipModules = []string{"g711", "ausine", "aubridge", "sndfile", "srtp", "ctrl_tcp", "rtcpsummary"}
	baresipApps    = []string{"account", "menu"}
)

// baresipRequire returns baresip's path; when baresip or one of the modules
// the test loads is missing it skips, or fails under ESBC_REQUIRE_TOOLS=1,
// naming the Debian package.
func baresipRequire(t *testing.T) string {
	t.Helper()
	missing := func(what string) {
		msg := fmt.Sprintf("%s not installed (apt-get install -y baresip-core); set ESBC_REQUIRE_TOOLS=1 to make this a failure", what)
		if os.Getenv("ESBC_REQUIRE_TOOLS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	bin := e2eRequireTool(t, "baresip")
	for _, m := range append(baresipModules, baresipApps...) {
		if _, err := os.Stat(filepath.Join(baresipModuleDir, m+".so")); err != nil {
			missing("baresip module " + m + ".so")
		}
	}
	return bin
}

// TestBaresipSRTPInterop: esbc between a PBX (sipgo, UDP, plain RTP) and
// baresip as the trunk (SIP-TLS, SRTP/SDES mandatory, auto-answer, a 440 Hz
// tone from ausine). Outbound calls for every suite baresip 1.0.0 has
// (AES_CM_128_HMAC_SHA1_80/32, AEAD_AES_128/256_GCM), inbound calls dialled
// by baresip; hang-ups from both ends. Each call checks: the suite both ends
// enabled (baresip's log, esbc's /api/v1/calls, the CDR), the 440 Hz tone
// at the PBX as 160-byte PCMU with every sequence number, the PBX's 1 kHz
// tone decoded by baresip after SRTP (its sndfile dump), no SRTP decrypt
// failure in baresip, esbc's counters (packets both ways on the SRTP leg, no
// drop but baresip's clear RTCP), baresip's SRTCP reaching the PBX
// decrypted (inbound), both legs ended (no call in /api/v1/calls) and the
// CDR written.
func TestBaresipSRTPInterop(t *testing.T) {
	bin := baresipRequire(t)
	e2eLeakCheck(t)
	dir := t.TempDir()
	ca := b2buaE2ECA(t, dir)
	ca.leaf(t, dir, "esbc", "127.0.0.1")
	trunkCert := ca.leaf(t, dir, "baresip", "127.0.0.1", "trunk.example.test")

	bs := startBaresip(t, bin, dir)
	relay := newBaresipRelay(t, trunkCert, filepath.Join(dir, "ca.pem"), fmt.Sprintf("127.0.0.1:%d", bs.sipPort+1))
	pbx := newBaresipPBX(t)

	admin, lan, wan := e2eFreePort(t), e2eFreePort(t), e2eFreePort(t)
	rtpLo := 24000 + 2*(os.Getpid()%1500)
	cdrPath := filepath.Join(dir, "cdr.jsonl")
	// Trunk "itsp" (the shared TLS e2e config, 9 + number) reaches baresip
	// through the relay; trunk "baresip" (8 + number) reaches it directly.
	cfg := b2buaE2ETLSConfig(dir, admin, lan, wan, pbx.addr(), relay.port(), rtpLo, rtpLo+99, cdrPath, "")
	cfg = strings.Replace(cfg, "numbering:", fmt.Sprintf(`  - name: baresip
    domain: trunk.example.test
    transport: tls
    servers: ["127.0.0.1:%d"]
    auth: { method: ip }
    from_user: "990500000231"
    caller_id: "+14155550100"
    allowed_caller_ids: ["+14155550100"]
    srtp: mandatory
    codecs: [PCMU, PCMA, telephone-event]
    options_interval: 1h
numbering:`, bs.sipPort+1), 1)
	cfg = strings.Replace(cfg, "  outbound:\n", "  outbound:\n    - { match: '^8(\\d+)$', number: '$1', trunk: baresip }\n", 1)
	p := e2eStartESBC(t, dir, cfg, fmt.Sprintf("127.0.0.1:%d", admin))
	pbx.esbc = sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: lan}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("esbc log:\n%s\nbaresip log:\n%s", p.tail(60), bs.tail(120))
		}
	})

	calls := 0
	// esbc_media_dropped_total{reason="srtp"} and {reason="malformed"}
	// after the previous call
	srtpDrops, malformedDrops := 0.0, 0.0
	check := func(t *testing.T, c *baresipPBXCall, mark int, suite, direction, trunk string, hangupByBaresip bool) {
		t.Helper()
		calls++
		// Runs when the call is over (or the subtest failed), so that the
		// next call counts its own drops.
		defer func() {
			srtpDrops = p.metric(t, "esbc_media_dropped_total", "reason=srtp")
			malformedDrops = p.metric(t, "esbc_media_dropped_total", "reason=malformed")
		}()
		bs.waitEvent(t, "CALL_ESTABLISHED", 10*time.Second)
		bs.waitLog(t, "SRTP is Enabled (cryptosuite="+suite+")", mark, 10*time.Second)

		baresipMediaCheck(t, c)
		// RTCP: baresip's APP "PING" as SRTCP, decrypted by esbc. Inbound,
		// esbc has the key when it arrives (esbc wrote the answer); outbound
		// it races the 200 OK, so only its absence is tolerated there.
		ping, bad := c.rtcpAtPBX()
		if len(bad) > 0 {
			t.Errorf("the PBX got datagrams on its RTCP port that are not plain RTCP (SRTCP not decrypted?): %v", bad)
		}
		if !ping && direction == "inbound" {
			t.Error("baresip's SRTCP APP PING did not reach the PBX decrypted")
		}

		info := baresipCallInfo(t, p, direction)
		if info.leg.Media == nil || info.leg.Media.Suite != suite {
			t.Errorf("esbc's SRTP leg: suite %+v, want %s", info.leg.Media, suite)
		} else {
			if info.leg.Media.PacketsIn == 0 || info.leg.Media.PacketsOut == 0 {
				t.Errorf("esbc's SRTP leg counters: %d packets in, %d out", info.leg.Media.PacketsIn, info.leg.Media.PacketsOut)
			}
			if info.leg.Media.Dropped != 0 {
				t.Logf("esbc dropped %d packets on the SRTP leg:\n%s", info.leg.Media.Dropped,
					failoverMetricLines(failoverAdmin{base: p.admin}.get(t, "/metrics"), "esbc_media_dropped_total"))
			}
		}
		// Drops on esbc's SRTP leg. no_peer: baresip's first packets, sent
		// as it answers and before esbc has the answer's key. baresip 1.0.0
		// sends two RTCP packets in the clear on its SRTP session (seen on
		// the wire), which esbc rightly refuses: an APP "PING"/"PONG" as the
		// stream starts (16 bytes, too short to be SRTCP: malformed) and
		// BYE+SDES "Adjo" as it hangs up (long enough to be SRTCP: an SRTP
		// failure, counted in this call's window or, arriving late, in the
		// next one's). So at most one of each per call; no other SRTP
		// failure. The RTP stream itself must lose nothing:
		// baresipMediaCheck wants every sequence number at the PBX.
		if d := p.metric(t, "esbc_media_dropped_total", "reason=malformed") - malformedDrops; d > 1 {
			t.Errorf("esbc_media_dropped_total{reason=\"malformed\"} rose by %v during the call: more than baresip's clear RTCP APP", d)
		}
		if d := p.metric(t, "esbc_media_dropped_total", "reason=srtp") - srtpDrops; d > 1 {
			t.Errorf("esbc_media_dropped_total{reason=\"srtp\"} rose by %v during the call: SRTP authentication/replay failures beyond baresip's clear RTCP BYE", d)
		}
		for _, reason := range []string{"source", "send"} {
			if d := p.metric(t, "esbc_media_dropped_total", "reason="+reason); d != 0 {
				t.Errorf("esbc_media_dropped_total{reason=%q} = %v", reason, d)
			}
		}

		if hangupByBaresip {
			bs.command(t, "hangup", "")
			c.waitBye(t, 10*time.Second)
		} else {
			c.hangup(t)
		}
		c.close()
		bs.waitEvent(t, "CALL_CLOSED", 10*time.Second)
		baresipWaitIdle(t, p)

		// The PBX's 1 kHz tone, decoded by baresip after SRTP.
		bs.checkReceivedTone(t, calls)
		sum := bs.waitLog(t, "EX=BareSip;", mark, 10*time.Second)
		if strings.Contains(bs.log()[mark:], "srtp: failed to decrypt") {
			t.Errorf("baresip failed to decrypt esbc's SRTP: %s", sum)
		}
		cdr := baresipCDR(t, cdrPath, calls)
		trunkOK := strings.Contains(cdr, `"trunk":"`+trunk+`"`)
		if trunk == "" { // inbound: both trunks' servers are 127.0.0.1
			trunkOK = strings.Contains(cdr, `"trunk":"itsp"`) || strings.Contains(cdr, `"trunk":"baresip"`)
		}
		if !strings.Contains(cdr, `"disposition":"answered"`) || !strings.Contains(cdr, `"srtp_suite":"`+suite+`"`) || !trunkOK {
			t.Errorf("CDR of the call (want answered, trunk %s, %s): %s", trunk, suite, cdr)
		}
	}

	for _, tc := range []struct {
		suite     string
		direct    bool // trunk "baresip": esbc's whole offer, straight to baresip
		byBaresip bool // baresip hangs up (else the PBX)
	}{
		{"AES_CM_128_HMAC_SHA1_80", true, false},
		{"AES_CM_128_HMAC_SHA1_32", false, true},
		{"AEAD_AES_128_GCM", false, false},
		{"AEAD_AES_256_GCM", false, true},
	} {
		t.Run("outbound/"+tc.suite, func(t *testing.T) {
			mark := len(bs.log())
			relayed := relay.invites()
			prefix := "9"
			if tc.direct {
				prefix = "8"
			} else {
				relay.onlySuite(tc.suite)
				defer relay.onlySuite("")
			}
			c := pbx.dial(t, prefix+strings.TrimPrefix(baresipTrunkUser, "+1"))
			if c == nil {
				return
			}
			if tc.direct {
				if relay.invites() != relayed {
					t.Error("the call to trunk \"baresip\" went through the relay")
				}
				// esbc's offer as baresip received it (its SIP trace).
				bs.waitLog(t, "a=crypto:4 ", mark, 5*time.Second)
				for i, s := range []string{"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM"} {
					if !strings.Contains(bs.log()[mark:], fmt.Sprintf("a=crypto:%d %s inline:", i+1, s)) {
						t.Errorf("esbc's offer at baresip lacks a=crypto:%d %s", i+1, s)
					}
				}
			} else if inv := relay.lastInvite(); strings.Count(inv, "a=crypto:") != 1 || !strings.Contains(inv, " "+tc.suite+" inline:") {
				t.Errorf("the relay should leave exactly the %s crypto line:\n%s", tc.suite, inv)
			}
			trunk := "itsp"
			if tc.direct {
				trunk = "baresip"
			}
			check(t, c, mark, tc.suite, "outbound", trunk, tc.byBaresip)
		})
	}

	for _, byBaresip := range []bool{false, true} {
		name := "inbound/hangup-by-pbx"
		if byBaresip {
			name = "inbound/hangup-by-baresip"
		}
		t.Run(name, func(t *testing.T) {
			mark := len(bs.log())
			bs.command(t, "dial", fmt.Sprintf("sip:%s@127.0.0.1:%d", baresipDID, wan))
			c := pbx.answered(t, 15*time.Second)
			if c == nil {
				return
			}
			// baresip's SIP trace: the INVITE went to esbc's WAN over TLS.
			overTLS := regexp.MustCompile(fmt.Sprintf(`TLS 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:%d\s*\n\s*INVITE sip:\%s@`, wan, baresipDID))
			if !overTLS.MatchString(bs.log()[mark:]) {
				t.Errorf("baresip's INVITE toward esbc not seen over TLS in its SIP trace:\n%s", bs.tail(80))
			}
			check(t, c, mark, "AES_CM_128_HMAC_SHA1_80", "inbound", "", byBaresip)
		})
	}
}

// --- baresip ---------------------------------------------------------------

// baresipProc is one baresip process with its ctrl_tcp connection.
type baresipProc struct {
	cmd     *exec.Cmd
	dir     string
	sipPort int // UDP and TCP; TLS on sipPort+1
	logPath string
	done    chan struct{}
	err     error

	ctrl     net.Conn
	readDone chan struct{}
	events   chan baresipMsg
	replies  chan baresipMsg
	token    int
}

// baresipMsg is a ctrl_tcp message: an event or a command's response.
type baresipMsg struct {
	Event    bool   `json:"event"`
	Type     string `json:"type"`
	Param    string `json:"param"`
	PeerURI  string `json:"peeruri"`
	Response bool   `json:"response"`
	OK       bool   `json:"ok"`
	Data     string `json:"data"`
	Token    string `json:"token"`
}

// baresipPorts returns p such that p and p+1 are free on TCP and UDP.
func baresipPorts(t *testing.T) int {
	t.Helper()
	for range 50 {
		p := e2eFreePort(t)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatal("no two consecutive free ports")
	return 0
}

func startBaresip(t *testing.T, bin, dir string) *baresipProc {
	t.Helper()
	b := &baresipProc{dir: filepath.Join(dir, "baresip"), sipPort: baresipPorts(t), done: make(chan struct{}),
		events: make(chan baresipMsg, 64), replies: make(chan baresipMsg, 8), readDone: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(b.dir, "snd"), 0o755); err != nil {
		t.Fatal(err)
	}
	crt, _ := os.ReadFile(filepath.Join(dir, "baresip.crt"))
	key, _ := os.ReadFile(filepath.Join(dir, "baresip.key"))
	pem := filepath.Join(b.dir, "cert.pem") // libre wants certificate and key in one file
	if err := os.WriteFile(pem, append(crt, key...), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrlPort := e2eFreePort(t)
	// One RTP/RTCP pair the kernel just found free (libre draws its port
	// from the range; a wide fixed range collides with other tests' media).
	// baresip closes a call's sockets before the next call takes them again.
	rtpLo := e2eFreeMediaPort(t)
	var mods strings.Builder
	for _, m := range baresipModules {
		fmt.Fprintf(&mods, "module\t\t%s.so\n", m)
	}
	for _, m := range baresipApps {
		fmt.Fprintf(&mods, "module_app\t\t%s.so\n", m)
	}
	// net_interface takes an address: libre skips loopback interfaces when
	// it looks one up by name ("lo" fails with "could not get network address").
	cfg := fmt.Sprintf(`poll_method		epoll
sip_listen		127.0.0.1:%d
sip_certificate		%s
sip_cafile		%s
net_interface		127.0.0.1
audio_player		aubridge,esbc-e2e
audio_source		ausine,440
ausrc_srate		48000
ausrc_channels		2
audio_alert		aubridge,esbc-e2e
rtp_ports		%d-%d
rtcp_mux		no
jitter_buffer_delay	1-5
module_path		%s
%sctrl_tcp_listen		127.0.0.1:%d
snd_path		%s
`, b.sipPort, pem, filepath.Join(dir, "ca.pem"), rtpLo, rtpLo+1, baresipModuleDir, mods.String(), ctrlPort, filepath.Join(b.dir, "snd"))
	acc := fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=tls>;regint=0;answermode=auto;mediaenc=srtp-mand;audio_codecs=PCMU;ptime=20\n",
		baresipTrunkUser, b.sipPort+1)
	for name, body := range map[string]string{"config": cfg, "accounts": acc, "contacts": ""} {
		if err := os.WriteFile(filepath.Join(b.dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b.logPath = filepath.Join(b.dir, "baresip.log")
	logf, err := os.Create(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(bin, "-f", b.dir, "-s") // -s: SIP trace in the log (wire evidence)
	b.cmd.Dir = b.dir
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.err = b.cmd.Wait()
		logf.Close()
		close(b.done)
	}()
	t.Cleanup(b.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-b.done:
			t.Fatalf("baresip exited at start: %v\n%s", b.err, b.tail(40))
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ctrlPort), time.Second)
		if err == nil {
			b.ctrl = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("baresip's ctrl_tcp not up after 15s\n%s", b.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	go b.read()
	for !e2ePortBound("tcp", b.sipPort+1) {
		if time.Now().After(deadline) {
			t.Fatalf("baresip's TLS port %d not bound\n%s", b.sipPort+1, b.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return b
}

// read decodes ctrl_tcp netstrings ("len:json,") until the connection closes.
func (b *baresipProc) read() {
	defer close(b.readDone)
	r := bufio.NewReader(b.ctrl)
	for {
		n, err := r.ReadString(':')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(n, ":")))
		if err != nil || size < 0 || size > 1<<20 {
			return
		}
		buf := make([]byte, size+1)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		var m baresipMsg
		if json.Unmarshal(buf[:size], &m) != nil {
			continue
		}
		ch := b.events
		if m.Response {
			ch = b.replies
		}
		select {
		case ch <- m:
		default: // nobody waits for it
		}
	}
}

// command sends a ctrl_tcp command and waits for its response.
func (b *baresipProc) command(t *testing.T, cmd, params string) string {
	t.Helper()
	b.token++
	tok := strconv.Itoa(b.token)
	js, _ := json.Marshal(map[string]string{"command": cmd, "params": params, "token": tok})
	_ = b.ctrl.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(b.ctrl, "%d:%s,", len(js), js); err != nil {
		t.Fatalf("baresip %s: %v", cmd, err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-b.replies:
			if m.Token != tok {
				continue
			}
			if !m.OK {
				t.Errorf("baresip %s %s: %s", cmd, params, m.Data)
			}
			return m.Data
		case <-timeout:
			t.Fatalf("baresip: no response to %s\n%s", cmd, b.tail(30))
		}
	}
}

// waitEvent waits for the next ctrl_tcp event of type typ (others are skipped).
func (b *baresipProc) waitEvent(t *testing.T, typ string, d time.Duration) baresipMsg {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case m := <-b.events:
			if m.Type == typ {
				return m
			}
		case <-timeout:
			t.Fatalf("baresip: no %s event in %s\n%s", typ, d, b.tail(40))
		}
	}
}

func (b *baresipProc) log() string {
	s, _ := os.ReadFile(b.logPath)
	return string(s)
}

func (b *baresipProc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitLog waits until the log after byte offset from holds a line
// containing s and returns that line.
func (b *baresipProc) waitLog(t *testing.T, s string, from int, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		log := b.log()
		if from > len(log) {
			from = len(log)
		}
		for _, l := range strings.Split(log[from:], "\n") {
			if strings.Contains(l, s) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("baresip log: no line with %q %s after the call started\n%s", s, d, b.tail(60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkReceivedTone reads the sndfile dump of what baresip decoded in its
// call number n (files sorted by name = by time) and checks it carries the
// PBX's 1 kHz tone.
func (b *baresipProc) checkReceivedTone(t *testing.T, n int) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(b.dir, "snd", "dump-*-dec.wav"))
	if len(files) < n {
		t.Errorf("baresip wrote %d decoded-audio dumps, want %d: %v", len(files), n, files)
		return
	}
	// sndfile names files by the second the call started; two calls in one
	// second would tie: take the newest.
	var newest string
	var newestT time.Time
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && !st.ModTime().Before(newestT) {
			newest, newestT = f, st.ModTime()
		}
	}
	wav, err := os.ReadFile(newest)
	if err != nil || len(wav) < 44 {
		t.Errorf("decoded dump %s: %v (%d bytes)", newest, err, len(wav))
		return
	}
	i := bytes.Index(wav, []byte("data"))
	if i < 0 || i+8 > len(wav) {
		t.Errorf("decoded dump %s: no data chunk", newest)
		return
	}
	pcm := wav[i+8:] // 16-bit LE mono at 8 kHz (the decoder's format)
	samples := make([]int16, len(pcm)/2)
	for i := range samples {
		samples[i] = int16(uint16(pcm[2*i]) | uint16(pcm[2*i+1])<<8)
	}
	frames, tone := 0, 0
	for off := 0; off+160 <= len(samples); off += 160 {
		frames++
		if baresipIsTone(samples[off:off+160], 1000) {
			tone++
		}
	}
	if tone < 25 {
		t.Errorf("baresip decoded %d frames, %d of them the PBX's 1 kHz tone; want >= 25", frames, tone)
	}
}

// baresipIsTone reports whether 20 ms of 8 kHz audio is a tone of freq Hz:
// loud enough and with the zero crossings of that frequency (±25 %).
func baresipIsTone(s []int16, freq int) bool {
	var energy float64
	cross := 0
	for i, v := range s {
		energy += float64(v) * float64(v)
		if i > 0 && (s[i-1] < 0) != (v < 0) {
			cross++
		}
	}
	want := 2 * freq * len(s) / 8000
	return energy/float64(len(s)) > 1e5 && cross*4 >= want*3 && cross*4 <= want*5
}

// stop ends baresip: ctrl connection closed, SIGTERM, SIGKILL after 5 s.
func (b *baresipProc) stop() {
	if b.ctrl != nil {
		_ = b.ctrl.Close()
		<-b.readDone
	}
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// --- the relay in front of baresip -----------------------------------------

// baresipRelay terminates esbc's TLS connection to "the trunk" and opens
// one to baresip for each; it copies SIP messages both ways, deleting from
// SDP bodies toward baresip every a=crypto line but one suite when asked.
type baresipRelay struct {
	ln     net.Listener
	target string
	client *cryptotls.Config
	wg     sync.WaitGroup

	mu      sync.Mutex
	suite   string     // "" = pass everything
	invite  string     // last INVITE toward baresip, as relayed
	nInvite int        // INVITEs relayed
	conns   []net.Conn // to close at the end
}

func newBaresipRelay(t *testing.T, cert cryptotls.Certificate, caFile, target string) *baresipRelay {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	ln, err := cryptotls.Listen("tcp", "127.0.0.1:0", &cryptotls.Config{Certificates: []cryptotls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	r := &baresipRelay{ln: ln, target: target, client: &cryptotls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			_ = c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *baresipRelay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *baresipRelay) onlySuite(s string) {
	r.mu.Lock()
	r.suite = s
	r.mu.Unlock()
}

func (r *baresipRelay) invites() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nInvite
}

func (r *baresipRelay) lastInvite() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.invite
}

func (r *baresipRelay) accept() {
	defer r.wg.Done()
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		out, err := cryptotls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.target, r.client)
		if err != nil {
			_ = in.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, in, out)
		r.mu.Unlock()
		r.wg.Add(2)
		go func() { // baresip → esbc: verbatim
			defer r.wg.Done()
			_, _ = io.Copy(in, out)
			_ = in.Close()
		}()
		go func() { // esbc → baresip: message by message
			defer r.wg.Done()
			_ = r.down(bufio.NewReader(in), out)
			_ = out.Close()
		}()
	}
}

var baresipContentLength = regexp.MustCompile(`(?im)^(content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$`)

// down relays SIP messages from esbc to baresip (RFC 3261 18.3 framing;
// CRLF keepalives pass as they are).
func (r *baresipRelay) down(in *bufio.Reader, out io.Writer) error {
	for {
		c, err := in.Peek(1)
		if err != nil {
			return err
		}
		if c[0] == '\r' || c[0] == '\n' {
			b, _ := in.ReadByte()
			if _, err := out.Write([]byte{b}); err != nil {
				return err
			}
			continue
		}
		var head bytes.Buffer
		for {
			line, err := in.ReadString('\n')
			if err != nil {
				return err
			}
			head.WriteString(line)
			if line == "\r\n" || line == "\n" {
				break
			}
		}
		n := 0
		if m := baresipContentLength.FindSubmatch(head.Bytes()); m != nil {
			n, _ = strconv.Atoi(string(m[2]))
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(in, body); err != nil {
			return err
		}
		hdr := head.String()
		r.mu.Lock()
		suite := r.suite
		r.mu.Unlock()
		if suite != "" && bytes.Contains(body, []byte("a=crypto:")) {
			var kept []string
			for _, l := range strings.SplitAfter(string(body), "\n") {
				if !strings.HasPrefix(l, "a=crypto:") || strings.Contains(l, " "+suite+" ") {
					kept = append(kept, l)
				}
			}
			body = []byte(strings.Join(kept, ""))
			hdr = baresipContentLength.ReplaceAllString(hdr, "Content-Length: "+strconv.Itoa(len(body))+"\r")
		}
		if strings.HasPrefix(hdr, "INVITE ") {
			r.mu.Lock()
			r.invite = hdr + string(body)
			r.nInvite++
			r.mu.Unlock()
		}
		if _, err := io.WriteString(out, hdr); err != nil {
			return err
		}
		if _, err := out.Write(body); err != nil {
			return err
		}
	}
}

// --- the PBX ---------------------------------------------------------------

// baresipPBX is the PBX: a sipgo UA on UDP that places calls through esbc
// and answers the calls esbc sends it, with plain RTP.
type baresipPBX struct {
	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	pc      net.PacketConn
	dcc     *sipgo.DialogClientCache
	dsc     *sipgo.DialogServerCache
	esbc    sip.Uri
	served  chan struct{}
	closing chan struct{}
	wg      sync.WaitGroup
	inbound chan *baresipPBXCall
	byes    chan struct{} // BYE received on an outbound dialog
}

// baresipPBXCall is one call at the PBX with its RTP socket.
type baresipPBXCall struct {
	media  *net.UDPConn
	rtcp   *net.UDPConn   // media port + 1
	remote netip.AddrPort // esbc's LAN media address
	out    *sipgo.DialogClientSession
	in     *sipgo.DialogServerSession
	pbx    *baresipPBX
}

func newBaresipPBX(t *testing.T) *baresipPBX {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ua, _ := sipgo.NewUA(sipgo.WithUserAgent("pbx"), sipgo.WithUserAgentHostname("127.0.0.1"))
	srv, _ := sipgo.NewServer(ua)
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientConnectionAddr(pc.LocalAddr().String()))
	port := pc.LocalAddr().(*net.UDPAddr).Port
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: "127.0.0.1", Port: port}}
	p := &baresipPBX{ua: ua, srv: srv, pc: pc, dcc: sipgo.NewDialogClientCache(cli, contact),
		dsc: sipgo.NewDialogServerCache(cli, contact), served: make(chan struct{}), closing: make(chan struct{}),
		inbound: make(chan *baresipPBXCall, 4), byes: make(chan struct{}, 4)}
	srv.OnInvite(p.onInvite)
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = p.dsc.ReadAck(req, tx) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := p.dcc.ReadBye(req, tx); err == nil {
			p.byes <- struct{}{}
			return
		}
		if err := p.dsc.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		}
	})
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { defer close(p.served); _ = srv.ServeUDP(pc) }()
	if !failoverServing(ua, pc.LocalAddr().String()) {
		t.Fatal("pbx: sipgo did not take the socket")
	}
	t.Cleanup(func() {
		close(p.closing)
		p.wg.Wait()
		_ = srv.Close()
		_ = ua.Close()
		_ = pc.Close()
		<-p.served
	})
	return p
}

func (p *baresipPBX) addr() string { return p.pc.LocalAddr().String() }

func baresipSDP(port int) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n", port)
}

func baresipSDPAddr(body []byte) (netip.AddrPort, error) {
	c, m := b2buaE2EConn.FindSubmatch(body), b2buaE2EAudio.FindSubmatch(body)
	if c == nil || m == nil {
		return netip.AddrPort{}, fmt.Errorf("no media address in SDP:\n%s", body)
	}
	return netip.ParseAddrPort(string(c[1]) + ":" + string(m[1]))
}

// onInvite answers an inbound call 200 with plain RTP and hands it to the test.
func (p *baresipPBX) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	p.wg.Add(1)
	defer p.wg.Done()
	remote, err := baresipSDPAddr(req.Body())
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
		return
	}
	m, rtcp, err := baresipMediaSockets()
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 500, "Server Error", nil))
		return
	}
	c := &baresipPBXCall{media: m, rtcp: rtcp, remote: remote, pbx: p}
	dlg, err := p.dsc.ReadInvite(req, tx)
	if err != nil {
		c.close()
		return
	}
	defer dlg.Close()
	if err := dlg.RespondSDP(baresipSDP(m.LocalAddr().(*net.UDPAddr).Port)); err != nil {
		c.close()
		return
	}
	c.in = dlg
	select {
	case p.inbound <- c:
	default:
		c.close()
	}
	select {
	case <-dlg.Context().Done():
	case <-p.closing:
	}
}

// baresipMediaSockets opens the PBX's RTP socket and its RTCP socket on
// the next port (RFC 3550 11: the SDP carries no a=rtcp).
func baresipMediaSockets() (rtpConn, rtcpConn *net.UDPConn, err error) {
	for range 50 {
		rtpConn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, nil, err
		}
		port := rtpConn.LocalAddr().(*net.UDPAddr).Port
		if port < 65535 {
			rtcpConn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
			if err == nil {
				return rtpConn, rtcpConn, nil
			}
		}
		rtpConn.Close()
	}
	return nil, nil, errors.New("no free RTP/RTCP port pair")
}

// rtcpAtPBX reads what is queued on the PBX's RTCP socket (bounded) and
// reports whether a plain RTCP APP "PING" arrived (baresip sends one as its
// stream starts, twice: in the clear and as SRTCP; esbc must drop the first
// and decrypt the second) and which datagrams are not plain RTCP (SRTCP
// passed through undecrypted would leave its index and tag after the last
// RTCP packet).
func (c *baresipPBXCall) rtcpAtPBX() (ping bool, bad []string) {
	buf := make([]byte, 1500)
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		_ = c.rtcp.SetReadDeadline(deadline)
		n, err := c.rtcp.Read(buf)
		if err != nil {
			break
		}
		pkt := buf[:n]
		off := 0
		for off+4 <= n && pkt[off]>>6 == 2 && pkt[off+1] >= 200 && pkt[off+1] <= 204 {
			if pkt[off+1] == 204 && off+12 <= n && string(pkt[off+8:off+12]) == "PING" {
				ping = true
			}
			off += (int(pkt[off+2])<<8 | int(pkt[off+3]) + 1) * 4
		}
		if off != n {
			bad = append(bad, fmt.Sprintf("%x", pkt))
		}
	}
	return ping, bad
}

// dial places a call to number through esbc and waits for the answer.
func (p *baresipPBX) dial(t *testing.T, number string) *baresipPBXCall {
	t.Helper()
	m, rtcp, err := baresipMediaSockets()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	uri := p.esbc
	uri.User = number
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "200", Host: "127.0.0.1"},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}}
	s, err := p.dcc.Invite(ctx, uri, baresipSDP(m.LocalAddr().(*net.UDPAddr).Port), from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		m.Close()
		rtcp.Close()
		t.Fatalf("INVITE: %v", err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		m.Close()
		rtcp.Close()
		s.Close()
		t.Errorf("call through esbc to baresip: %v", err)
		return nil
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	remote, err := baresipSDPAddr(s.InviteResponse.Body())
	if err != nil {
		t.Fatal(err)
	}
	return &baresipPBXCall{media: m, rtcp: rtcp, remote: remote, out: s, pbx: p}
}

// answered waits for the next inbound call the PBX answered.
func (p *baresipPBX) answered(t *testing.T, d time.Duration) *baresipPBXCall {
	t.Helper()
	select {
	case c := <-p.inbound:
		return c
	case <-time.After(d):
		t.Errorf("no inbound call reached the PBX in %s", d)
		return nil
	}
}

// hangup sends BYE from the PBX.
func (c *baresipPBXCall) hangup(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if c.out != nil {
		err = c.out.Bye(ctx)
	} else {
		err = c.in.Bye(ctx)
	}
	if err != nil {
		t.Errorf("BYE from the PBX: %v", err)
	}
}

// waitBye waits for esbc's BYE on the PBX leg (the far end hung up).
func (c *baresipPBXCall) waitBye(t *testing.T, d time.Duration) {
	t.Helper()
	if c.in != nil {
		select {
		case <-c.in.Context().Done():
		case <-time.After(d):
			t.Errorf("no BYE at the PBX %s after baresip hung up", d)
		}
		return
	}
	select {
	case <-c.pbx.byes:
	case <-time.After(d):
		t.Errorf("no BYE at the PBX %s after baresip hung up", d)
	}
}

func (c *baresipPBXCall) close() {
	_ = c.media.Close()
	_ = c.rtcp.Close()
	if c.out != nil {
		_ = c.out.Close()
	}
}

// baresipMediaCheck sends the PBX's 1 kHz tone (PCMU, 20 ms) toward esbc
// while reading what esbc sends: baresip's 440 Hz tone, decrypted. It
// wants at least 50 PCMU packets of 160 bytes with advancing sequence
// numbers (bounded: 300 packet times).
func baresipMediaCheck(t *testing.T, c *baresipPBXCall) {
	t.Helper()
	const want = 50
	tone := make([]byte, 160)
	for i := range tone { // 1 kHz at 8 kHz: 8 samples per period
		tone[i] = baresipULaw(int16(8000 * baresipSin8[i%8]))
	}
	var seqs []uint16
	pts := map[uint8]int{}
	toneFrames := 0
	buf := make([]byte, 1500)
	next := time.Now()
	for i := 0; i < 300 && (len(seqs) < want || i < want); i++ {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(1000 + i),
			Timestamp: uint32(i) * 160, SSRC: 0xbad5eed}, Payload: tone}
		b, _ := pkt.Marshal()
		_, _ = c.media.WriteToUDPAddrPort(b, c.remote)
		next = next.Add(20 * time.Millisecond) // packet pacing, not readiness
		for {
			_ = c.media.SetReadDeadline(next)
			n, err := c.media.Read(buf)
			if err != nil {
				break
			}
			var in rtp.Packet
			if in.Unmarshal(buf[:n]) != nil {
				continue
			}
			pts[in.PayloadType]++
			if in.PayloadType == 0 && len(in.Payload) == 160 {
				seqs = append(seqs, in.SequenceNumber)
				s := make([]int16, 160)
				for j, u := range in.Payload {
					s[j] = baresipULawDecode(u)
				}
				if baresipIsTone(s, 440) {
					toneFrames++
				}
			}
		}
	}
	if len(seqs) < want {
		t.Errorf("PBX got %d PCMU packets of 160 bytes from esbc (payload types %v), want >= %d", len(seqs), pts, want)
		return
	}
	gaps := 0
	for i := 1; i < len(seqs); i++ {
		if seqs[i]-seqs[i-1] != 1 {
			gaps++
		}
	}
	if gaps > 0 {
		t.Errorf("RTP sequence at the PBX does not advance one by one: %d gaps or steps back in %d packets (%d..%d): esbc dropped SRTP packets", gaps, len(seqs), seqs[0], seqs[len(seqs)-1])
	}
	if toneFrames < want*3/4 {
		t.Errorf("only %d of %d packets at the PBX carry baresip's 440 Hz tone", toneFrames, len(seqs))
	}
}

var baresipSin8 = [8]float64{0, 0.7071, 1, 0.7071, 0, -0.7071, -1, -0.7071}

// baresipULaw is G.711 µ-law encoding (ITU-T G.711, the classic Sun code).
func baresipULaw(s int16) byte {
	const bias, clip = 0x84, 32635
	sign := byte(0)
	v := int(s)
	if v < 0 {
		v, sign = -v, 0x80
	}
	if v > clip {
		v = clip
	}
	v += bias
	exp := 7
	for mask := 0x4000; v&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := (v >> (exp + 3)) & 0x0f
	return ^(sign | byte(exp<<4) | byte(mant))
}

func baresipULawDecode(u byte) int16 {
	u = ^u
	t := (int(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

// --- esbc ------------------------------------------------------------------

type baresipLeg struct {
	Side  string `json:"side"`
	Media *struct {
		Suite      string
		PacketsIn  uint64
		PacketsOut uint64
		Dropped    uint64
	} `json:"media"`
}

type baresipCall struct {
	Direction string       `json:"direction"`
	State     string       `json:"state"`
	Legs      []baresipLeg `json:"legs"`
	leg       baresipLeg   // the SRTP leg
}

// baresipCallInfo returns the one call in esbc's /api/v1/calls, with its
// SRTP leg (the leg with a suite).
func baresipCallInfo(t *testing.T, p *e2eESBC, direction string) baresipCall {
	t.Helper()
	var v struct {
		Calls  []baresipCall `json:"calls"`
		Active int           `json:"active"`
	}
	body := failoverAdmin{base: p.admin}.get(t, "/api/v1/calls")
	if err := json.Unmarshal([]byte(body), &v); err != nil || len(v.Calls) != 1 {
		t.Fatalf("/api/v1/calls: want one call: %v\n%s", err, body)
	}
	c := v.Calls[0]
	if c.Direction != direction {
		t.Errorf("call direction %q, want %q", c.Direction, direction)
	}
	for _, l := range c.Legs {
		if l.Media != nil && l.Media.Suite != "" {
			c.leg = l
		}
	}
	if c.leg.Media == nil {
		t.Errorf("no SRTP leg in /api/v1/calls:\n%s", body)
	}
	return c
}

// baresipWaitIdle waits until esbc reports no call (both legs ended).
func baresipWaitIdle(t *testing.T, p *e2eESBC) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var v struct {
			Calls  []json.RawMessage `json:"calls"`
			Active int               `json:"active"`
		}
		body := failoverAdmin{base: p.admin}.get(t, "/api/v1/calls")
		if json.Unmarshal([]byte(body), &v) == nil && v.Active == 0 && len(v.Calls) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("esbc still has calls 10 s after the hang-up:\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// baresipCDR waits for the n-th CDR line and returns it.
func baresipCDR(t *testing.T, path string, n int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) > 0 && len(lines) >= n {
			return lines[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("CDR: %d lines, want %d", len(lines), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

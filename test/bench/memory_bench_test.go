//go:build bench

// Memory per active call through the esbc binary with G.711 RTP flowing on
// both legs (SPEC §6: < 50 KiB per call, signalling + media, at 1,000 calls):
//
//	go test -tags bench -v -timeout 10m -run MemoryPerCallRTP ./test/bench/
//
// SIPp plays the PBX (UAC, UDP, plain RTP/AVP offer) and the trunk (UAS,
// UDP, RTP/SAVP answer with a fixed AES_CM_128_HMAC_SHA1_80 key; the trunk
// is configured srtp: mandatory with allow_sdes_insecure, so the WAN leg
// carries SRTP without stunnel). Once every call is up and its setup
// transactions have expired (RFC 3261/6026 32 s timers), the test reads
// esbc's RSS (/proc/<pid>/status), heap and stacks (/metrics) with the calls
// idle, then starts G.711 at ESBC_BENCH_PPS packets/s on both legs of every
// call (plain RTP from the PBX socket toward esbc's LAN port, SRTP from the
// trunk socket toward esbc's WAN port, pion/srtp), and reads them again
// after the streams reached steady state. Per call = (figure − the same
// figure of a baseline) ÷ calls, against one of two baselines: "cold", the idle
// process just after start (the process's one-time growth — pools,
// arenas, maps sized for the set-up burst — is charged to the calls, so
// the figure errs high), or with ESBC_BENCH_WARM=1 "warm", the process
// after a first round of the same calls was set up and ended (the
// marginal cost of a call).
// Nothing is asserted about memory; lines start "BENCH memory".
// Knobs:
//
//	ESBC_BENCH_CALLS        concurrent calls (default 1000)
//	ESBC_BENCH_PPS          packets/s per stream and direction (default 50; 0 = no RTP)
//	ESBC_BENCH_RTP_SECONDS  RTP before the measurement (default 15)
//	ESBC_BENCH_SETTLE       seconds after the ramp before the idle figure (default 35: the
//	                        setup transactions' timers)
//	ESBC_BENCH_WARM=1       warm figures: a first round of the same calls is set up and
//	                        ended (and ESBC_BENCH_SETTLE waited) before the measured
//	                        round, and per-call figures are against the process after
//	                        it (the marginal cost of a call). Default: cold figures,
//	                        against the process just started. One run gives one of
//	                        the two: after a warm-up round the process just started
//	                        is no baseline any more.
//	ESBC_BENCH_PROFILE=dir  save esbc's heap profiles there (after a GC, from
//	                        /api/v1/debug/pprof/heap): heap-quiet.pb.gz (calls up, no RTP),
//	                        heap-rtp.pb.gz (RTP flowing), heap-idle.pb.gz and heap-warm.pb.gz (the
//	                        baselines); read with go tool pprof -sample_index=inuse_space
package bench

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// memUAC is the PBX: INVITE with a PCMA offer whose media address is the
// generator's PBX socket ([pbx_rtp]), ACK, hold for -d, BYE.
const memUAC = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="esbc memory uac">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Ext 200" <sip:200@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:200@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      User-Agent: PBX-SIPp
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 53655765 2353687637 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio [pbx_rtp] RTP/AVP 8 0 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true">
    <action>
      <ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="all,port"/>
      <log message="PORT [$port]"/>
    </action>
  </recv>
  <Reference variables="all"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Ext 200" <sip:200@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:200@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Ext 200" <sip:200@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:200@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
`

// memUAS is the trunk: 100, 200 with an RTP/SAVP PCMA answer at the
// generator's trunk socket ([trunk_rtp]) and the fixed key [trunk_key]
// (tag 1: esbc offers AES_CM_128_HMAC_SHA1_80 first), ACK, BYE → 200.
const memUAS = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="esbc memory uas">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="all,port"/>
      <log message="PORT [$port]"/>
    </action>
  </recv>
  <Reference variables="all"/>
  <send>
    <![CDATA[

      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:answer@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=trunk 53655765 2353687637 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio [trunk_rtp] RTP/SAVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
      a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:[trunk_key]
      a=sendrecv

    ]]>
  </send>
  <recv request="ACK" rtd="true" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <nop hide="true" next="end"/>
  <label id="options"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTagO[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="end"/>
</scenario>
`

// memSample is one reading of esbc's memory.
type memSample struct {
	rssKiB, peakKiB               int
	heapInuse, stackInuse, sysMem float64 // bytes
	goroutines                    float64
}

func memRead(t *testing.T, e *sipESBC) memSample {
	t.Helper()
	var s memSample
	s.rssKiB, s.peakKiB = e.mem(t)
	// One scrape for every figure: each scrape leaves garbage on esbc's heap.
	m := memScrape(t, e, "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes", "go_goroutines")
	s.heapInuse, s.stackInuse = m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"]
	s.sysMem, s.goroutines = m["go_memstats_sys_bytes"], m["go_goroutines"]
	return s
}

// memScrape reads the unlabelled samples names from one /metrics scrape.
func memScrape(t *testing.T, e *sipESBC, names ...string) map[string]float64 {
	t.Helper()
	res, err := http.Get(e.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || !slices.Contains(names, f[0]) {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out
}

// memBase names the baseline of the per-call figures.
func memBase(warm bool) string {
	if warm {
		return "warm: against the process after the warm-up round"
	}
	return "cold: against the process just started"
}

// perCall formats s − base per call.
func (s memSample) perCall(base memSample, calls int) string {
	n := float64(calls)
	return fmt.Sprintf("rss=%.1fKiB heap_inuse=%.1fKiB stacks=%.1fKiB go_sys=%.1fKiB goroutines=%.2f",
		float64(s.rssKiB-base.rssKiB)/n, (s.heapInuse-base.heapInuse)/1024/n,
		(s.stackInuse-base.stackInuse)/1024/n, (s.sysMem-base.sysMem)/1024/n, (s.goroutines-base.goroutines)/n)
}

func (s memSample) String() string {
	return fmt.Sprintf("rss=%dKiB peak_rss=%dKiB heap_inuse=%.0fKiB stacks=%.0fKiB go_sys=%.0fKiB goroutines=%.0f",
		s.rssKiB, s.peakKiB, s.heapInuse/1024, s.stackInuse/1024, s.sysMem/1024, s.goroutines)
}

// memProfile saves esbc's heap profile as dir/name when ESBC_BENCH_PROFILE=dir.
func memProfile(t *testing.T, e *sipESBC, name string) {
	t.Helper()
	dir := os.Getenv("ESBC_BENCH_PROFILE")
	if dir == "" {
		return
	}
	res, err := http.Get(e.admin + "/api/v1/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("heap profile: %d %v", res.StatusCode, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// memPair binds an RTP socket on an even port and its RTCP socket on the
// next one (esbc accepts RTCP only from the SDP port + 1).
func memPair(t *testing.T) (rtpC, rtcpC *net.UDPConn) {
	t.Helper()
	for range 100 {
		c := mediaListen(t)
		p := mediaPort(c)
		if p%2 != 0 {
			continue
		}
		c2, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
		if err != nil {
			continue
		}
		t.Cleanup(func() { c2.Close() })
		return c, c2
	}
	t.Fatal("no free even/odd port pair")
	return nil, nil
}

// memPorts reads esbc's media ports that a SIPp side logged ("PORT n"
// lines of -log_file): the LAN ports from the 200s the PBX got, the WAN
// ports from the INVITEs the trunk got. The calls' pairing does not
// matter: esbc relays each port to its own call's other leg. (Not the
// admin API: listing 1,000 calls leaves ~13 MB of garbage on esbc's heap,
// which would show in its RSS.)
func memPorts(t *testing.T, path string) []netip.AddrPort {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.AddrPort
	for _, l := range strings.Split(string(b), "\n") {
		if _, v, ok := strings.Cut(l, "PORT "); ok {
			if p, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && p > 0 && p < 65536 {
				out = append(out, netip.AddrPortFrom(mediaLo, uint16(p)))
			}
		}
	}
	return out
}

// memCallPorts is esbc's media ports of one call (paired by order only).
type memCallPorts struct{ lan, wan netip.AddrPort }

// memMediaStats sums esbc's per-leg packet counters over the calls in progress.
func memMediaStats(t *testing.T, e *sipESBC) (in, out, dropped [2]uint64) {
	t.Helper()
	res, err := http.Get(e.admin + "/api/v1/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Calls []struct {
			Legs []struct {
				Side  string `json:"side"`
				Media *struct {
					PacketsIn, PacketsOut, Dropped uint64
				} `json:"media"`
			} `json:"legs"`
		} `json:"calls"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, c := range body.Calls {
		for _, l := range c.Legs {
			if l.Media == nil {
				continue
			}
			i := 0
			if l.Side == "wan" {
				i = 1
			}
			in[i] += l.Media.PacketsIn
			out[i] += l.Media.PacketsOut
			dropped[i] += l.Media.Dropped
		}
	}
	return in, out, dropped
}

// memGenerator sends G.711 on both legs of every call: plain RTP from the
// PBX socket to esbc's LAN port, SRTP from the trunk socket to esbc's WAN
// port. Each 20 ms period is spread over 20 slices of 1 ms (calls are not
// phase-aligned in real life, and a burst of 2,000 datagrams would
// overflow the loopback backlog). Nothing reads what esbc relays back:
// esbc's own counters show it (the sockets' queues overflow into the
// kernel's drop counter, at no cost to esbc).
// Every call also sends an RTCP sender report on each leg every 5 s (SRTCP
// toward the trunk leg), so esbc's RTCP paths and SRTCP contexts are live.
func memGenerator(t *testing.T, pbx, trunk, pbxRTCP, trunkRTCP *net.UDPConn, calls []memCallPorts, enc *srtp.Context, pps int, stop <-chan struct{}) (sent int, late time.Duration) {
	t.Helper()
	pkt := make([]byte, mediaPktSize)
	pkt[0], pkt[1] = 0x80, 8 // PCMA
	for i := 12; i < len(pkt); i++ {
		pkt[i] = 0xd5 // A-law silence
	}
	out := make([]byte, 0, 256)
	var hdr rtp.Header
	nslices := 1000 / pps // 1 ms slices per packet period
	per := (len(calls) + nslices - 1) / nslices
	start := time.Now()
	for tick := 0; ; tick++ {
		select {
		case <-stop:
			return sent, late
		default:
		}
		due := start.Add(time.Duration(tick) * time.Millisecond)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		} else if -w > late {
			late = -w
		}
		lo, hi := (tick%nslices)*per, min((tick%nslices+1)*per, len(calls))
		seq := uint16(tick / nslices)
		for i := lo; i < hi; i++ {
			binary.BigEndian.PutUint16(pkt[2:], seq)
			binary.BigEndian.PutUint32(pkt[4:], uint32(tick/nslices)*160)
			binary.BigEndian.PutUint32(pkt[8:], uint32(i+1))
			if _, err := pbx.WriteToUDPAddrPort(pkt, calls[i].lan); err != nil {
				t.Error(err)
				return sent, late
			}
			binary.BigEndian.PutUint32(pkt[8:], uint32(0x10000+i))
			b, err := enc.EncryptRTP(out, pkt, &hdr)
			if err != nil {
				t.Error(err)
				return sent, late
			}
			if _, err := trunk.WriteToUDPAddrPort(b, calls[i].wan); err != nil {
				t.Error(err)
				return sent, late
			}
			sent += 2
			if int(seq)%(5*pps) != i%(5*pps) {
				continue
			}
			for leg, ssrc := range []uint32{uint32(i + 1), uint32(0x10000 + i)} {
				sr, err := (&rtcp.SenderReport{SSRC: ssrc, NTPTime: uint64(time.Now().UnixNano()), RTPTime: uint32(seq) * 160,
					PacketCount: uint32(seq), OctetCount: uint32(seq) * 160}).Marshal()
				if err != nil {
					t.Error(err)
					return sent, late
				}
				c, dst := pbxRTCP, calls[i].lan
				if leg == 1 {
					if sr, err = enc.EncryptRTCP(nil, sr, nil); err != nil {
						t.Error(err)
						return sent, late
					}
					c, dst = trunkRTCP, calls[i].wan
				}
				if _, err := c.WriteToUDPAddrPort(sr, netip.AddrPortFrom(dst.Addr(), dst.Port()+1)); err != nil {
					t.Error(err)
					return sent, late
				}
			}
		}
	}
}

// TestMemoryPerCallRTP: esbc's memory per active call with G.711 flowing
// on both legs (SRTP toward the trunk).
func TestMemoryPerCallRTP(t *testing.T) {
	want := sipEnvInts("ESBC_BENCH_CALLS", "1000")[0]
	pps := 50
	if v := os.Getenv("ESBC_BENCH_PPS"); v != "" {
		pps, _ = strconv.Atoi(v)
	}
	rtpSecs := sipEnvInts("ESBC_BENCH_RTP_SECONDS", "15")[0]
	settle := time.Duration(sipEnvInts("ESBC_BENCH_SETTLE", "35")[0]) * time.Second
	if pps < 0 || pps > 1000 || (pps > 0 && 1000%pps != 0) {
		t.Fatalf("ESBC_BENCH_PPS=%d: want 0 or a divisor of 1000", pps)
	}

	n := newSIPNet(t, "udp")
	n.inactivity = 600 * time.Second
	cfg := strings.Replace(n.config(), `srtp: "off"`, "srtp: mandatory\n    allow_sdes_insecure: true", 1)

	// The generator's sockets: the media addresses of every call's SDP.
	pbxRTP, pbxRTCP := memPair(t)
	trunkRTP, trunkRTCP := memPair(t)
	key := make([]byte, 30)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	enc, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	uac, uas := filepath.Join(n.dir, "mem_uac.xml"), filepath.Join(n.dir, "mem_uas.xml")
	for f, body := range map[string]string{uac: memUAC, uas: memUAS} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	trunkLog, pbxLog := filepath.Join(n.dir, "trunk-ports.log"), filepath.Join(n.dir, "pbx-ports.log")
	sipStartSIPp(t, n.dir, "trunk", "-sf", uas, "-t", "u1", "-i", "127.0.0.1", "-trace_logs", "-log_file", trunkLog,
		"-p", strconv.Itoa(n.trunk), "-mp", strconv.Itoa(n.trunkMedia),
		"-key", "trunk_rtp", strconv.Itoa(mediaPort(trunkRTP)),
		"-key", "trunk_key", base64.StdEncoding.EncodeToString(key))
	sipWaitBound(t, "udp", n.trunk)

	if os.Getenv("ESBC_BENCH_PROFILE") != "" {
		// A finer heap sample (the default is one per 512 KiB allocated)
		// for esbc only: build first, then run it with GODEBUG set.
		t.Setenv("ESBC_BINARY", sipBinary(t, n.dir))
		t.Setenv("GODEBUG", "memprofilerate=4096")
	}
	e := sipStartESBC(t, n.dir, cfg, n.admin)
	time.Sleep(time.Second) // the trunk's first OPTIONS, the admin server's first scrape
	idle := memRead(t, e)
	fmt.Printf("BENCH memory idle %s\n", idle)
	memProfile(t, e, "heap-idle.pb.gz")

	rate := 200
	// Warm baseline: a first round of the same calls, set up and ended,
	// and its transactions expired, before the measured round. What the
	// process keeps from it (sipgo's transaction maps sized for a burst of
	// set-ups, which Go maps never shrink, sync.Pools, heap the runtime has
	// not returned to the OS yet) is then in the baseline, not in the
	// calls: per call against it is the marginal cost of a call in a
	// process that has carried calls before; against idle (the process
	// just started) it is the cold figure, which charges the one-time
	// growth to the calls.
	warm := idle
	if os.Getenv("ESBC_BENCH_WARM") == "1" {
		w := sipStartSIPp(t, n.dir, "pbx-warm", fmt.Sprintf("127.0.0.1:%d", n.lan), "-sf", uac, "-t", "u1",
			"-i", "127.0.0.1", "-p", strconv.Itoa(n.pbx), "-mp", strconv.Itoa(n.pbxMedia), "-s", "916502530000",
			"-m", strconv.Itoa(want), "-r", strconv.Itoa(rate), "-l", strconv.Itoa(want+10),
			"-d", "2000", "-recv_timeout", "20000",
			"-key", "pbx_rtp", strconv.Itoa(mediaPort(pbxRTP)))
		if err := w.wait(t, time.Duration(want/rate)*time.Second+60*time.Second); err != nil {
			t.Fatalf("warm-up round: %v; SIPp errors:\n%s", err, sipTail(w.errs, 10))
		}
		if c := w.counts(); c["Successful call"] != want {
			t.Fatalf("warm-up round: %d of %d calls succeeded", c["Successful call"], want)
		}
		time.Sleep(settle) // the warm-up calls' transactions expire
		warm = memRead(t, e)
		fmt.Printf("BENCH memory warm baseline (%d calls set up and ended, %s before): %s\n", want, settle, warm)
		memProfile(t, e, "heap-warm.pb.gz")
	}

	hold := time.Duration(want/rate)*time.Second + settle + time.Duration(rtpSecs+20)*time.Second
	pbx := sipStartSIPp(t, n.dir, "pbx", fmt.Sprintf("127.0.0.1:%d", n.lan), "-sf", uac, "-t", "u1", "-trace_logs", "-log_file", pbxLog,
		"-i", "127.0.0.1", "-p", strconv.Itoa(n.pbx), "-mp", strconv.Itoa(n.pbxMedia), "-s", "916502530000",
		"-m", strconv.Itoa(want), "-r", strconv.Itoa(rate), "-l", strconv.Itoa(want+10),
		"-d", strconv.Itoa(int(hold/time.Millisecond)), "-recv_timeout", "20000",
		"-key", "pbx_rtp", strconv.Itoa(mediaPort(pbxRTP)))

	deadline := time.Now().Add(time.Duration(want/rate)*time.Second + 30*time.Second)
	var active float64
	for time.Now().Before(deadline) {
		if active = e.metric(t, "esbc_trunk_channels_active", "trunk=sipp"); int(active) >= want {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if int(active) < want {
		t.Fatalf("only %.0f of %d calls up; SIPp errors:\n%s\nesbc:\n%s", active, want, sipTail(pbx.errs, 10), sipTail(e.log, 20))
	}
	rampDone := time.Now()
	fmt.Printf("BENCH memory calls=%d up; peak during the ramp %s\n", want, memRead(t, e))
	time.Sleep(settle)
	quiet := memRead(t, e)
	fmt.Printf("BENCH memory calls=%d no RTP, %s after the ramp: %s\n", want, settle, quiet)
	fmt.Printf("BENCH memory calls=%d no RTP per call (%s): %s\n", want, memBase(warm != idle), quiet.perCall(warm, want))
	memProfile(t, e, "heap-quiet.pb.gz")
	if pps == 0 {
		return
	}

	lan, wan := memPorts(t, pbxLog), memPorts(t, trunkLog)
	if len(wan) > want && warm != idle {
		wan = wan[len(wan)-want:] // the warm-up round's INVITEs come first
	}
	if len(lan) != want || len(wan) != want {
		t.Fatalf("SIPp logged %d LAN and %d WAN media ports, want %d each", len(lan), len(wan), want)
	}
	calls := make([]memCallPorts, want)
	for i := range calls {
		calls[i] = memCallPorts{lan: lan[i], wan: wan[i]}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent int
	var late time.Duration
	wg.Add(1)
	cpu0, w0 := e.cpu(t), time.Now()
	go func() {
		defer wg.Done()
		sent, late = memGenerator(t, pbxRTP, trunkRTP, pbxRTCP, trunkRTCP, calls, enc, pps, stop)
	}()
	// Steady state: SRTP contexts exist after the first packets and the
	// loops' stacks have grown; sample the last few seconds.
	time.Sleep(time.Duration(rtpSecs-5) * time.Second)
	var samples []memSample
	for range 5 {
		time.Sleep(time.Second)
		samples = append(samples, memRead(t, e))
	}
	cpu, wall := e.cpu(t)-cpu0, time.Since(w0)
	memProfile(t, e, "heap-rtp.pb.gz")
	close(stop)
	wg.Wait()
	hi := samples[0]
	for _, s := range samples {
		fmt.Printf("BENCH memory calls=%d RTP %dpps/stream sample %s\n", want, pps, s)
		if s.rssKiB > hi.rssKiB {
			hi = s
		}
	}
	time.Sleep(time.Second) // what is still queued toward esbc is relayed before the count
	in, out, dropped := memMediaStats(t, e)
	fmt.Printf("BENCH memory calls=%d RTP %dpps/stream both legs (SRTP on the trunk leg) per call, highest RSS sample (%s): %s\n", want, pps, memBase(warm != idle), hi.perCall(warm, want))
	fmt.Printf("BENCH memory calls=%d RTP sent=%d over %.1fs (generator late by up to %v) esbc in lan=%d wan=%d out lan=%d wan=%d dropped lan=%d wan=%d esbc_cpu=%.0f%% of a core; ramp ended %s ago\n",
		want, sent, wall.Seconds(), late, in[0], in[1], out[0], out[1], dropped[0], dropped[1],
		100*cpu.Seconds()/wall.Seconds(), time.Since(rampDone).Round(time.Second))
	if in[0] == 0 || in[1] == 0 || out[0] == 0 || out[1] == 0 {
		t.Errorf("media did not flow both ways: in %v out %v", in, out)
	}
	pbx.stop()
}

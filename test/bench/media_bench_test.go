//go:build bench

// Media relay load figures over real loopback sockets (make bench):
//
//	go test -tags bench -v -run Media ./test/bench/...
//
// Each test prints one line per figure with the prefix "BENCH media"; the
// figures go to BENCHMARKS.md. Runs are bounded (a few seconds each) because
// the machine is shared; nothing here asserts a timing.
package bench

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/esbc/esbc/media"
	"github.com/esbc/esbc/media/sdp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

const mediaPktSize = 172 // 12-byte RTP header + 160 bytes of G.711 (20 ms)

var mediaLo = netip.MustParseAddr("127.0.0.1")

func mediaListen(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

func mediaPort(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }

func mediaSdpBody(p int, proto string, crypto ...string) []byte {
	lines := []string{"v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
		fmt.Sprintf("m=audio %d %s 0 101", p, proto), "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=ptime:20"}
	for _, c := range crypto {
		lines = append(lines, "a=crypto:"+c)
	}
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

var mediaProfiles = map[string]srtp.ProtectionProfile{
	"AES_CM_128_HMAC_SHA1_80": srtp.ProtectionProfileAes128CmHmacSha1_80,
	"AEAD_AES_128_GCM":        srtp.ProtectionProfileAeadAes128Gcm,
}

func mediaCtx(t testing.TB, c sdp.Crypto) *srtp.Context {
	su, _ := sdp.LookupSuite(c.Suite)
	x, err := srtp.CreateContext(c.Key[:su.KeyLen], c.Key[su.KeyLen:], mediaProfiles[c.Suite])
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// leg endpoints of one call as the load mediaGenerator sees them.
type mediaCallEnds struct {
	s        *media.Session
	toLAN    netip.AddrPort // esbc's mediaPort facing the PBX
	toWAN    netip.AddrPort // esbc's mediaPort facing the trunk
	trunkEnc *srtp.Context  // what the trunk encrypts with
	trunkKey sdp.Crypto
}

// mediaNewCall sets up PBX (plain) ↔ trunk (SRTP, suite) with the given peer
// sockets as far ends.
func mediaNewCall(t testing.TB, e *media.Engine, id, suite string, pbx, trunk *net.UDPConn) mediaCallEnds {
	return mediaNewCallPorts(t, e, id, suite, mediaPort(pbx), mediaPort(trunk))
}

func mediaNewCallPorts(t testing.TB, e *media.Engine, id, suite string, pbxPort, trunkPort int) mediaCallEnds {
	t.Helper()
	lan := media.LegConfig{Name: "lan", BindAddr: mediaLo, SRTP: media.SRTPOff}
	wan := media.LegConfig{Name: "wan", BindAddr: mediaLo, SRTP: media.SRTPMandatory, SignalingSecure: true}
	s, err := e.NewSession(id, lan, wan, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	out, err := s.Offer(0, mediaSdpBody(pbxPort, "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	off, _ := sdp.Parse(out)
	var tag int
	for _, v := range off.Media[0].Attrs("crypto") {
		c, _ := sdp.ParseCrypto(v)
		if c.Suite == suite {
			tag = c.Tag
		}
	}
	theirs, _ := sdp.NewCrypto(tag, suite)
	back, err := s.Answer(1, mediaSdpBody(trunkPort, "RTP/SAVP", theirs.String()))
	if err != nil {
		t.Fatal(err)
	}
	ans, _ := sdp.Parse(back)
	return mediaCallEnds{s: s,
		toLAN:    netip.AddrPortFrom(mediaLo, uint16(ans.Media[0].Port)),
		toWAN:    netip.AddrPortFrom(mediaLo, uint16(off.Media[0].Port)),
		trunkEnc: mediaCtx(t, theirs), trunkKey: theirs}
}

func mediaCPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type mediaResult struct {
	mallocs    uint64 // heap allocations in this (relay) process over the run
	sent, recv int
	cpu, wall  time.Duration
	p50, p99   time.Duration
}

func (r mediaResult) loss() float64 { return 100 * float64(r.sent-r.recv) / float64(r.sent) }

// mediaRun sends `rate` packets/s for d from src to dst (encrypting with enc if
// non-nil) and counts what arrives at sink. The RTP timestamp carries the
// send time in µs, so the receiver needs no decryption to measure latency.
func mediaRun(t testing.TB, src *net.UDPConn, dst netip.AddrPort, sink *net.UDPConn, enc *srtp.Context, ssrc uint32, rate int, d time.Duration) mediaResult {
	t.Helper()
	total := int(float64(rate) * d.Seconds())
	lat := make([]time.Duration, 0, total)
	start := time.Now()
	var recv atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for i := 0; ; i++ {
			if i%256 == 0 {
				_ = sink.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			}
			n, _, err := sink.ReadFromUDPAddrPort(buf)
			if err != nil {
				select {
				case <-done:
					return
				default:
					i = -1
					continue
				}
			}
			if n < 12 {
				continue
			}
			sentUs := binary.BigEndian.Uint32(buf[4:8])
			nowUs := uint32(time.Since(start).Microseconds())
			lat = append(lat, time.Duration(nowUs-sentUs)*time.Microsecond)
			if recv.Add(1) == int64(total) {
				return
			}
		}
	}()
	cpu0 := mediaCPUTime()
	pkt := make([]byte, mediaPktSize)
	pkt[0], pkt[1] = 0x80, 0
	binary.BigEndian.PutUint32(pkt[8:], ssrc)
	out := make([]byte, 0, 256)
	var hdr rtp.Header
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(float64(i) / float64(rate) * float64(time.Second)))
		if w := time.Until(due); w > 200*time.Microsecond {
			time.Sleep(w)
		}
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		binary.BigEndian.PutUint32(pkt[4:], uint32(time.Since(start).Microseconds()))
		b := pkt
		if enc != nil {
			var err error
			if b, err = enc.EncryptRTP(out, pkt, &hdr); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := src.WriteToUDPAddrPort(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(done)
	wg.Wait()
	wall := time.Since(start)
	r := mediaResult{sent: total, recv: int(recv.Load()), cpu: mediaCPUTime() - cpu0, wall: wall}
	slices.Sort(lat)
	if len(lat) > 0 {
		r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return r
}

func mediaNewEngine(t testing.TB, base int) *media.Engine {
	e, err := media.NewEngine(media.Config{PortMin: base, PortMax: base + 9999, Quarantine: time.Millisecond, LatchWindow: 10 * time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// mediaNopRelay is the do-nothing Go UDP relay reference: read, write, no checks.
func mediaNopRelay(t testing.TB, to netip.AddrPort) netip.AddrPort {
	c := mediaListen(t)
	_ = c.SetReadBuffer(1 << 20) // the same queue as esbc's media sockets
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], to)
		}
	}()
	return netip.AddrPortFrom(mediaLo, uint16(mediaPort(c)))
}

// mediaGenerator is the load mediaGenerator and sink in a child process (the test
// binary re-executed), so that the parent's CPU time is the relay's alone.
type mediaGenerator struct {
	cmd       *exec.Cmd
	in        io.WriteCloser
	out       *bufio.Scanner
	src, sink int
}

func mediaStartGenerator(t *testing.T) *mediaGenerator {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMediaGeneratorProcess$")
	cmd.Env = append(os.Environ(), "ESBC_BENCH_GENERATOR=1")
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &mediaGenerator{cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	f := g.expect(t, "PORTS")
	g.src, _ = strconv.Atoi(f[1])
	g.sink, _ = strconv.Atoi(f[2])
	return g
}

func (g *mediaGenerator) expect(t *testing.T, word string) []string {
	t.Helper()
	for g.out.Scan() {
		f := strings.Fields(g.out.Text())
		if len(f) > 0 && f[0] == word {
			return f
		}
	}
	t.Fatalf("mediaGenerator: no %s line (%v)", word, g.out.Err())
	return nil
}

// run asks the generator to send rate pps for d to dst (encrypting with
// key when set) and returns what its sink saw; cpu is the parent's CPU
// time over the run (the relay's).
func (g *mediaGenerator) run(t *testing.T, dst netip.AddrPort, rate int, d time.Duration, key *sdp.Crypto, ssrc uint32) mediaResult {
	t.Helper()
	k := "-"
	if key != nil {
		k = key.String()
		k = strings.ReplaceAll(k, " ", ",")
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0, w0 := mediaCPUTime(), time.Now()
	fmt.Fprintf(g.in, "RUN %s %d %d %d %s\n", dst, rate, d.Milliseconds(), ssrc, k)
	f := g.expect(t, "RESULT")
	r := mediaResult{cpu: mediaCPUTime() - cpu0, wall: time.Since(w0)}
	runtime.ReadMemStats(&m1)
	r.mallocs = m1.Mallocs - m0.Mallocs
	r.sent, _ = strconv.Atoi(f[1])
	r.recv, _ = strconv.Atoi(f[2])
	us1, _ := strconv.Atoi(f[3])
	us2, _ := strconv.Atoi(f[4])
	r.p50, r.p99 = time.Duration(us1)*time.Microsecond, time.Duration(us2)*time.Microsecond
	return r
}

// TestMediaGeneratorProcess is the child side (the helper-process idiom of
// os/exec's own tests): it does its work only when re-executed by
// mediaStartGenerator and returns at once in a normal run.
func TestMediaGeneratorProcess(t *testing.T) {
	if os.Getenv("ESBC_BENCH_GENERATOR") != "1" {
		return
	}
	src, sink := mediaListen(t), mediaListen(t)
	fmt.Printf("PORTS %d %d\n", mediaPort(src), mediaPort(sink))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) != 6 || f[0] != "RUN" {
			continue
		}
		dst := netip.MustParseAddrPort(f[1])
		rate, _ := strconv.Atoi(f[2])
		ms, _ := strconv.Atoi(f[3])
		ssrc, _ := strconv.ParseUint(f[4], 10, 32)
		var enc *srtp.Context
		if f[5] != "-" {
			c, err := sdp.ParseCrypto(strings.ReplaceAll(f[5], ",", " "))
			if err != nil {
				t.Fatal(err)
			}
			enc = mediaCtx(t, c)
		}
		r := mediaRun(t, src, dst, sink, enc, uint32(ssrc), rate, time.Duration(ms)*time.Millisecond)
		fmt.Printf("RESULT %d %d %d %d\n", r.sent, r.recv, r.p50.Microseconds(), r.p99.Microseconds())
	}
}

// TestMediaRelayThroughput: SRTP→RTP and RTP→SRTP through one esbc call at
// rising rates, the generator and sink in a child process; pps/core =
// relayed packets / CPU seconds of this (relay) process. The do-nothing Go
// relay is measured the same way as the reference.
func TestMediaRelayThroughput(t *testing.T) {
	e := mediaNewEngine(t, 50000)
	d := 1500 * time.Millisecond
	for _, suite := range []string{"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM", "nop-relay"} {
		for _, dir := range []string{"SRTP->RTP", "RTP->SRTP"} {
			if suite == "nop-relay" && dir == "RTP->SRTP" {
				continue
			}
			g := mediaStartGenerator(t)
			sinkAddr := netip.AddrPortFrom(mediaLo, uint16(g.sink))
			var dst netip.AddrPort
			var key *sdp.Crypto
			switch {
			case suite == "nop-relay":
				dst = mediaNopRelay(t, sinkAddr)
			case dir == "SRTP->RTP":
				c := mediaNewCallPorts(t, e, "tp-"+suite+dir, suite, g.sink, g.src)
				dst, key = c.toWAN, &c.trunkKey
			default:
				c := mediaNewCallPorts(t, e, "tp-"+suite+dir, suite, g.src, g.sink)
				dst = c.toLAN
			}
			for i, rate := range []int{5000, 10000, 20000, 30000, 40000, 60000} {
				ssrc := uint32(1000 + i)
				r := g.run(t, dst, rate, d, key, ssrc)
				direct := g.run(t, sinkAddr, rate, 300*time.Millisecond, key, ssrc+100)
				perCore := 0.0
				if r.cpu > 0 {
					perCore = float64(r.recv) / r.cpu.Seconds()
				}
				t.Logf("BENCH media %-23s %-9s rate=%6d pps sent=%d recv=%d loss=%.3f%% e2e p50=%v p99=%v (direct p50=%v p99=%v) relay CPU=%.1f%% of a core → %.0f pps/core, allocs/packet=%.4f (whole relay process)",
					suite, dir, rate, r.sent, r.recv, r.loss(), r.p50, r.p99, direct.p50, direct.p99,
					100*r.cpu.Seconds()/r.wall.Seconds(), perCore, float64(r.mallocs)/float64(max(r.recv, 1)))
				if r.loss() >= 0.1 {
					break
				}
			}
		}
	}
}

// TestMediaConcurrentStreams: 1,000 calls, SRTP→RTP, 50 packets/s each,
// for 3 s; loss, CPU and memory per call.
func TestMediaConcurrentStreams(t *testing.T) {
	const calls, pps = 1000, 50
	d := 3 * time.Second
	e := mediaNewEngine(t, 30000)
	// The PBX side is 8 sockets so that the generator's own sink keeps up.
	trunk := mediaListen(t)
	sinks := make([]*net.UDPConn, 8)
	for i := range sinks {
		sinks[i] = mediaListen(t)
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	g0 := runtime.NumGoroutine()
	ends := make([]mediaCallEnds, calls)
	for i := range ends {
		ends[i] = mediaNewCall(t, e, fmt.Sprint("c", i), "AES_CM_128_HMAC_SHA1_80", sinks[i%len(sinks)], trunk)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perCall := float64(m1.HeapInuse+m1.StackInuse-m0.HeapInuse-m0.StackInuse) / calls
	heapPerCall := float64(m1.HeapInuse-m0.HeapInuse) / calls
	stackPerCall := float64(m1.StackInuse-m0.StackInuse) / calls
	gPerCall := float64(runtime.NumGoroutine()-g0) / calls

	var recv atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, sink := range sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				_ = sink.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				for i := 0; i < 256; i++ {
					if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
						select {
						case <-done:
							return
						default:
						}
						break
					}
					recv.Add(1)
				}
			}
		}()
	}
	ticks := int(d / (20 * time.Millisecond))
	start := time.Now()
	cpu0 := mediaCPUTime()
	pkt := make([]byte, mediaPktSize)
	pkt[0] = 0x80
	out := make([]byte, 0, 256)
	var hdr rtp.Header
	sent := 0
	// Calls are not phase-aligned in real life: spread each 20 ms round
	// over 20 slices of 1 ms (a 1,000-packet burst would overflow the
	// loopback backlog, net.core.netdev_max_backlog = 1000, before esbc).
	per := (len(ends) + 19) / 20
	for tick := 0; tick < ticks*20; tick++ {
		if w := time.Until(start.Add(time.Duration(tick) * time.Millisecond)); w > 0 {
			time.Sleep(w)
		}
		mediaLo, hi := (tick%20)*per, min((tick%20+1)*per, len(ends))
		for i := mediaLo; i < hi; i++ {
			binary.BigEndian.PutUint16(pkt[2:], uint16(tick/20))
			binary.BigEndian.PutUint32(pkt[4:], uint32(tick/20*160))
			binary.BigEndian.PutUint32(pkt[8:], uint32(i+1))
			b, err := ends[i].trunkEnc.EncryptRTP(out, pkt, &hdr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := trunk.WriteToUDPAddrPort(b, ends[i].toWAN); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(done)
	wg.Wait()
	cpu := mediaCPUTime() - cpu0
	wall := time.Since(start)
	loss := 100 * float64(sent-int(recv.Load())) / float64(sent)
	// Memory again with the calls still up, after traffic (stacks grown by
	// the SRTP path, contexts created on the first packets).
	var m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m2)
	t.Logf("BENCH media concurrent memory/call after traffic=%.1f KiB (heap %.1f, stacks %.1f)",
		float64(m2.HeapInuse+m2.StackInuse-m0.HeapInuse-m0.StackInuse)/calls/1024,
		float64(m2.HeapInuse-m0.HeapInuse)/calls/1024, float64(m2.StackInuse-m0.StackInuse)/calls/1024)
	t.Logf("BENCH media concurrent calls=%d pps/call=%d offered=%d pps sent=%d recv=%d loss=%.3f%% process CPU (generator+relay+sink)=%.0f%% of a core; media memory/call before traffic=%.1f KiB (heap %.1f, stacks %.1f) goroutines/call=%.1f",
		calls, pps, calls*pps, sent, recv.Load(), loss, 100*cpu.Seconds()/wall.Seconds(), perCall/1024, heapPerCall/1024, stackPerCall/1024, gPerCall)
	var dropped uint64
	for _, c := range ends {
		st := c.s.Stats()
		dropped += st.Legs[0].Dropped + st.Legs[1].Dropped
	}
	sinkDrops := mediaUDPDrops(t, func(p int) bool {
		for _, c := range sinks {
			if p == mediaPort(c) {
				return true
			}
		}
		return false
	})
	esbcPorts := map[int]bool{}
	for _, c := range ends {
		for _, l := range c.s.State().Legs {
			for _, st := range l.Streams {
				esbcPorts[int(st.Local.Port())] = true
				esbcPorts[int(st.LocalRTCP.Port())] = true
			}
		}
	}
	esbcDrops := mediaUDPDrops(t, func(p int) bool { return esbcPorts[p] })
	t.Logf("BENCH media concurrent dropped by esbc=%d; kernel receive-queue drops: esbc sockets=%d, generator's sink socket=%d", dropped, esbcDrops, sinkDrops)
}

// mediaUDPDrops sums the kernel's per-socket drop counter (/proc/net/udp, last
// column) of the local ports match accepts.
func mediaUDPDrops(t testing.TB, match func(port int) bool) int {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return -1
	}
	total := 0
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 13 {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || !match(int(p)) {
			continue
		}
		d, _ := strconv.Atoi(f[len(f)-1])
		total += d
	}
	return total
}

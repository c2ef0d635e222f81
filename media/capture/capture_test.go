package capture

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"net/netip"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// needTool skips (or fails under ESBC_REQUIRE_TOOLS=1) without a program.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("ESBC_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s not installed", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

const (
	pbxPort   = 15060
	esbcPort  = 25060
	rtpPBX    = 40000
	rtpESBC   = 20000
	testCallA = "a84b4c76e66710@pbx.example"
)

var (
	pbx  = netip.MustParseAddr("10.0.0.10")
	esbc = netip.MustParseAddr("10.0.0.2")
)

func sipInvite() []byte {
	body := "v=0\r\no=- 1 1 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	return []byte("INVITE sip:+14155550100@10.0.0.2:25060 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.10:15060;branch=z9hG4bK776asdhds\r\n" +
		"Max-Forwards: 70\r\nTo: <sip:+14155550100@10.0.0.2>\r\n" +
		"From: <sip:200@10.0.0.10>;tag=1928301774\r\nCall-ID: " + testCallA + "\r\n" +
		"CSeq: 1 INVITE\r\nContact: <sip:200@10.0.0.10:15060>\r\nContent-Type: application/sdp\r\n" +
		"Content-Length: " + itoa(len(body)) + "\r\n\r\n" + body)
}

func sipOK() []byte {
	return []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.10:15060;branch=z9hG4bK776asdhds\r\n" +
		"To: <sip:+14155550100@10.0.0.2>;tag=abc\r\nFrom: <sip:200@10.0.0.10>;tag=1928301774\r\n" +
		"Call-ID: " + testCallA + "\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// rtpPacket is a PCMU RTP packet (RFC 3550 header, 160 bytes of payload).
func rtpPacket(seq uint16, ts uint32) []byte {
	b := make([]byte, 12+160)
	b[0] = 0x80
	b[1] = 0 // PCMU
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], 0x1234abcd)
	for i := 12; i < len(b); i++ {
		b[i] = 0xff
	}
	return b
}

func writeCall(c *Capture, callID string, t0 time.Time) {
	a := func(ip netip.Addr, port int) netip.AddrPort { return netip.AddrPortFrom(ip, uint16(port)) }
	c.WriteSIP(callID, a(pbx, pbxPort), a(esbc, esbcPort), sipInvite(), t0)
	c.WriteSIP(callID, a(esbc, esbcPort), a(pbx, pbxPort), sipOK(), t0.Add(10*time.Millisecond))
	for i := 0; i < 50; i++ {
		c.WriteRTP(callID, a(pbx, rtpPBX), a(esbc, rtpESBC), rtpPacket(uint16(i), uint32(i*160)), t0.Add(time.Duration(20+20*i)*time.Millisecond))
	}
}

func tshark(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(needTool(t, "tshark"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %v: %v\n%s%s", args, err, out, stderr.String())
	}
	return string(out)
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join(dir, "*.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestTsharkDecodesSIPAndRTP(t *testing.T) {
	needTool(t, "tshark")
	for _, mode := range []Mode{ModeAll, ModeCall} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			reg := prometheus.NewRegistry()
			c, err := New(Config{Dir: dir, Mode: mode}, nil, reg)
			if err != nil {
				t.Fatal(err)
			}
			writeCall(c, testCallA, time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			fs := files(t, dir)
			if len(fs) != 1 {
				t.Fatalf("files: %v", fs)
			}
			if mode == ModeCall && !strings.Contains(filepath.Base(fs[0]), "call-a84b4c76e66710_pbx.example") {
				t.Errorf("call file name %s", fs[0])
			}
			sip := tshark(t, "-r", fs[0], "-d", "udp.port==25060,sip", "-Y", "sip", "-T", "fields", "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.Call-ID", "-e", "sdp.media.port")
			lines := strings.Split(strings.TrimSpace(sip), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "INVITE\t\t"+testCallA+"\t40000") || !strings.HasPrefix(lines[1], "\t200\t"+testCallA) {
				t.Fatalf("tshark SIP:\n%s", sip)
			}
			rtp := tshark(t, "-r", fs[0], "-d", "udp.port==20000,rtp", "-Y", "rtp", "-T", "fields", "-e", "rtp.seq", "-e", "rtp.p_type", "-e", "rtp.ssrc")
			lines = strings.Split(strings.TrimSpace(rtp), "\n")
			if len(lines) != 50 || lines[0] != "0\t0\t0x1234abcd" || lines[49] != "49\t0\t0x1234abcd" {
				t.Fatalf("tshark RTP: %d lines\n%s", len(lines), rtp)
			}
			if v := testutil.ToFloat64(c.packets.WithLabelValues("rtp")); v != 50 {
				t.Errorf("packets{rtp} = %v", v)
			}
		})
	}
}

func TestSIPModeIPv6AndRotation(t *testing.T) {
	needTool(t, "tshark")
	dir := t.TempDir()
	c, err := New(Config{Dir: dir, Mode: ModeSIP, MaxFileBytes: 4000, MaxFiles: 3}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	v6a := netip.AddrPortFrom(netip.MustParseAddr("2001:db8::10"), pbxPort)
	v6b := netip.AddrPortFrom(netip.MustParseAddr("2001:db8::2"), esbcPort)
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 40; i++ {
		c.WriteSIP("x", v6a, v6b, sipInvite(), t0.Add(time.Duration(i)*time.Second))
		c.WriteRTP("x", v6a, v6b, rtpPacket(1, 1), t0) // sip mode: ignored
	}
	c.Close()
	c.Close() // idempotent
	fs := files(t, dir)
	if len(fs) != 3 {
		t.Fatalf("rotation kept %d files: %v", len(fs), fs)
	}
	var total int
	for _, f := range fs {
		st, _ := os.Stat(f)
		if st.Size() > 4000+1000 {
			t.Errorf("%s: %d bytes", f, st.Size())
		}
		out := tshark(t, "-r", f, "-d", "udp.port==25060,sip", "-Y", "sip.Method == \"INVITE\" && ipv6.src == 2001:db8::10", "-T", "fields", "-e", "sip.Method")
		total += strings.Count(out, "INVITE\n")
	}
	if total == 0 || total >= 40 {
		t.Fatalf("INVITEs in kept files: %d", total)
	}
}

func TestQueueFullDropsWithoutBlocking(t *testing.T) {
	// no writer goroutine: the queue fills and the rest is dropped
	c := &Capture{cfg: Config{Mode: ModeAll}.withDefaults(), q: make(chan rec, 4)}
	reg := prometheus.NewRegistry()
	cc, _ := New(Config{}, nil, reg) // off: metrics only
	c.packets, c.dropped = cc.packets, cc.dropped
	a := netip.MustParseAddrPort("192.0.2.1:5060")
	for i := 0; i < 10; i++ {
		c.WriteSIP("x", a, a, []byte("OPTIONS sip:a SIP/2.0\r\n\r\n"), time.Now())
	}
	if v := testutil.ToFloat64(c.dropped.WithLabelValues("queue_full")); v != 6 {
		t.Fatalf("dropped = %v", v)
	}
	var nilc *Capture
	nilc.WriteSIP("x", a, a, nil, time.Now())
	nilc.WriteRTP("x", a, a, nil, time.Now())
	nilc.EndCall("x")
	if nilc.Close() != nil || nilc.Mode() != ModeOff {
		t.Fatal("nil capture")
	}
	if _, err := New(Config{Mode: "bogus"}, nil, nil); err == nil {
		t.Fatal("bad mode accepted")
	}
	if _, err := New(Config{Mode: ModeAll}, nil, nil); err == nil {
		t.Fatal("missing dir accepted")
	}
}

func TestEndCallClosesFile(t *testing.T) {
	dir := t.TempDir()
	c, err := New(Config{Dir: dir, Mode: ModeCall}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	writeCall(c, "call-1", t0)
	c.EndCall("call-1")
	writeCall(c, "call-1", t0) // a new file after the end
	writeCall(c, "call-2", t0)
	c.Close()
	if fs := files(t, dir); len(fs) != 3 {
		t.Fatalf("files: %v", fs)
	}
}

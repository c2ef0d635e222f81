package media

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/esbc/esbc/media/capture"
)

// The diagnostic capture plugs in as it is.
var _ Tap = (*capture.Capture)(nil)

type tapRec struct {
	callID   string
	src, dst netip.AddrPort
	payload  []byte
}

// recordingTap keeps a copy of every packet shown to it.
type recordingTap struct {
	ch       chan tapRec
	overflow atomic.Int64
}

func newRecordingTap() *recordingTap { return &recordingTap{ch: make(chan tapRec, 256)} }

func (r *recordingTap) WriteRTP(callID string, src, dst netip.AddrPort, payload []byte, _ time.Time) {
	select {
	case r.ch <- tapRec{callID: callID, src: src, dst: dst, payload: bytes.Clone(payload)}:
	default:
		r.overflow.Add(1)
	}
}

// next returns the next packet shown to the tap (the deadline only avoids
// a hang).
func (r *recordingTap) next(t *testing.T) tapRec {
	t.Helper()
	select {
	case x := <-r.ch:
		return x
	case <-time.After(5 * time.Second):
		t.Fatal("tap: no packet")
		return tapRec{}
	}
}

func (r *recordingTap) expect(t *testing.T, what, callID string, src, dst netip.AddrPort, payload []byte) {
	t.Helper()
	got := r.next(t)
	if got.callID != callID || got.src != src || got.dst != dst || !bytes.Equal(got.payload, payload) {
		t.Fatalf("%s: tap got {%q %v -> %v %x}, want {%q %v -> %v %x}",
			what, got.callID, got.src, got.dst, got.payload, callID, src, dst, payload)
	}
}

func plainRTP(t testing.TB, p *peer, payload []byte) []byte {
	t.Helper()
	raw, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: p.seq, Timestamp: p.ts, SSRC: p.ssrc}, Payload: payload}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// recvRaw reads one datagram (the deadline only avoids a hang) and
// decrypts it with dec when not nil (SRTCP when rtcpPkt).
func recvRaw(t *testing.T, conn *net.UDPConn, dec func(dst, src []byte) ([]byte, error)) []byte {
	t.Helper()
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	if dec == nil {
		return buf[:n]
	}
	out, err := dec(nil, buf[:n])
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	return out
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	a := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func tapLegs() (a, b LegConfig) {
	a, b = lanLeg, wanLeg
	a.CallID, b.CallID = "pbx-leg@10.0.0.1", "trunk-leg@esbc"
	return a, b
}

// TestTapSeesPlainPacketsOnBothLegs: PBX (plain RTP) ↔ esbc ↔ trunk
// (SRTP) over real sockets; the tap sees every packet on each leg with
// that leg's addresses and Call-ID, decrypted inbound and before
// encryption outbound, RTCP included.
func TestTapSeesPlainPacketsOnBothLegs(t *testing.T) {
	for _, tc := range []struct {
		name string
		tag  int
	}{{"AES_CM_128_HMAC_SHA1_80", 1}, {"AEAD_AES_128_GCM", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newEngine(t, nil)
			la, lb := tapLegs()
			c := setupCallLegs(t, e, la, lb, tc.tag, false)
			tap := newRecordingTap()
			e.SetTap(tap)
			pbx, trunk := addrOf(c.pbx.rtp), addrOf(c.trunk.rtp)

			for i := 0; i < 3; i++ {
				// PBX → trunk: plain in on the LAN, plain before SRTP out on the WAN.
				payload := []byte(strings.Repeat("p", 160))
				payload[0] = byte(i)
				c.pbx.sendRTP(payload, 0)
				want := plainRTP(t, c.pbx, payload)
				got := recvRaw(t, c.trunk.rtp, func(d, s []byte) ([]byte, error) { return c.trunk.dec.DecryptRTP(d, s, nil) })
				if !bytes.Equal(got, want) {
					t.Fatalf("trunk decrypted %x, want %x", got, want)
				}
				tap.expect(t, "lan in", la.CallID, pbx, c.pbx.remote, want)
				tap.expect(t, "wan out", lb.CallID, c.trunk.remote, trunk, got)

				// Trunk → PBX: SRTP in, decrypted for the tap; plain out.
				payload = []byte(strings.Repeat("t", 160))
				payload[0] = byte(i)
				c.trunk.sendRTP(payload, 0)
				want = plainRTP(t, c.trunk, payload)
				got = recvRaw(t, c.pbx.rtp, nil)
				if !bytes.Equal(got, want) {
					t.Fatalf("pbx got %x, want %x", got, want)
				}
				tap.expect(t, "wan in", lb.CallID, trunk, c.trunk.remote, want)
				tap.expect(t, "lan out", la.CallID, c.pbx.remote, pbx, want)
			}

			// SRTCP from the trunk on its RTCP port (no rtcp-mux).
			rr, err := (&rtcp.ReceiverReport{SSRC: c.trunk.ssrc, Reports: []rtcp.ReceptionReport{{SSRC: c.pbx.ssrc}}}).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			enc, err := c.trunk.enc.EncryptRTCP(nil, rr, nil)
			if err != nil {
				t.Fatal(err)
			}
			esbcTrunkRTCP := netip.AddrPortFrom(c.trunk.remote.Addr(), c.trunk.remote.Port()+1)
			esbcPBXRTCP := netip.AddrPortFrom(c.pbx.remote.Addr(), c.pbx.remote.Port()+1)
			if _, err := c.trunk.rtcp.WriteToUDPAddrPort(enc, esbcTrunkRTCP); err != nil {
				t.Fatal(err)
			}
			if got := recvRaw(t, c.pbx.rtcp, nil); !bytes.Equal(got, rr) {
				t.Fatalf("pbx rtcp %x, want %x", got, rr)
			}
			tap.expect(t, "wan rtcp in", lb.CallID, addrOf(c.trunk.rtcp), esbcTrunkRTCP, rr)
			tap.expect(t, "lan rtcp out", la.CallID, esbcPBXRTCP, addrOf(c.pbx.rtcp), rr)

			if n := tap.overflow.Load(); n != 0 || len(tap.ch) != 0 {
				t.Fatalf("tap: %d extra packets, %d overflowed", len(tap.ch), n)
			}
		})
	}
}

// TestTapOffStopsIt: SetTap(nil) and a nil pointer both switch the tap
// off; a new SetTap switches it back on. The tap is called before the
// packet is sent, so once the peer has the packet, a call would already
// have been recorded: no waiting involved.
func TestTapOffStopsIt(t *testing.T) {
	e, _ := newEngine(t, nil)
	la, lb := tapLegs()
	c := setupCallLegs(t, e, la, lb, 1, false)
	tap := newRecordingTap()
	roundTrip := func() {
		t.Helper()
		c.pbx.sendRTP([]byte("to the trunk"), 0)
		c.trunk.recvRTP(c.trunk.rtp)
		c.trunk.sendRTP([]byte("to the pbx"), 0)
		c.pbx.recvRTP(c.pbx.rtp)
	}
	e.SetTap(tap)
	roundTrip()
	if len(tap.ch) != 4 {
		t.Fatalf("tap on: %d packets, want 4", len(tap.ch))
	}
	for len(tap.ch) > 0 {
		<-tap.ch
	}
	for _, off := range []Tap{nil, (*recordingTap)(nil)} {
		e.SetTap(off)
		if e.tap.Load() != nil {
			t.Fatalf("SetTap(%#v) left a tap", off)
		}
		roundTrip()
		if n := len(tap.ch); n != 0 {
			t.Fatalf("SetTap(%#v): the old tap still got %d packets", off, n)
		}
	}
	e.SetTap(tap)
	roundTrip()
	if len(tap.ch) != 4 {
		t.Fatalf("tap back on: %d packets, want 4", len(tap.ch))
	}
}

// TestTapTranscodedAndIntoCapture: with G.711 transcoding the tap shows
// µ-law on the leg that carries µ-law and A-law on the other; the
// packets reach a real media/capture in per-call mode, one file per leg
// Call-ID, as Ethernet/IP/UDP frames with the legs' addresses.
func TestTapTranscodedAndIntoCapture(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.Transcode = true })
	dir := t.TempDir()
	cp, err := capture.New(capture.Config{Dir: dir, Mode: capture.ModeCall}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	tap := newRecordingTap()
	e.SetTap(multiTap{tap, cp})

	la, lb := tapLegs()
	lb.Codecs, lb.SRTP = []string{"PCMA", "telephone-event"}, SRTPOff
	s, err := e.NewSession("x1", la, lb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pbx, trunk := newPeer(t), newPeer(t)
	out, err := s.Offer(0, bytes.Replace(offerSDP(pbx.port(), 0, "RTP/AVP"), []byte(" 0 8 101"), []byte(" 0 101"), 1))
	if err != nil {
		t.Fatal(err)
	}
	trunk.remote = esbcAddr(t, out)
	ans := bytes.Replace(offerSDP(trunk.port(), 0, "RTP/AVP"), []byte(" 0 8 101"), []byte(" 8 101"), 1)
	back, err := s.Answer(1, ans)
	if err != nil {
		t.Fatal(err)
	}
	pbx.remote = esbcAddr(t, back)

	ulaw := []byte(strings.Repeat("\x01\x80\xff", 53))
	pbx.sendRTP(ulaw, 0)
	got := recvRaw(t, trunk.rtp, nil)
	if got[1]&0x7f != 8 {
		t.Fatalf("not transcoded to PCMA: %x", got[:12])
	}
	in := plainRTP(t, pbx, ulaw)
	tap.expect(t, "lan in", la.CallID, addrOf(pbx.rtp), pbx.remote, in)
	tap.expect(t, "wan out", lb.CallID, trunk.remote, addrOf(trunk.rtp), got)
	if bytes.Equal(in[12:], got[12:]) {
		t.Fatal("transcoded payload equals the original")
	}

	e.SetTap(nil)
	if err := cp.Close(); err != nil {
		t.Fatal(err)
	}
	frames := map[string][]tapRec{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pcapng"))
	for _, f := range files {
		for _, fr := range readUDPFrames(t, f) {
			frames[fr.callID] = append(frames[fr.callID], fr)
		}
	}
	for _, want := range []tapRec{
		{callID: sanitizeForTest(la.CallID), src: addrOf(pbx.rtp), dst: pbx.remote, payload: in},
		{callID: sanitizeForTest(lb.CallID), src: trunk.remote, dst: addrOf(trunk.rtp), payload: got},
	} {
		fs := frames[want.callID]
		if len(fs) != 1 || fs[0].src != want.src || fs[0].dst != want.dst || !bytes.Equal(fs[0].payload, want.payload) {
			t.Fatalf("capture file for %s: %+v, want %+v (files %v)", want.callID, fs, want, files)
		}
	}
}

// multiTap fans out to several taps.
type multiTap []Tap

func (m multiTap) WriteRTP(callID string, src, dst netip.AddrPort, payload []byte, t time.Time) {
	for _, x := range m {
		x.WriteRTP(callID, src, dst, payload, t)
	}
}

// sanitizeForTest mirrors how capture names a call's file.
func sanitizeForTest(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// readUDPFrames decodes a capture file; callID is taken from the file name
// (esbc-call-<callID>-<time>-<seq>.pcapng).
func readUDPFrames(t *testing.T, path string) []tapRec {
	t.Helper()
	name := filepath.Base(path)
	id := strings.TrimPrefix(name, "esbc-call-")
	if i := strings.LastIndex(id, "-"); i > 0 {
		id = id[:i]
		if j := strings.LastIndex(id, "-"); j > 0 {
			id = id[:j]
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var out []tapRec
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if ip4 == nil || udp == nil {
			t.Fatalf("%s: not IPv4/UDP: %v", name, p)
		}
		src, _ := netip.AddrFromSlice(ip4.SrcIP)
		dst, _ := netip.AddrFromSlice(ip4.DstIP)
		out = append(out, tapRec{callID: id,
			src: netip.AddrPortFrom(src, uint16(udp.SrcPort)), dst: netip.AddrPortFrom(dst, uint16(udp.DstPort)),
			payload: udp.Payload})
	}
	return out
}

// TestTapSwitchedWhilePackets: SetTap flips on and off while a stream
// flows (run with -race). The tap is read once per packet, so it sees
// whole packets: every inbound record is followed by its outbound one.
func TestTapSwitchedWhilePackets(t *testing.T) {
	e, _ := newEngine(t, nil)
	la, lb := tapLegs()
	c := setupCallLegs(t, e, la, lb, 3, false)
	tap := &recordingTap{ch: make(chan tapRec, 1024)}
	const n = 200
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				e.SetTap(tap)
			} else {
				e.SetTap(nil)
			}
			runtime.Gosched() // a shared machine: spin politely
		}
	}()
	for i := 0; i < n; i++ {
		c.pbx.sendRTP([]byte{byte(i), 1, 2, 3}, 0)
		if got := c.trunk.recvRTP(c.trunk.rtp); got.Payload[0] != byte(i) {
			t.Fatalf("packet %d: got %x", i, got.Payload)
		}
	}
	close(stop)
	<-done
	if tap.overflow.Load() != 0 {
		t.Fatal("tap overflowed")
	}
	recs := len(tap.ch)
	if recs%2 != 0 {
		t.Fatalf("%d records: a packet was seen on one leg only", recs)
	}
	for i := 0; i < recs/2; i++ {
		in, out := <-tap.ch, <-tap.ch
		if in.callID != la.CallID || out.callID != lb.CallID || !bytes.Equal(in.payload, out.payload) {
			t.Fatalf("pair %d: %q %x / %q %x", i, in.callID, in.payload, out.callID, out.payload)
		}
	}
	t.Logf("%d of %d packets seen while switching", recs/2, n)
}

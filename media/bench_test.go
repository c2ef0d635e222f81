package media

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/esbc/esbc/media/capture"
)

// These benchmarks drive one relay worker's packet path directly (source
// check, SRTP, stats, the sendto toward the other peer over a real loopback
// socket) so that -benchmem shows the allocations of the hot path alone.
// The far end's own work (encrypting what it sends) is done outside the
// timer where it can be, see BenchmarkFarEndEncrypt for its cost.

func benchWorker(b *testing.B, suiteTag int, fromTrunk bool) (*worker, *call) {
	e, _ := newEngine(b, nil)
	c := setupCall(b, e, suiteTag, false)
	st := c.s.streams[0]
	ep := st.ep[0]
	if fromTrunk {
		ep = st.ep[1]
	}
	w := &worker{ep: ep, conn: ep.rtp, buf: make([]byte, bufSize)}
	return w, c
}

func rtpPacket(b *testing.B, ssrc uint32) []byte {
	p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: 1, Timestamp: 160, SSRC: ssrc}, Payload: make([]byte, 160)}
	raw, err := p.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

func BenchmarkRelayRTPToSRTP(b *testing.B) {
	for _, tc := range []struct {
		name string
		tag  int
	}{{"AES_CM_128_HMAC_SHA1_80", 1}, {"AEAD_AES_128_GCM", 3}} {
		b.Run(tc.name, func(b *testing.B) { benchRTPToSRTP(b, tc.tag, nil) })
	}
}

func benchRTPToSRTP(b *testing.B, tag int, tap Tap) {
	w, c := benchWorker(b, tag, false)
	w.ep.s.e.SetTap(tap)
	pkt := rtpPacket(b, c.pbx.ssrc)
	from := netip.AddrPortFrom(lo, uint16(c.pbx.port()))
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		binary.BigEndian.PutUint32(pkt[4:], uint32(i)*160)
		w.handle(w.buf[:copy(w.buf, pkt)], from)
	}
	b.StopTimer()
	if d := c.s.Stats().Legs[0].Dropped; d != 0 {
		b.Fatalf("dropped %d", d)
	}
}

func BenchmarkRelaySRTPToRTP(b *testing.B) {
	for _, tc := range []struct {
		name string
		tag  int
	}{{"AES_CM_128_HMAC_SHA1_80", 1}, {"AEAD_AES_128_GCM", 3}} {
		b.Run(tc.name, func(b *testing.B) { benchSRTPToRTP(b, tc.tag, nil) })
	}
}

func benchSRTPToRTP(b *testing.B, tag int, tap Tap) {
	w, c := benchWorker(b, tag, true)
	w.ep.s.e.SetTap(tap)
	pkt := rtpPacket(b, c.trunk.ssrc)
	enc := make([]byte, 0, bufSize)
	var hdr rtp.Header
	from := netip.AddrPortFrom(lo, uint16(c.trunk.port()))
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		binary.BigEndian.PutUint32(pkt[4:], uint32(i)*160)
		// The far end's encryption is part of this loop (it cannot be
		// precomputed for b.N packets under replay protection).
		out, err := c.trunk.enc.EncryptRTP(enc, pkt, &hdr)
		if err != nil {
			b.Fatal(err)
		}
		w.handle(w.buf[:copy(w.buf, out)], from)
	}
	b.StopTimer()
	if d := c.s.Stats().Legs[1].Dropped; d != 0 {
		b.Fatalf("dropped %d", d)
	}
}

// nopTap is the cheapest tap: what remains is the cost of the hook itself
// (an atomic load, two interface calls per packet).
type nopTap struct{}

func (nopTap) WriteRTP(string, netip.AddrPort, netip.AddrPort, []byte, time.Time) {}

// BenchmarkRelayTap compares the relay with no tap, a tap that does
// nothing, and the real media/capture (mode all, writing pcapng to a temp
// dir; its writer goroutine competes for the CPU, packets beyond its queue
// are dropped and counted, not waited for), AES_CM_128_HMAC_SHA1_80. The
// capture case allocates (in capture, and -benchmem counts its writer
// goroutine too), so it runs only with ESBC_BENCH_CAPTURE=1: the default
// run keeps showing 0 allocs/op for the media path.
func BenchmarkRelayTap(b *testing.B) {
	for _, tc := range []struct {
		name string
		tap  func(b *testing.B) Tap
	}{
		{"off", func(*testing.B) Tap { return nil }},
		{"nop", func(*testing.B) Tap { return nopTap{} }},
		{"capture", func(b *testing.B) Tap {
			if os.Getenv("ESBC_BENCH_CAPTURE") != "1" {
				b.Skip("set ESBC_BENCH_CAPTURE=1 to measure with media/capture")
			}
			cp, err := capture.New(capture.Config{Dir: b.TempDir(), Mode: capture.ModeAll, MaxFileBytes: 20 << 20, MaxFiles: 2}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = cp.Close() })
			return cp
		}},
	} {
		b.Run("RTPToSRTP/"+tc.name, func(b *testing.B) { benchRTPToSRTP(b, 1, tc.tap(b)) })
		b.Run("SRTPToRTP/"+tc.name, func(b *testing.B) { benchSRTPToRTP(b, 1, tc.tap(b)) })
	}
}

func BenchmarkFarEndEncrypt(b *testing.B) {
	_, c := benchWorker(b, 1, true)
	pkt := rtpPacket(b, c.trunk.ssrc)
	enc := make([]byte, 0, bufSize)
	var hdr rtp.Header
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		if _, err := c.trunk.enc.EncryptRTP(enc, pkt, &hdr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRelayPlain(b *testing.B) {
	e, _ := newEngine(b, nil)
	lan2 := lanLeg
	lan2.Name = "lan2"
	s, err := e.NewSession("plain", lanLeg, lan2, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p1, p2 := newPeer(b), newPeer(b)
	if _, err := s.Offer(0, offerSDP(p1.port(), 0, "RTP/AVP")); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Answer(1, offerSDP(p2.port(), 0, "RTP/AVP")); err != nil {
		b.Fatal(err)
	}
	ep := s.streams[0].ep[0]
	w := &worker{ep: ep, conn: ep.rtp, buf: make([]byte, bufSize)}
	pkt := rtpPacket(b, 7)
	from := netip.AddrPortFrom(lo, uint16(p1.port()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		w.handle(w.buf[:copy(w.buf, pkt)], from)
	}
}

func BenchmarkG711Transcode(b *testing.B) {
	payload := make([]byte, 160)
	b.ReportAllocs()
	b.SetBytes(160)
	for i := 0; i < b.N; i++ {
		for j := range payload {
			payload[j] = ulawToAlaw[payload[j]]
		}
	}
}

// BenchmarkRelayLoop sends RTP from the PBX peer's socket through esbc's
// socket, its RTP goroutine (the netpoller wait, the buffer borrowed from
// bufPool) and SRTP to the trunk peer's socket, one packet at a time:
// -benchmem counts every allocation of the process, so 0 allocs/op covers
// the read loop too, not only the packet path of the benchmarks above.
func BenchmarkRelayLoop(b *testing.B) {
	e, _ := newEngine(b, nil)
	c := setupCall(b, e, 1, false)
	pkt := rtpPacket(b, c.pbx.ssrc)
	buf := make([]byte, bufSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		binary.BigEndian.PutUint32(pkt[4:], uint32(i)*160)
		if _, err := c.pbx.rtp.WriteToUDPAddrPort(pkt, c.pbx.remote); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.trunk.rtp.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if st := c.s.Stats(); st.Legs[0].Dropped != 0 || st.Legs[1].PacketsOut != uint64(b.N) {
		b.Fatalf("dropped %d, relayed %d of %d", st.Legs[0].Dropped, st.Legs[1].PacketsOut, b.N)
	}
}

package media

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pion/rtp"
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
		b.Run(tc.name, func(b *testing.B) {
			w, c := benchWorker(b, tc.tag, false)
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
		})
	}
}

func BenchmarkRelaySRTPToRTP(b *testing.B) {
	for _, tc := range []struct {
		name string
		tag  int
	}{{"AES_CM_128_HMAC_SHA1_80", 1}, {"AEAD_AES_128_GCM", 3}} {
		b.Run(tc.name, func(b *testing.B) {
			w, c := benchWorker(b, tc.tag, true)
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
		})
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

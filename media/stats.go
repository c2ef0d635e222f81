package media

import (
	"encoding/binary"
	"math"
	"sync/atomic"
	"time"
)

// rxStats follows one incoming RTP stream (RFC 3550 A.1 sequence tracking,
// A.8 jitter). It is owned by the reader goroutine of the endpoint; the
// figures other goroutines read are published in endpointStats atomics.
type rxStats struct {
	init     bool
	ssrc     uint32
	maxSeq   uint16
	cycles   uint32
	baseSeq  uint32
	badSeq   uint32
	received int64
	lostPrev int64 // lost by earlier sources (SSRC changes, restarts)
	transit  int64
	jitter   float64 // in timestamp units
	haveTr   bool
}

const (
	maxDropout  = 3000
	maxMisorder = 100
)

func (r *rxStats) restart(seq uint16, ssrc uint32) {
	if r.init {
		r.lostPrev += r.lost()
	}
	r.init = true
	r.ssrc = ssrc
	r.baseSeq = uint32(seq)
	r.maxSeq = seq
	r.cycles = 0
	r.received = 0
	r.badSeq = 1<<16 + 1
	r.haveTr = false
}

func (r *rxStats) lost() int64 {
	expected := int64(r.cycles) + int64(r.maxSeq) - int64(r.baseSeq) + 1
	return expected - r.received
}

func (r *rxStats) totalLost() int64 { return r.lostPrev + r.lost() }

// update takes one packet; arrival is in the stream's timestamp units.
func (r *rxStats) update(seq uint16, ts, ssrc uint32, arrival int64) {
	if !r.init || ssrc != r.ssrc {
		r.restart(seq, ssrc)
	} else {
		udelta := seq - r.maxSeq
		switch {
		case udelta < maxDropout:
			if seq < r.maxSeq {
				r.cycles += 1 << 16
			}
			r.maxSeq = seq
		case udelta <= 1<<16-maxMisorder:
			// A jump: restart when two packets in a row confirm it.
			if uint32(seq) == r.badSeq {
				r.restart(seq, ssrc)
			} else {
				r.badSeq = uint32(seq+1) & 0xffff
				return
			}
		default:
			// duplicate or reordered: counted, no jitter
			r.received++
			return
		}
	}
	r.received++
	transit := arrival - int64(ts)
	if r.haveTr {
		d := transit - r.transit
		if d < 0 {
			d = -d
		}
		if d < 1<<24 { // ignore timestamp discontinuities
			r.jitter += (float64(d) - r.jitter) / 16
		}
	}
	r.transit = transit
	r.haveTr = true
}

// endpointStats are the published per-endpoint figures.
type endpointStats struct {
	packetsIn, bytesIn   atomic.Uint64
	packetsOut, bytesOut atomic.Uint64
	lost                 atomic.Int64
	jitterUs             atomic.Uint64
	rttUs                atomic.Uint64
	dropped              atomic.Uint64
	lastRx               atomic.Int64 // unix nanoseconds of the last accepted packet
	// srSent remembers the SRs relayed toward this peer: NTP middle 32
	// bits << 32 | our send time in NTP short format, for RTT from its RR.
	srSent [4]atomic.Uint64
	srNext atomic.Uint32
}

// ntpShort is t in RFC 3550 "middle 32 bits" NTP format (1/65536 s).
func ntpShort(t time.Time) uint32 {
	ns := t.UnixNano()
	secs := uint64(ns/1e9) + 2208988800
	frac := uint64(ns%1e9) << 16 / 1e9
	return uint32(secs<<16 | frac)
}

// rtcpScan walks a plain compound RTCP packet: SRs relayed toward the other
// peer are noted in toward (for its RRs), report blocks from this peer give
// the round trip to it in from. Allocation-free.
func rtcpScan(pkt []byte, now time.Time, from, toward *endpointStats) {
	for len(pkt) >= 8 {
		if pkt[0]>>6 != 2 {
			return
		}
		length := (int(binary.BigEndian.Uint16(pkt[2:4])) + 1) * 4
		if length > len(pkt) {
			return
		}
		p := pkt[:length]
		rc := int(p[0] & 0x1f)
		var blocks []byte
		switch p[1] {
		case 200: // SR: sender info after the SSRC
			if len(p) >= 28 && toward != nil {
				mid := binary.BigEndian.Uint32(p[10:14])
				i := toward.srNext.Add(1) % uint32(len(toward.srSent))
				toward.srSent[i].Store(uint64(mid)<<32 | uint64(ntpShort(now)))
			}
			if len(p) >= 28 {
				blocks = p[28:]
			}
		case 201: // RR
			blocks = p[8:]
		}
		for i := 0; i < rc && len(blocks) >= 24; i++ {
			lsr := binary.BigEndian.Uint32(blocks[16:20])
			dlsr := binary.BigEndian.Uint32(blocks[20:24])
			blocks = blocks[24:]
			if lsr == 0 || from == nil {
				continue
			}
			for j := range from.srSent {
				v := from.srSent[j].Load()
				if uint32(v>>32) != lsr {
					continue
				}
				rtt := ntpShort(now) - uint32(v) - dlsr
				if rtt < 1<<20 { // < 16 s, else a stale or bogus report
					from.rttUs.Store(uint64(float64(rtt) / 65536 * 1e6))
				}
			}
		}
		pkt = pkt[length:]
	}
}

func usToMs(us uint64) float64 { return math.Round(float64(us)/10) / 100 }

package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// keys is the SRTP material of one direction of one endpoint (immutable
// but for its lazily created context).
type keys struct {
	suite   string
	profile srtp.ProtectionProfile
	key     []byte // master key || salt
	mki     []byte
	keyLen  int
	minRTCP int // shortest possible SRTCP packet with this key

	ctxOnce sync.Once
	ctx     *srtpCtx
	ctxErr  error
}

// srtpCtx is the one SRTP context of a key. The RTP worker uses its SRTP
// half and the RTCP worker its SRTCP half: one context per key instead of
// one per worker halves the SRTP memory of a call (each pion Context
// carries both halves: ~2.4 KiB; BENCHMARKS.md, memory). pion's Context
// is not goroutine-safe, so every use holds mu (uncontended but for the
// rare RTCP packet: RTCP is about one packet per 5 s).
type srtpCtx struct {
	mu sync.Mutex
	c  *srtp.Context
}

// context returns the key's shared context, created on first use (by the
// first packet that needs it).
func (k *keys) context() (*srtpCtx, error) {
	k.ctxOnce.Do(func() {
		// Key derivation runs deeper than the packet path: on the RTP
		// goroutine it would grow that goroutine's stack from 4 to 8 KiB
		// until a GC shrinks it (BENCHMARKS.md, memory). It runs once per
		// key on a short-lived goroutine of its own instead, the caller
		// waiting for it as it waited for the inline call.
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer func() {
				if r := recover(); r != nil {
					k.ctx, k.ctxErr = nil, fmt.Errorf("srtp context: panic: %v", r)
				}
			}()
			c, err := srtp.CreateContext(k.key[:k.keyLen], k.key[k.keyLen:], k.profile,
				srtp.SRTPReplayProtection(256), srtp.SRTCPReplayProtection(256), srtp.MasterKeyIndicator(k.mki))
			if err != nil {
				k.ctxErr = err
				return
			}
			k.ctx = &srtpCtx{c: c}
		}()
		<-done
	})
	return k.ctx, k.ctxErr
}

func (x *srtpCtx) decryptRTP(pkt []byte, hdr *rtp.Header) ([]byte, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.c.DecryptRTP(pkt, pkt, hdr)
}

func (x *srtpCtx) decryptRTCP(pkt []byte) ([]byte, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.c.DecryptRTCP(pkt, pkt, nil)
}

func (x *srtpCtx) encryptRTP(pkt []byte, hdr *rtp.Header) ([]byte, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.c.EncryptRTP(pkt, pkt, hdr)
}

func (x *srtpCtx) encryptRTCP(pkt []byte) ([]byte, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.c.EncryptRTCP(pkt, pkt, nil)
}

func (x *srtpCtx) roc(ssrc uint32) (uint32, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.c.ROC(ssrc)
}

func (x *srtpCtx) setROC(ssrc, roc uint32) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.c.SetROC(ssrc, roc)
}

// xcode converts payloads from the other leg's G.711 into this peer's.
type xcode struct {
	inPT, outPT uint8
	table       *[256]byte
}

// plan is how one endpoint talks to its peer: immutable, swapped whole
// through endpoint.plan by the control plane (Answer), read per packet.
type plan struct {
	active     bool
	remote     netip.AddrPort // peer RTP address from SDP (zero: unknown / 0.0.0.0 hold)
	remoteRTCP netip.AddrPort
	expectIP   netip.Addr // latching: packets from this IP may latch within the window
	latchUntil int64      // unix ns
	epoch      uint64     // a new epoch restarts latching
	mux        bool
	recv       *keys // decrypt what the peer sends (nil = plain RTP)
	send       *keys // encrypt what we send to the peer (nil = plain)
	xc         *xcode
	raw        bool // not RTP (T.38 udptl): forwarded as is, no SRTP, no stats
	clockRate  int64
	codec      string
	direction  string
}

// endpoint is one stream (m-line) on one leg: an RTP and an RTCP socket,
// each with its reader goroutine.
type endpoint struct {
	s      *Session
	leg    int
	index  int
	media  string
	drops  *[numReasons]prometheus.Counter
	rtp    *net.UDPConn
	rtcp   *net.UDPConn
	port   int
	v6     bool
	other  *endpoint
	rtcpID int32 // registration with the engine's RTCP poller

	// for the Tap (immutable)
	callID           string
	local, localRTCP netip.AddrPort

	plan     atomic.Pointer[plan]
	latched  atomic.Pointer[netip.AddrPort] // RTP source latched (for State and sends)
	latchedC atomic.Pointer[netip.AddrPort] // RTCP source latched
	sendSSRC atomic.Uint32
	sendROC  atomic.Uint32
	st       endpointStats
	wg       sync.WaitGroup
}

func (ep *endpoint) drop(r int) {
	ep.st.dropped.Add(1)
	ep.drops[r].Inc()
}

// start runs the RTP socket's goroutine and hands the RTCP socket to the
// engine's RTCP poller.
func (ep *endpoint) start() error {
	id, err := ep.s.e.rtcp.register(&worker{ep: ep, conn: ep.rtcp, isRTCP: true})
	if err != nil {
		return err
	}
	ep.rtcpID = id
	ep.wg.Add(1)
	go ep.s.e.rtpLoop(&worker{ep: ep, conn: ep.rtp})
	return nil
}

func (ep *endpoint) close() {
	ep.s.e.rtcp.unregister(ep.rtcpID)
	_ = ep.rtp.Close()
	_ = ep.rtcp.Close()
	ep.wg.Wait()
}

// worker is the state of one reader goroutine: its buffers, its parsed
// headers and the SRTP contexts it alone uses.
type worker struct {
	ep     *endpoint
	conn   *net.UDPConn
	isRTCP bool

	buf   []byte // the packet is read, decrypted, transcoded and encrypted in place (nil: borrowed per packet from bufPool)
	spare []byte // copy of a packet while an old decrypt context is still valid
	hdr   rtp.Header

	epoch   uint64
	latched netip.AddrPort

	recvKeys *keys
	dec      *srtpCtx
	oldDec   *srtpCtx // previous key: kept until the new one authenticates a packet

	sendKeys *keys
	enc      *srtpCtx
	seqMap   seqMap
	lastSSRC uint32
	lastSeq  uint16
	hasSSRC  bool

	rx rxStats
}

// bufSize is a malloc size class; datagrams are read into the first
// bufSize-headroom bytes (1,504: above the 1,472 bytes of UDP payload in a
// 1,500-byte IPv4 packet) so that in-place encryption can append the
// SRTP/SRTCP tag, MKI and SRTCP index without reallocating.
const (
	bufSize  = 1536
	headroom = 32
)

// bufPool lends the RTP loops their packet buffer (Linux, rtpLoop): a
// buffer is held only while a packet is read and relayed, not while the
// loop waits for the next one, so 1,000 calls need a handful of buffers
// instead of 2,000 (3 KiB per call; BENCHMARKS.md, memory). Pointers to
// arrays: Get and Put do not allocate.
var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// loop runs a worker with a buffer of its own until its socket closes; a
// panic is counted and the loop goes on.
func (e *Engine) loop(w *worker) {
	defer w.ep.wg.Done()
	w.buf = make([]byte, bufSize)
	for !w.serve() {
	}
}

func (w *worker) serve() (done bool) {
	defer func() {
		if r := recover(); r != nil {
			w.ep.s.e.panics.Inc()
			w.ep.s.e.log.Error("panic in media loop", zap.String("session", w.ep.s.id), zap.Any("panic", r), zap.Stack("stack"))
			done = false
		}
	}()
	for {
		n, from, err := w.conn.ReadFromUDPAddrPort(w.buf[:bufSize-headroom])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return true
			}
			continue
		}
		w.handle(w.buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

// localAddr is esbc's address of the socket this worker reads.
func (w *worker) localAddr() netip.AddrPort {
	if w.isRTCP {
		return w.ep.localRTCP
	}
	return w.ep.local
}

func isRTCPByte(b byte) bool { return b >= 192 && b <= 223 } // RFC 5761 4

func (w *worker) handle(pkt []byte, from netip.AddrPort) {
	ep := w.ep
	px := ep.plan.Load()
	if px == nil || !px.active {
		ep.drop(reasonNoPeer)
		return
	}
	now := time.Now()
	if px.raw {
		w.relayRaw(px, pkt, from, now)
		return
	}
	rtcpPkt := w.isRTCP || (len(pkt) >= 2 && isRTCPByte(pkt[1]))
	latch, ok := w.accept(px, from, now, rtcpPkt)
	if !ok {
		ep.drop(reasonSource)
		return
	}
	// RTCP is taken only where it was negotiated (the RTP port with
	// rtcp-mux, else the RTCP port), so each SRTCP stream toward the other
	// peer is encrypted by exactly one context: two contexts on one key
	// would reuse SRTCP indexes (RFC 3711 9.1).
	minLen := 12
	if rtcpPkt {
		minLen = 8
	}
	if len(pkt) < minLen || pkt[0]>>6 != 2 || (rtcpPkt && (!isRTCPByte(pkt[1]) || w.isRTCP == px.mux)) {
		ep.drop(reasonMalformed)
		return
	}
	if rtcpPkt && px.recv != nil && len(pkt) < px.recv.minRTCP {
		// Too short to be SRTCP: plain RTCP sent on an SRTP leg (baresip
		// sends its first APP "PING" and its closing BYE in clear).
		ep.drop(reasonMalformed)
		return
	}
	plain := pkt
	if px.recv != nil {
		if px.recv != w.recvKeys {
			if !w.rekeyRecv(px.recv) {
				ep.drop(reasonSRTP)
				return
			}
		}
		var err error
		plain, err = w.decrypt(pkt, rtcpPkt)
		if err != nil {
			ep.drop(reasonSRTP)
			return
		}
	}
	if latch {
		// On an SRTP leg only an authenticated packet moves the latch: a
		// spoofed source address cannot redirect the call's media.
		w.latch(from)
	}
	// One atomic load per packet; the plain packet is shown before
	// transcoding rewrites it in place.
	tap := ep.s.e.tap.Load()
	if tap != nil {
		tap.t.WriteRTP(ep.callID, from, w.localAddr(), plain, now)
	}
	ep.st.lastRx.Store(now.UnixNano())
	ep.st.packetsIn.Add(1)
	ep.st.bytesIn.Add(uint64(len(pkt)))
	o := ep.other
	py := o.plan.Load()
	if rtcpPkt {
		rtcpScan(plain, now, &ep.st, &o.st)
	} else {
		w.rx.update(uint16(plain[2])<<8|uint16(plain[3]),
			uint32(plain[4])<<24|uint32(plain[5])<<16|uint32(plain[6])<<8|uint32(plain[7]),
			uint32(plain[8])<<24|uint32(plain[9])<<16|uint32(plain[10])<<8|uint32(plain[11]),
			arrivalUnits(now, px.clockRate))
		ep.st.lost.Store(w.rx.totalLost())
		ep.st.jitterUs.Store(uint64(w.rx.jitter * 1e6 / float64(px.clockRate)))
	}
	if py == nil || !py.active {
		ep.drop(reasonNoPeer)
		return
	}
	// Destination: the latched source of the other peer, else its SDP address.
	conn, self := o.rtp, o.local
	var dst netip.AddrPort
	if rtcpPkt && !py.mux {
		conn, self = o.rtcp, o.localRTCP
		if l := o.latchedC.Load(); l != nil {
			dst = *l
		} else {
			dst = py.remoteRTCP
		}
	} else if l := o.latched.Load(); l != nil {
		dst = *l
	} else {
		dst = py.remote
	}
	if !dst.IsValid() || dst.Port() == 0 {
		ep.drop(reasonNoPeer)
		return
	}
	if !rtcpPkt && py.xc != nil && plain[1]&0x7f == py.xc.inPT {
		if n, err := w.hdr.Unmarshal(plain); err == nil {
			plain[1] = plain[1]&0x80 | py.xc.outPT
			t := py.xc.table
			end := len(plain)
			if w.hdr.Padding && end > n {
				end -= int(plain[end-1])
			}
			for i := n; i < end; i++ {
				plain[i] = t[plain[i]]
			}
		}
	}
	out := plain
	if py.send == nil {
		if tap != nil {
			tap.t.WriteRTP(o.callID, self, dst, plain, now)
		}
	} else {
		if py.send != w.sendKeys {
			if !w.rekeySend(py.send) {
				ep.drop(reasonSRTP)
				return
			}
		}
		var err error
		if !rtcpPkt {
			w.seqMap.apply(plain)
		}
		if tap != nil {
			// Before the in-place encryption: what the peer will decrypt.
			tap.t.WriteRTP(o.callID, self, dst, plain, now)
		}
		if rtcpPkt {
			out, err = w.enc.encryptRTCP(plain)
		} else {
			out, err = w.enc.encryptRTP(plain, &w.hdr)
			if err == nil {
				w.noteSent(o)
			}
		}
		if err != nil {
			ep.drop(reasonSRTP)
			return
		}
	}
	// Counted before the send so that a reader of Stats who saw the packet
	// arrive also sees it counted.
	o.st.packetsOut.Add(1)
	o.st.bytesOut.Add(uint64(len(out)))
	if _, err := conn.WriteToUDPAddrPort(out, dst); err != nil {
		o.st.packetsOut.Add(^uint64(0))
		o.st.bytesOut.Add(^uint64(len(out) - 1))
		o.drop(reasonSend)
	}
}

func arrivalUnits(now time.Time, rate int64) int64 {
	ns := now.UnixNano()
	return (ns/1e9)*rate + (ns%1e9)*rate/1e9
}

// accept applies the strict-source rules (see doc.go): ok says whether the
// packet comes from the peer, latch whether it would (re)latch the source.
func (w *worker) accept(px *plan, from netip.AddrPort, now time.Time, rtcpPkt bool) (latch, ok bool) {
	if px.epoch != w.epoch {
		w.epoch = px.epoch
		w.latched = netip.AddrPort{}
	}
	if w.latched.IsValid() && from == w.latched {
		return false, true
	}
	want := px.remote
	if w.isRTCP {
		want = px.remoteRTCP
	}
	inWindow := now.UnixNano() < px.latchUntil && px.expectIP.IsValid() && from.Addr() == px.expectIP
	if from != want && !inWindow {
		return false, false
	}
	// With rtcp-mux the RTP loop latches on RTP only.
	return !rtcpPkt || w.isRTCP, true
}

func (w *worker) latch(from netip.AddrPort) {
	w.latched = from
	l := from
	if w.isRTCP {
		w.ep.latchedC.Store(&l)
	} else {
		w.ep.latched.Store(&l)
	}
}

func (w *worker) rekeyRecv(k *keys) bool {
	c, err := k.context()
	if err != nil {
		w.ep.s.e.log.Warn("srtp context", zap.String("session", w.ep.s.id), zap.Error(err))
		return false
	}
	if w.dec != nil {
		if w.rx.init && !w.isRTCP {
			if roc, ok := w.dec.roc(w.rx.ssrc); ok {
				c.setROC(w.rx.ssrc, roc)
			}
		}
		w.oldDec = w.dec
	}
	w.dec = c
	w.recvKeys = k
	return true
}

func (w *worker) rekeySend(k *keys) bool {
	c, err := k.context()
	if err != nil {
		w.ep.s.e.log.Warn("srtp context", zap.String("session", w.ep.s.id), zap.Error(err))
		return false
	}
	if w.enc != nil && w.hasSSRC {
		// The stream goes on under the new key: keep its rollover counter.
		if roc, ok := w.enc.roc(w.lastSSRC); ok {
			c.setROC(w.lastSSRC, roc)
		}
	}
	w.enc = c
	w.sendKeys = k
	return true
}

// decrypt works in place. While a previous key may still be in use the
// packet is copied first: a failed AEAD open may wipe its buffer.
func (w *worker) decrypt(pkt []byte, rtcpPkt bool) ([]byte, error) {
	var out []byte
	var err error
	if w.oldDec != nil {
		if w.spare == nil {
			w.spare = make([]byte, bufSize)
		}
		copy(w.spare, pkt)
	}
	if rtcpPkt {
		out, err = w.dec.decryptRTCP(pkt)
	} else {
		out, err = w.dec.decryptRTP(pkt, &w.hdr)
	}
	if err == nil {
		w.oldDec, w.spare = nil, nil
		return out, nil
	}
	if w.oldDec == nil {
		return nil, err
	}
	pkt = pkt[:copy(pkt, w.spare[:len(pkt)])]
	if rtcpPkt {
		return w.oldDec.decryptRTCP(pkt)
	}
	return w.oldDec.decryptRTP(pkt, &w.hdr)
}

// noteSent publishes the SSRC and ROC sent toward o (for State), cheaply:
// only when the SSRC changes or the sequence number wraps.
func (w *worker) noteSent(o *endpoint) {
	ssrc, seq := w.hdr.SSRC, w.hdr.SequenceNumber
	if !w.hasSSRC || ssrc != w.lastSSRC || seq < w.lastSeq && w.lastSeq-seq > 1<<15 {
		w.hasSSRC = true
		w.lastSSRC = ssrc
		roc, _ := w.enc.roc(ssrc)
		o.sendSSRC.Store(ssrc)
		o.sendROC.Store(roc)
	}
	w.lastSeq = seq
}

// relayRaw forwards a non-RTP datagram (T.38 over UDPTL) under the same
// strict-source rules.
func (w *worker) relayRaw(px *plan, pkt []byte, from netip.AddrPort, now time.Time) {
	ep := w.ep
	latch, ok := w.accept(px, from, now, false)
	if w.isRTCP || !ok {
		ep.drop(reasonSource)
		return
	}
	if latch {
		w.latch(from)
	}
	tap := ep.s.e.tap.Load()
	if tap != nil {
		tap.t.WriteRTP(ep.callID, from, ep.local, pkt, now)
	}
	ep.st.lastRx.Store(now.UnixNano())
	ep.st.packetsIn.Add(1)
	ep.st.bytesIn.Add(uint64(len(pkt)))
	o := ep.other
	py := o.plan.Load()
	if py == nil || !py.active {
		ep.drop(reasonNoPeer)
		return
	}
	dst := py.remote
	if l := o.latched.Load(); l != nil {
		dst = *l
	}
	if !dst.IsValid() || dst.Port() == 0 {
		ep.drop(reasonNoPeer)
		return
	}
	if tap != nil {
		tap.t.WriteRTP(o.callID, o.local, dst, pkt, now)
	}
	o.st.packetsOut.Add(1)
	o.st.bytesOut.Add(uint64(len(pkt)))
	if _, err := o.rtp.WriteToUDPAddrPort(pkt, dst); err != nil {
		o.st.packetsOut.Add(^uint64(0))
		o.st.bytesOut.Add(^uint64(len(pkt) - 1))
		o.drop(reasonSend)
	}
}

// seqMap keeps the sequence numbers sent toward an SRTP peer continuous
// when the source restarts its sequence under the same SSRC (a PBX after a
// transfer or a media-server switch): a jump would otherwise make the far
// end guess the wrong rollover counter or drop the packets as replays
// (RFC 3711 3.3.1). A new SSRC starts unmapped, as a new source.
type seqMap struct {
	init            bool
	ssrc            uint32
	lastIn, lastOut uint16
	off             uint16
}

func (m *seqMap) apply(p []byte) {
	seq := binary.BigEndian.Uint16(p[2:4])
	ssrc := binary.BigEndian.Uint32(p[8:12])
	switch {
	case !m.init || ssrc != m.ssrc:
		*m = seqMap{init: true, ssrc: ssrc, lastIn: seq, lastOut: seq}
		return
	default:
		d := seq - m.lastIn
		switch {
		case d < maxDropout: // in order, or a small gap
			m.lastIn = seq
			m.lastOut = seq + m.off
		case d <= 1<<16-maxMisorder: // a jump: continue from the last sent
			m.off = m.lastOut + 1 - seq
			m.lastIn = seq
			m.lastOut = seq + m.off
		}
		// else: reordered or duplicate, mapped with the current offset
	}
	if m.off != 0 {
		binary.BigEndian.PutUint16(p[2:4], seq+m.off)
	}
}

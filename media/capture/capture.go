package capture

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Mode selects what is captured.
type Mode string

// Modes (config key capture.mode).
const (
	ModeOff  Mode = "off"  // nothing
	ModeSIP  Mode = "sip"  // SIP of every call into one rotating file (long runs)
	ModeCall Mode = "call" // SIP and RTP, one file per call (Call-ID of the leg)
	ModeAll  Mode = "all"  // SIP and RTP of every call into one rotating file
)

// Config is the capture configuration. Restart-only: a new Capture is built
// when it changes (Close the old one).
type Config struct {
	// Dir receives the .pcapng files; created if missing. Required unless
	// Mode is off.
	Dir  string
	Mode Mode
	// MaxFileBytes rotates a file once it reaches this size. Default 100 MB.
	MaxFileBytes int64
	// MaxFiles is how many files this Capture keeps: the oldest it wrote
	// is deleted when a new one would exceed it. Default 10; in call mode
	// each call file counts.
	MaxFiles int
	// QueueLen bounds the packets waiting for the writer; beyond it
	// packets are dropped and counted. Default 8192.
	QueueLen int
	// IdleClose closes a call file after this long without packets (call
	// mode). Default 30s.
	IdleClose time.Duration
}

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeOff
	}
	if c.MaxFileBytes <= 0 {
		c.MaxFileBytes = 100_000_000
	}
	if c.MaxFiles <= 0 {
		c.MaxFiles = 10
	}
	if c.QueueLen <= 0 {
		c.QueueLen = 8192
	}
	if c.IdleClose <= 0 {
		c.IdleClose = 30 * time.Second
	}
	return c
}

// ParseMode validates a capture.mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(s)); m {
	case "", ModeOff:
		return ModeOff, nil
	case ModeSIP, ModeCall, ModeAll:
		return m, nil
	}
	return ModeOff, fmt.Errorf("capture: unknown mode %q (off|sip|call|all)", s)
}

const (
	kindSIP uint8 = iota
	kindRTP
	kindEnd // close a call's file
)

// maxPayload keeps a synthesised IPv4/UDP datagram within 65535 bytes.
const maxPayload = 65535 - 60 - 8

type rec struct {
	kind     uint8
	callID   string
	src, dst netip.AddrPort
	buf      *[]byte
	t        time.Time
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// Capture writes SIP (as esbc saw it, after TLS decryption) and RTP (after
// SRTP decryption) into pcapng files. Every frame is a synthesised
// Ethernet/IPv4|IPv6/UDP packet with the real addresses and ports, so
// Wireshark shows the SIP ladder and plays the RTP. SIP received or sent
// over TCP/TLS is written as UDP datagrams carrying the decrypted text, one
// message each: there is no TCP state to fake, and each frame holds one
// whole message. Use "Decode As" (or tshark -d udp.port==N,sip / ,rtp) for
// ports Wireshark does not guess.
//
// The Write methods never block: packets go through a bounded queue to one
// writer goroutine; when the queue is full they are dropped and counted.
// All methods are safe for concurrent use and on a nil *Capture.
type Capture struct {
	cfg    Config
	log    *zap.Logger
	q      chan rec
	stop   chan struct{}
	done   chan struct{}
	closed atomic.Bool
	once   sync.Once

	packets *prometheus.CounterVec // kind
	dropped *prometheus.CounterVec // reason

	// owned by the writer goroutine
	single  *file
	calls   map[string]*file
	written []string // files created, oldest first (MaxFiles)
	seq     int
	sbuf    gopacket.SerializeBuffer
}

type file struct {
	path     string
	f        *os.File
	w        *pcapgo.NgWriter
	size     int64
	lastUsed time.Time
	callID   string
}

// New starts a Capture. With mode off it returns a Capture whose methods
// do nothing. reg may be nil.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Capture, error) {
	cfg = cfg.withDefaults()
	if _, err := ParseMode(string(cfg.Mode)); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	c := &Capture{cfg: cfg, log: log, calls: map[string]*file{}, sbuf: gopacket.NewSerializeBuffer()}
	c.packets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "esbc_capture_packets_total", Help: "Packets written to capture files, by kind (sip, rtp).",
	}, []string{"kind"})
	c.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "esbc_capture_dropped_total", Help: "Packets not captured, by reason (queue_full, write_error).",
	}, []string{"reason"})
	if reg != nil {
		// A Capture rebuilt on reload keeps counting in the collectors
		// the first one registered.
		for _, col := range []**prometheus.CounterVec{&c.packets, &c.dropped} {
			if err := reg.Register(*col); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, fmt.Errorf("capture: register metrics: %w", err)
				}
				if old, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
					*col = old
				}
			}
		}
	}
	if cfg.Mode == ModeOff {
		c.closed.Store(true)
		return c, nil
	}
	if cfg.Dir == "" {
		return nil, errors.New("capture: dir is required when mode is not off")
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	c.q = make(chan rec, cfg.QueueLen)
	c.stop = make(chan struct{})
	c.done = make(chan struct{})
	go c.run()
	return c, nil
}

// Mode returns the mode in force.
func (c *Capture) Mode() Mode {
	if c == nil {
		return ModeOff
	}
	return c.cfg.Mode
}

// WriteSIP captures one SIP message of call callID (the Call-ID of the leg
// it belongs to; "" for out-of-call traffic) sent from src to dst at t.
// payload is copied; the caller may reuse it at once.
func (c *Capture) WriteSIP(callID string, src, dst netip.AddrPort, payload []byte, t time.Time) {
	c.enqueue(kindSIP, callID, src, dst, payload, t)
}

// WriteRTP captures one RTP (or RTCP) packet, decrypted, of call callID.
// In sip mode it does nothing.
func (c *Capture) WriteRTP(callID string, src, dst netip.AddrPort, payload []byte, t time.Time) {
	if c == nil || c.cfg.Mode == ModeSIP {
		return
	}
	c.enqueue(kindRTP, callID, src, dst, payload, t)
}

// EndCall closes the file of callID now (call mode); later packets of the
// call open a new file.
func (c *Capture) EndCall(callID string) {
	if c == nil || c.cfg.Mode != ModeCall {
		return
	}
	c.enqueue(kindEnd, callID, netip.AddrPort{}, netip.AddrPort{}, nil, time.Time{})
}

func (c *Capture) enqueue(kind uint8, callID string, src, dst netip.AddrPort, payload []byte, t time.Time) {
	if c == nil || c.closed.Load() {
		return
	}
	var bp *[]byte
	if kind != kindEnd {
		bp = bufPool.Get().(*[]byte)
		*bp = append((*bp)[:0], payload[:min(len(payload), maxPayload)]...)
	}
	select {
	case c.q <- rec{kind: kind, callID: callID, src: src, dst: dst, buf: bp, t: t}:
	default:
		c.dropped.WithLabelValues("queue_full").Inc()
		if bp != nil {
			bufPool.Put(bp)
		}
	}
}

// Close flushes and closes every file. Packets still queued are written
// first. Idempotent.
func (c *Capture) Close() error {
	if c == nil {
		return nil
	}
	c.once.Do(func() {
		if c.stop == nil {
			return
		}
		c.closed.Store(true)
		close(c.stop)
		<-c.done
	})
	return nil
}

func (c *Capture) run() {
	defer close(c.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	defer c.closeAll()
	for {
		select {
		case r := <-c.q:
			c.handle(r)
		case now := <-tick.C:
			c.housekeep(now)
		case <-c.stop:
			for {
				select {
				case r := <-c.q:
					c.handle(r)
				default:
					return
				}
			}
		}
	}
}

// handle writes one record; it recovers from a panic so that capture can
// never take the process down.
func (c *Capture) handle(r rec) {
	defer func() {
		if v := recover(); v != nil {
			c.dropped.WithLabelValues("panic").Inc()
			c.log.Error("capture: panic", zap.Any("panic", v))
		}
	}()
	if r.buf != nil {
		defer bufPool.Put(r.buf)
	}
	if r.kind == kindEnd {
		if f := c.calls[r.callID]; f != nil {
			c.closeFile(f)
			delete(c.calls, r.callID)
		}
		return
	}
	frame, err := c.frame(r.src, r.dst, *r.buf)
	if err != nil {
		c.dropped.WithLabelValues("encode_error").Inc()
		return
	}
	f, err := c.fileFor(r.callID, r.t, len(frame))
	if err != nil {
		c.dropped.WithLabelValues("write_error").Inc()
		c.log.Warn("capture: cannot open file", zap.Error(err))
		return
	}
	ci := gopacket.CaptureInfo{Timestamp: r.t, CaptureLength: len(frame), Length: len(frame)}
	if err := f.w.WritePacket(ci, frame); err != nil {
		c.dropped.WithLabelValues("write_error").Inc()
		return
	}
	f.size += int64(len(frame)) + 32
	f.lastUsed = time.Now()
	if r.kind == kindSIP {
		c.packets.WithLabelValues("sip").Inc()
	} else {
		c.packets.WithLabelValues("rtp").Inc()
	}
}

var (
	macESBC = net.HardwareAddr{0x02, 0x65, 0x73, 0x62, 0x63, 0x01}
	macPeer = net.HardwareAddr{0x02, 0x65, 0x73, 0x62, 0x63, 0x02}
)

// frame synthesises Ethernet/IP/UDP around payload.
func (c *Capture) frame(src, dst netip.AddrPort, payload []byte) ([]byte, error) {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	eth := &layers.Ethernet{SrcMAC: macPeer, DstMAC: macESBC}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	var ip gopacket.SerializableLayer
	if sa.Is4() && da.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		s4, d4 := sa.As4(), da.As4()
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: s4[:], DstIP: d4[:]}
		_ = udp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		s16, d16 := sa.As16(), da.As16()
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: s16[:], DstIP: d16[:]}
		_ = udp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	if err := c.sbuf.Clear(); err != nil {
		return nil, err
	}
	err := gopacket.SerializeLayers(c.sbuf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(payload))
	return c.sbuf.Bytes(), err
}

// fileFor returns the file a packet of callID goes to, rotating it when
// n more bytes would pass MaxFileBytes.
func (c *Capture) fileFor(callID string, t time.Time, n int) (*file, error) {
	if c.cfg.Mode != ModeCall {
		if c.single != nil && c.single.size+int64(n) > c.cfg.MaxFileBytes && c.single.size > 0 {
			c.closeFile(c.single)
			c.single = nil
		}
		if c.single == nil {
			f, err := c.open(string(c.cfg.Mode), "", t)
			if err != nil {
				return nil, err
			}
			c.single = f
		}
		return c.single, nil
	}
	f := c.calls[callID]
	if f != nil && f.size+int64(n) > c.cfg.MaxFileBytes && f.size > 0 {
		c.closeFile(f)
		f = nil
	}
	if f == nil {
		var err error
		if f, err = c.open("call-"+sanitize(callID), callID, t); err != nil {
			return nil, err
		}
		c.calls[callID] = f
	}
	return f, nil
}

// fileNameByte reports whether ch may stay in a capture file name as is.
func fileNameByte(ch byte) bool {
	switch {
	case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		return true
	}
	return ch == '-' || ch == '_' || ch == '.'
}

// sanitize keeps a Call-ID usable as a file name.
func sanitize(s string) string {
	if s == "" {
		return "none"
	}
	b := []byte(s)
	for i, ch := range b {
		if !fileNameByte(ch) {
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

func (c *Capture) open(prefix, callID string, t time.Time) (*file, error) {
	if t.IsZero() {
		t = time.Now()
	}
	c.seq++
	name := fmt.Sprintf("esbc-%s-%s-%04d.pcapng", prefix, t.UTC().Format("20060102T150405"), c.seq)
	path := filepath.Join(c.cfg.Dir, name)
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	intf := pcapgo.NgInterface{
		Name: "esbc", Description: "esbc: SIP after TLS decryption, RTP after SRTP decryption; TCP/TLS SIP shown as one UDP frame per message",
		LinkType: layers.LinkTypeEthernet, TimestampResolution: 9, OS: runtime.GOOS,
	}
	opts := pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		Application: "esbc", OS: runtime.GOOS, Hardware: runtime.GOARCH, Comment: "call-id: " + callID,
	}}
	w, err := pcapgo.NewNgWriterInterface(fh, intf, opts)
	if err != nil {
		// Best effort: the writer error is the one to report, and the
		// file holds nothing yet.
		_ = fh.Close()
		_ = os.Remove(path)
		return nil, err
	}
	f := &file{path: path, f: fh, w: w, lastUsed: time.Now(), callID: callID}
	c.written = append(c.written, path)
	for len(c.written) > c.cfg.MaxFiles {
		old := c.written[0]
		c.written = c.written[1:]
		c.removeFile(old)
	}
	return f, nil
}

// removeFile deletes an old capture file, closing it first if still open.
func (c *Capture) removeFile(path string) {
	if c.single != nil && c.single.path == path {
		c.closeFile(c.single)
		c.single = nil
	}
	for id, f := range c.calls {
		if f.path == path {
			c.closeFile(f)
			delete(c.calls, id)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("capture: cannot remove old file", zap.String("path", path), zap.Error(err))
	}
}

func (c *Capture) closeFile(f *file) {
	if err := f.w.Flush(); err != nil {
		c.log.Warn("capture: flush", zap.String("path", f.path), zap.Error(err))
	}
	if err := f.f.Close(); err != nil {
		c.log.Warn("capture: close", zap.String("path", f.path), zap.Error(err))
	}
}

// housekeep flushes open files (so a reader sees recent packets) and
// closes idle call files.
func (c *Capture) housekeep(now time.Time) {
	if c.single != nil {
		_ = c.single.w.Flush()
	}
	for id, f := range c.calls {
		if now.Sub(f.lastUsed) > c.cfg.IdleClose {
			c.closeFile(f)
			delete(c.calls, id)
			continue
		}
		_ = f.w.Flush()
	}
}

func (c *Capture) closeAll() {
	if c.single != nil {
		c.closeFile(c.single)
		c.single = nil
	}
	for id, f := range c.calls {
		c.closeFile(f)
		delete(c.calls, id)
	}
}

package media

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esbc/esbc/media/sdp"
	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Session relays one call's media between leg 0 (a, the first offerer)
// and leg 1 (b).
type Session struct {
	e          *Engine
	id         string
	legs       [2]LegConfig
	drops      [2]*[numReasons]prometheus.Counter
	onInactive func()

	hold  atomic.Bool  // some stream is not sendrecv: no inactivity timeout
	fired atomic.Bool  // onInactive already called
	base  atomic.Int64 // unix ns of the last (re)negotiation, for inactivity

	mu      sync.Mutex // guards the fields below (never taken per packet)
	closed  bool
	streams []*stream // by m-line index
	origin  [2]origin // o= toward each leg
	pend    *pending
	epoch   uint64
}

// origin is esbc's o= toward one leg: the version moves only when the SDP
// sent there changes (RFC 3264 8: an unchanged SDP keeps its version).
type origin struct {
	id, ver uint64
	sent    uint64 // FNV-1a of the last body sent (0: none yet)
}

// finish writes our origin and address toward leg and marshals.
func (s *Session) finish(leg int, out *sdp.Session) []byte {
	o := &s.origin[leg]
	adv := s.legs[leg].Advertise
	// Not valid at session level (RFC 4568 9.1), and never ours to pass on.
	out.RemoveSessionAttr("crypto")
	out.SetConn(adv)
	out.SetOrigin(o.id, o.ver, adv)
	b := out.Marshal()
	h := fnv.New64a()
	_, _ = h.Write(b)
	sum := h.Sum64() | 1 // never 0
	if o.sent != 0 && sum != o.sent {
		o.ver++
		out.SetOrigin(o.id, o.ver, adv)
		b = out.Marshal()
		h.Reset()
		_, _ = h.Write(b)
		sum = h.Sum64() | 1
	}
	o.sent = sum
	// The caller keeps the body for the call's lifetime (in its SIP
	// messages): no spare capacity from Marshal's buffer growth.
	return bytes.Clone(b)
}

type stream struct {
	index int
	ep    [2]*endpoint
}

// pending is the last offer and what was decided for each m-line. The
// offer is kept as its body and parsed again only in the rare answer that
// lacks m-lines (parsed, it is ~3 times larger, for the call's lifetime).
type pending struct {
	from  int
	offer []byte
	lines []pendLine
}

type pendLine struct {
	enabled    bool
	raw        bool
	proto      string // the offerer's proto, mirrored in the answer
	remote     netip.AddrPort
	remoteRTCP netip.AddrPort
	mux        bool
	direction  string
	recv       *keys // the offerer's key
	recvTag    int
	offered    map[int]*keys // our keys toward the answerer, by tag
	codec      string        // the offerer's main codec (for stats)
	xc         *g711Pair     // transcoding decided at offer time
}

type g711Pair struct{ offerPT, answerPT uint8 }

// NewSession creates a session; no port is taken before the first Offer.
// onInactive (may be nil) is called once from the engine's watchdog
// goroutine; it must not block (it may call Close).
func (e *Engine) NewSession(id string, a, b LegConfig, onInactive func()) (*Session, error) {
	for i, l := range []LegConfig{a, b} {
		if !l.BindAddr.IsValid() {
			return nil, fmt.Errorf("media: session %s leg %d (%s): no bind address", id, i, l.Name)
		}
		if l.SRTP == SRTPMandatory && !l.SignalingSecure && !l.AllowInsecureSDES {
			return nil, fmt.Errorf("%w: leg %s: srtp mandatory but signalling is not TLS and insecure SDES is not allowed", ErrNotAcceptable, l.Name)
		}
		for j, su := range l.Suites {
			if !slices.Contains(DefaultSuites, su) {
				return nil, fmt.Errorf("media: session %s leg %d (%s): unsupported srtp suite %q", id, i, l.Name, su)
			}
			if slices.Contains(l.Suites[:j], su) {
				return nil, fmt.Errorf("media: session %s leg %d (%s): srtp suite %q listed twice", id, i, l.Name, su)
			}
		}
	}
	if onInactive == nil {
		onInactive = func() {}
	}
	s := &Session{e: e, id: id, legs: [2]LegConfig{a, b}, onInactive: onInactive}
	for i := range s.legs {
		if !s.legs[i].Advertise.IsValid() {
			s.legs[i].Advertise = s.legs[i].BindAddr
		}
		s.drops[i] = e.dropCounters(s.legs[i].Name)
		s.origin[i] = origin{id: rand.Uint64N(1 << 62), ver: 1}
	}
	s.base.Store(time.Now().UnixNano())
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	e.sessions[s] = struct{}{}
	e.sessGauge.Inc()
	return s, nil
}

// ID returns the session id given to NewSession.
func (s *Session) ID() string { return s.id }

func (s *Session) keysAllowed(leg int) bool {
	l := s.legs[leg]
	return l.SRTP != SRTPOff && (l.SignalingSecure || l.AllowInsecureSDES)
}

func allowed(list []string, name string) bool {
	if len(list) == 0 || strings.EqualFold(name, "telephone-event") {
		return true
	}
	for _, c := range list {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}

func isRTPProto(p string) bool { return strings.Contains(strings.ToUpper(p), "RTP/") }

func isSAVP(p string) bool { return strings.Contains(strings.ToUpper(p), "SAVP") }

func avp(p string) string { return strings.Replace(p, "SAVP", "AVP", 1) }

func savp(p string) string {
	if isSAVP(p) {
		return p
	}
	return strings.Replace(p, "AVP", "SAVP", 1)
}

var iceAttrs = []string{"candidate", "ice-ufrag", "ice-pwd", "ice-options", "remote-candidates", "end-of-candidates", "ice-lite"}

// strip removes the attributes esbc owns or that would leak the other
// leg's addresses (ICE candidates: topology hiding).
func strip(m *sdp.Media) int {
	m.RemoveAttr("rtcp")
	for _, a := range iceAttrs {
		m.RemoveAttr(a)
	}
	return m.RemoveAttr("crypto")
}

func keysFrom(c sdp.Crypto) (*keys, error) {
	su, _ := sdp.LookupSuite(c.Suite)
	var prof srtp.ProtectionProfile
	switch c.Suite {
	case "AES_CM_128_HMAC_SHA1_80":
		prof = srtp.ProtectionProfileAes128CmHmacSha1_80
	case "AES_CM_128_HMAC_SHA1_32":
		prof = srtp.ProtectionProfileAes128CmHmacSha1_32
	case "AEAD_AES_128_GCM":
		prof = srtp.ProtectionProfileAeadAes128Gcm
	case "AEAD_AES_256_GCM":
		prof = srtp.ProtectionProfileAeadAes256Gcm
	case "AES_256_CM_HMAC_SHA1_80":
		prof = srtp.ProtectionProfileAes256CmHmacSha1_80
	case "AES_256_CM_HMAC_SHA1_32":
		prof = srtp.ProtectionProfileAes256CmHmacSha1_32
	default:
		return nil, fmt.Errorf("%w: suite %s", ErrNotAcceptable, c.Suite)
	}
	// su.Name, not c.Suite: a substring would keep the whole SDP body alive.
	k := &keys{suite: su.Name, profile: prof, key: c.Key, mki: c.MKIBytes(), keyLen: su.KeyLen}
	// The shortest SRTCP packet (RFC 3711 §3.4): RTCP header and sender
	// SSRC, E flag and SRTCP index, MKI, authentication tag.
	tag, _ := prof.AuthTagRTCPLen()
	aead, _ := prof.AEADAuthTagLen()
	k.minRTCP = 8 + 4 + len(k.mki) + tag + aead
	return k, nil
}

func sameKeys(a, b *keys) bool {
	return a != nil && b != nil && a.suite == b.suite && bytes.Equal(a.key, b.key) && bytes.Equal(a.mki, b.mki)
}

func newKeys(suite string) (*keys, sdp.Crypto, error) {
	c, err := sdp.NewCrypto(0, suite)
	if err != nil {
		return nil, c, err
	}
	k, err := keysFrom(c)
	return k, c, err
}

func cryptoOf(tag int, k *keys) string {
	return sdp.Crypto{Tag: tag, Suite: k.suite, Key: k.key}.String()
}

// mediaAddr is the peer's RTP and RTCP address from an m= section.
func mediaAddr(m *sdp.Media) (rtpA, rtcpA netip.AddrPort) {
	ip, ok := m.Conn()
	if !ok || ip.IsUnspecified() {
		return netip.AddrPort{}, netip.AddrPort{}
	}
	ip = ip.Unmap()
	rtpA = netip.AddrPortFrom(ip, uint16(m.Port))
	rtcpA = netip.AddrPortFrom(ip, uint16(m.Port+1))
	if p, a, ok := m.RTCP(); ok {
		if a.IsValid() {
			ip = a.Unmap()
		}
		rtcpA = netip.AddrPortFrom(ip, uint16(p))
	}
	return rtpA, rtcpA
}

func mainCodec(m *sdp.Media) (name string, rate int64) {
	for _, c := range m.Codecs() {
		if !strings.EqualFold(c.Name, "telephone-event") && !strings.EqualFold(c.Name, "CN") {
			if c.Rate == 0 {
				c.Rate = 8000
			}
			return strings.Clone(c.Name), int64(c.Rate) // kept in the plan: not a substring of the body
		}
	}
	return "", 8000
}

// Offer takes an SDP offer that arrived from leg from (0 = a, 1 = b) and
// returns the offer to send to the other leg. On error the session is
// unchanged (ErrNotAcceptable → 488, ErrPortsExhausted → 503).
func (s *Session) Offer(from int, body []byte) ([]byte, error) {
	if from != 0 && from != 1 {
		return nil, fmt.Errorf("media: offer from leg %d", from)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	x, y := from, 1-from
	off, err := sdp.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("%w: offer from %s: %w", ErrNotAcceptable, s.legs[x].Name, err)
	}
	out := off.Clone()
	p := &pending{from: x, offer: bytes.Clone(body)}
	var created []*stream
	rollback := func(err error) ([]byte, error) {
		for _, st := range created {
			s.streams[st.index] = nil
			s.release(st)
		}
		return nil, err
	}
	active := 0
	reason := "no media stream"
	cfg := s.e.config()
	for i, m := range off.Media {
		om := out.Media[i]
		// Strings kept for the call's lifetime are copied: a substring
		// would keep the whole SDP body alive.
		pl := pendLine{proto: strings.Clone(m.Proto), direction: m.Direction()}
		why := ""
		if m.Port == 0 {
			why = "disabled by the offerer"
		}
		switch {
		case why != "":
		case m.Type == "audio" && isRTPProto(m.Proto):
		case m.Type == "video" && isRTPProto(m.Proto):
			if !s.legs[x].Video || !s.legs[y].Video {
				why = "video is not carried on leg " + s.legs[y].Name
			}
		case m.Type == "image" && strings.EqualFold(m.Proto, "udptl"):
			if !s.legs[x].T38 || !s.legs[y].T38 {
				why = "T.38 is not carried on leg " + s.legs[y].Name
			}
			pl.raw = true
		default:
			why = "unsupported media " + m.Type + " " + m.Proto
		}
		var keep []string
		if why == "" && !pl.raw {
			why = s.offerCrypto(x, m, &pl)
		}
		if why == "" && !pl.raw {
			keep, why = s.offerCodecs(x, y, m, &pl, cfg.Transcode)
		}
		if why != "" {
			s.e.log.Debug("media line refused", zap.String("session", s.id), zap.Int("mline", i), zap.String("reason", why))
			reason = why
			strip(om)
			om.Disable()
			p.lines = append(p.lines, pl)
			continue
		}
		// A clone: a substring would keep the whole offer's text alive
		// for the call's lifetime (endpoint.media).
		st, isNew, err := s.stream(i, strings.Clone(m.Type))
		if err != nil {
			return rollback(err)
		}
		if isNew {
			created = append(created, st)
		}
		st.ep[0].media, st.ep[1].media = m.Type, m.Type
		pl.enabled = true
		pl.remote, pl.remoteRTCP = mediaAddr(m)
		pl.mux = m.RTCPMux()
		if !pl.raw {
			om.KeepFormats(keep)
		}
		at := strip(om)
		om.Port = st.ep[y].port
		if !pl.raw {
			if s.legs[y].SRTP == SRTPMandatory {
				om.Proto = savp(m.Proto)
			} else {
				om.Proto = avp(m.Proto)
			}
			if s.keysAllowed(y) {
				pl.offered = map[int]*keys{}
				var lines []string
				if cur := st.ep[y].plan.Load(); cur != nil && cur.send != nil {
					// Re-offer: keep the key in use, no gap.
					pl.offered[1] = cur.send
					lines = append(lines, cryptoOf(1, cur.send))
				} else {
					for tag, su := range s.legs[y].offerSuites() {
						k, _, err := newKeys(su)
						if err != nil {
							return rollback(err)
						}
						pl.offered[tag+1] = k
						lines = append(lines, cryptoOf(tag+1, k))
					}
				}
				om.AddAttrs(at, "crypto", lines...)
			}
		}
		p.lines = append(p.lines, pl)
		active++
	}
	if active == 0 {
		return rollback(fmt.Errorf("%w: %s", ErrNotAcceptable, reason))
	}
	s.pend = p
	return s.finish(y, out), nil
}

// offerCrypto decides SRTP on the offerer's leg; "" means acceptable. The
// answer uses the first a=crypto of the offer that esbc supports and the
// leg's Suites allow (RFC 4568 §7.1.2: the answerer picks from the offer);
// an offer with none is one without usable crypto.
func (s *Session) offerCrypto(x int, m *sdp.Media, pl *pendLine) string {
	var firstErr error
	if s.keysAllowed(x) {
		for _, v := range m.Attrs("crypto") {
			c, err := sdp.ParseCrypto(v)
			if err == nil && !s.legs[x].acceptsSuite(c.Suite) {
				err = fmt.Errorf("suite %s is not in the leg's srtp suites", c.Suite)
			}
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			k, err := keysFrom(c)
			if err != nil {
				continue
			}
			pl.recv, pl.recvTag = k, c.Tag
			return ""
		}
	}
	switch {
	case s.legs[x].SRTP == SRTPMandatory && firstErr != nil:
		return fmt.Sprintf("srtp mandatory on leg %s: no usable a=crypto (%v)", s.legs[x].Name, firstErr)
	case s.legs[x].SRTP == SRTPMandatory:
		return "srtp mandatory on leg " + s.legs[x].Name + " but the offer has no a=crypto"
	case isSAVP(m.Proto) && firstErr != nil:
		return fmt.Sprintf("RTP/SAVP from leg %s without a usable a=crypto (%v)", s.legs[x].Name, firstErr)
	case isSAVP(m.Proto):
		return "RTP/SAVP from leg " + s.legs[x].Name + " but srtp is off or SDES is not allowed there"
	}
	return ""
}

// offerCodecs filters the offer's formats for the answerer's leg.
func (s *Session) offerCodecs(x, y int, m *sdp.Media, pl *pendLine, transcode bool) ([]string, string) {
	codecs := m.Codecs()
	var keep, events []string
	voice := false
	for _, c := range codecs {
		if c.Name == "" {
			if len(s.legs[x].Codecs) == 0 && len(s.legs[y].Codecs) == 0 {
				keep = append(keep, c.PT)
			}
			continue
		}
		if strings.EqualFold(c.Name, "telephone-event") {
			events = append(events, c.PT)
		}
		if allowed(s.legs[x].Codecs, c.Name) && allowed(s.legs[y].Codecs, c.Name) {
			keep = append(keep, c.PT)
			if !strings.EqualFold(c.Name, "telephone-event") && !strings.EqualFold(c.Name, "CN") {
				voice = true
				if pl.codec == "" {
					pl.codec = strings.Clone(c.Name)
				}
			}
		}
	}
	if voice || (m.Type != "audio" && len(keep) > 0) {
		return keep, ""
	}
	if transcode && m.Type == "audio" {
		for _, c := range codecs {
			var other string
			var opt, apt uint8
			switch {
			case strings.EqualFold(c.Name, "PCMU") && c.PT == "0":
				other, opt, apt = "PCMA", 0, 8
			case strings.EqualFold(c.Name, "PCMA") && c.PT == "8":
				other, opt, apt = "PCMU", 8, 0
			default:
				continue
			}
			if allowed(s.legs[x].Codecs, c.Name) && allowed(s.legs[y].Codecs, other) {
				pl.xc = &g711Pair{offerPT: opt, answerPT: apt}
				pl.codec = strings.Clone(c.Name)
				return append([]string{fmt.Sprint(apt)}, events...), ""
			}
		}
	}
	return nil, "no common codec toward leg " + s.legs[y].Name
}

// stream returns the stream of m-line i, allocating its sockets if needed.
func (s *Session) stream(i int, media string) (*stream, bool, error) {
	for len(s.streams) <= i {
		s.streams = append(s.streams, nil)
	}
	if st := s.streams[i]; st != nil {
		return st, false, nil
	}
	st := &stream{index: i}
	for leg := 0; leg < 2; leg++ {
		ep, err := s.bind(leg, i, media)
		if err != nil {
			if st.ep[0] != nil {
				s.releaseEndpoint(st.ep[0])
			}
			return nil, false, err
		}
		st.ep[leg] = ep
	}
	st.ep[0].other, st.ep[1].other = st.ep[1], st.ep[0]
	if err := st.ep[0].start(); err != nil {
		s.releaseEndpoint(st.ep[0])
		s.releaseEndpoint(st.ep[1])
		return nil, false, err
	}
	if err := st.ep[1].start(); err != nil {
		s.release(st)
		return nil, false, err
	}
	s.streams[i] = st
	return st, true, nil
}

// sockBuf is the SO_RCVBUF asked for on media sockets (the kernel caps it
// at net.core.rmem_max): about 1,500 queued G.711 packets.
const sockBuf = 1 << 20

func (s *Session) bind(leg, index int, media string) (*endpoint, error) {
	cfg := s.e.config()
	addr := s.legs[leg].BindAddr
	var lastErr error
	for attempt := 0; attempt < 16; attempt++ {
		port, err := s.e.pool.get(time.Now())
		if err != nil {
			s.e.exhausted.Inc()
			s.e.log.Warn("media ports exhausted", zap.String("session", s.id))
			return nil, fmt.Errorf("media: session %s: %w", s.id, err)
		}
		c1, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		if err != nil {
			lastErr = err
			s.e.pool.put(port, time.Now(), cfg.Quarantine)
			continue
		}
		c2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port+1))))
		if err != nil {
			lastErr = err
			_ = c1.Close()
			s.e.pool.put(port, time.Now(), cfg.Quarantine)
			continue
		}
		// A deeper receive queue rides out scheduling stalls (a shared or
		// busy host) instead of dropping; the memory is only used when
		// packets actually queue.
		for _, c := range []*net.UDPConn{c1, c2} {
			_ = c.SetReadBuffer(sockBuf)
		}
		v6 := addr.Is6() && !addr.Is4In6()
		if cfg.DSCP > 0 {
			for _, c := range []*net.UDPConn{c1, c2} {
				if err := setDSCP(c, cfg.DSCP, v6); err != nil {
					s.e.log.Warn("media dscp", zap.Error(err))
				}
			}
		}
		// What a Tap is told esbc's address is: the bound one, else the
		// advertised one (what the peer sends to, what the SDP says).
		self := addr.Unmap()
		if self.IsUnspecified() {
			self = s.legs[leg].Advertise.Unmap()
		}
		callID := strings.Clone(s.legs[leg].CallID) // may be a substring of a whole SIP message
		if callID == "" {
			callID = s.id
		}
		return &endpoint{s: s, leg: leg, index: index, media: media, drops: s.drops[leg],
			rtp: c1, rtcp: c2, port: port, v6: v6, callID: callID,
			local: netip.AddrPortFrom(self, uint16(port)), localRTCP: netip.AddrPortFrom(self, uint16(port+1))}, nil
	}
	// Ports taken by other processes count as exhausted: the caller answers 503.
	return nil, fmt.Errorf("media: session %s: %w: bind %s: %w", s.id, ErrPortsExhausted, addr, lastErr)
}

func (s *Session) releaseEndpoint(ep *endpoint) {
	ep.close()
	s.e.pool.put(ep.port, time.Now(), s.e.config().Quarantine)
}

func (s *Session) release(st *stream) {
	for _, ep := range st.ep {
		s.releaseEndpoint(ep)
	}
}

// Answer takes the SDP answer that arrived from leg from for the pending
// offer of the other leg and returns the answer for the offerer. A second
// Answer for the same offer (183 then 200) replaces the first.
func (s *Session) Answer(from int, body []byte) ([]byte, error) {
	if from != 0 && from != 1 {
		return nil, fmt.Errorf("media: answer from leg %d", from)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	y, x := from, 1-from
	p := s.pend
	if p == nil || p.from != x {
		return nil, fmt.Errorf("media: answer from %s without an offer from %s", s.legs[y].Name, s.legs[x].Name)
	}
	ans, err := sdp.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("%w: answer from %s: %w", ErrNotAcceptable, s.legs[y].Name, err)
	}
	out := ans.Clone()
	if len(out.Media) < len(p.lines) {
		off, err := sdp.Parse(p.offer)
		if err != nil || len(off.Media) < len(p.lines) { // parsed in Offer: cannot happen
			return nil, fmt.Errorf("media: pending offer of %s: %w", s.legs[x].Name, err)
		}
		for len(out.Media) < len(p.lines) {
			out.AppendMedia(off.Media[len(out.Media)])
		}
	}
	out.Media = out.Media[:len(p.lines)]
	now := time.Now()
	window := s.e.config().LatchWindow
	type commit struct {
		ep *endpoint
		pl *plan
	}
	var commits []commit
	hold := false
	for i := range p.lines {
		pl := &p.lines[i]
		om := out.Media[i]
		var am *sdp.Media
		if i < len(ans.Media) {
			am = ans.Media[i]
		}
		var st *stream
		if i < len(s.streams) {
			st = s.streams[i]
		}
		if !pl.enabled || am == nil || am.Port == 0 || st == nil {
			strip(om)
			om.Proto = pl.proto
			om.Disable()
			if st != nil {
				commits = append(commits, commit{st.ep[0], &plan{}}, commit{st.ep[1], &plan{}})
			}
			continue
		}
		// The answerer's leg.
		var ySend, yRecv *keys
		yCur, xCur := st.ep[y].plan.Load(), st.ep[x].plan.Load()
		if cs := am.Attrs("crypto"); len(pl.offered) > 0 && len(cs) > 0 {
			c, err := sdp.ParseCrypto(cs[0])
			if err != nil {
				return nil, fmt.Errorf("%w: answer from %s: %w", ErrNotAcceptable, s.legs[y].Name, err)
			}
			k := pl.offered[c.Tag]
			if k == nil || k.suite != c.Suite {
				return nil, fmt.Errorf("%w: answer from %s: crypto tag %d %s was not offered", ErrNotAcceptable, s.legs[y].Name, c.Tag, c.Suite)
			}
			ySend = k
			if yRecv, err = keysFrom(c); err != nil {
				return nil, err
			}
			if yCur != nil && sameKeys(yCur.recv, yRecv) {
				yRecv = yCur.recv
			}
		} else if !pl.raw && (s.legs[y].SRTP == SRTPMandatory || isSAVP(am.Proto)) {
			return nil, fmt.Errorf("%w: answer from %s has no usable a=crypto", ErrNotAcceptable, s.legs[y].Name)
		}
		// The offerer's leg.
		xRecv := pl.recv
		var xSend *keys
		if xRecv != nil {
			if xCur != nil && sameKeys(xCur.recv, xRecv) {
				xRecv = xCur.recv
			}
			if xCur != nil && xCur.send != nil && xCur.send.suite == xRecv.suite && xCur.recv == xRecv {
				xSend = xCur.send // nothing changed: keep our key
			} else {
				k, _, err := newKeys(xRecv.suite)
				if err != nil {
					return nil, err
				}
				xSend = k
			}
		}
		yCodec, yRate := mainCodec(am)
		xCodec := yCodec
		var xcToY, xcToX *xcode
		if pl.xc != nil {
			f := append([]string(nil), om.Formats...)
			for j := range f {
				if f[j] == fmt.Sprint(pl.xc.answerPT) {
					f[j] = fmt.Sprint(pl.xc.offerPT)
				}
			}
			om.KeepFormats(f)
			xCodec = pl.codec
			tY, tX := &ulawToAlaw, &alawToUlaw
			if pl.xc.offerPT == 8 {
				tY, tX = &alawToUlaw, &ulawToAlaw
			}
			xcToY = &xcode{inPT: pl.xc.offerPT, outPT: pl.xc.answerPT, table: tY}
			xcToX = &xcode{inPT: pl.xc.answerPT, outPT: pl.xc.offerPT, table: tX}
		}
		om.RemoveAttr("rtcp-mux")
		at := strip(om)
		om.Port = st.ep[x].port
		om.Proto = pl.proto
		if xSend != nil {
			om.AddAttrs(at, "crypto", cryptoOf(pl.recvTag, xSend))
		}
		yMux := am.RTCPMux() && pl.mux
		if pl.mux {
			om.AddAttrs(-1, "rtcp-mux", "")
		}
		yRemote, yRemoteRTCP := mediaAddr(am)
		ydir := am.Direction()
		if pl.direction != sdp.SendRecv || ydir != sdp.SendRecv || !yRemote.IsValid() || !pl.remote.IsValid() {
			hold = true
		}
		mk := func(leg int, cur *plan, remote, remoteRTCP netip.AddrPort, mux bool, recv, send *keys, xc *xcode, codec, dir string) *plan {
			np := &plan{active: true, remote: remote, remoteRTCP: remoteRTCP, mux: mux, recv: recv, send: send,
				xc: xc, raw: pl.raw, clockRate: yRate, codec: codec, direction: dir}
			np.expectIP = remote.Addr()
			if l := s.legs[leg].LatchAddr; l.IsValid() {
				// Far-end NAT: the SDP address is the peer's private one.
				// Until the latch, send toward the SIP source IP (NATs often
				// keep the port), never toward a private address that could
				// be a host on esbc's own networks.
				np.expectIP = l.Unmap()
				if remote.IsValid() {
					np.remote = netip.AddrPortFrom(np.expectIP, remote.Port())
				}
				if remoteRTCP.IsValid() {
					np.remoteRTCP = netip.AddrPortFrom(np.expectIP, remoteRTCP.Port())
				}
			}
			if cur != nil && cur.active && cur.remote == np.remote && cur.expectIP == np.expectIP {
				np.epoch, np.latchUntil = cur.epoch, cur.latchUntil
			} else {
				s.epoch++
				np.epoch, np.latchUntil = s.epoch, now.Add(window).UnixNano()
			}
			return np
		}
		commits = append(commits,
			commit{st.ep[x], mk(x, xCur, pl.remote, pl.remoteRTCP, pl.mux, xRecv, xSend, xcToX, xCodec, pl.direction)},
			commit{st.ep[y], mk(y, yCur, yRemote, yRemoteRTCP, yMux, yRecv, ySend, xcToY, yCodec, ydir)})
	}
	for i := len(p.lines); i < len(s.streams); i++ {
		if st := s.streams[i]; st != nil {
			commits = append(commits, commit{st.ep[0], &plan{}}, commit{st.ep[1], &plan{}})
		}
	}
	for _, c := range commits {
		if cur := c.ep.plan.Load(); cur == nil || !c.pl.active || cur.epoch != c.pl.epoch {
			c.ep.latched.Store(nil)
			c.ep.latchedC.Store(nil)
		}
		c.ep.plan.Store(c.pl)
	}
	s.hold.Store(hold)
	s.base.Store(now.UnixNano())
	s.fired.Store(false)
	return s.finish(x, out), nil
}

func (s *Session) applyDSCP(dscp int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		if st == nil {
			continue
		}
		for _, ep := range st.ep {
			for _, c := range []*net.UDPConn{ep.rtp, ep.rtcp} {
				if err := setDSCP(c, dscp, ep.v6); err != nil {
					s.e.log.Warn("media dscp", zap.Error(err))
				}
			}
		}
	}
}

// inactive reports (once) that no packet came from either leg for to.
// Called by the watchdog with e.mu held.
func (s *Session) inactive(now time.Time, to time.Duration) bool {
	if s.hold.Load() || s.fired.Load() {
		return false
	}
	last := s.base.Load()
	s.mu.Lock()
	if s.closed || s.pend == nil {
		s.mu.Unlock()
		return false
	}
	for _, st := range s.streams {
		if st == nil {
			continue
		}
		for _, ep := range st.ep {
			if t := ep.st.lastRx.Load(); t > last {
				last = t
			}
		}
	}
	s.mu.Unlock()
	if now.UnixNano()-last < int64(to) {
		return false
	}
	return s.fired.CompareAndSwap(false, true)
}

// Close stops the relay and quarantines the ports. Idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	streams := s.streams
	s.streams = nil
	s.mu.Unlock()
	for _, st := range streams {
		if st != nil {
			s.release(st)
		}
	}
	s.e.remove(s)
	return nil
}

// State returns a plain snapshot for replication.
func (s *Session) State() SessionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SessionState{ID: s.id, Offerer: -1}
	if s.pend != nil {
		st.Offerer = s.pend.from
	}
	for leg := 0; leg < 2; leg++ {
		st.Legs[leg].Name = s.legs[leg].Name
		for _, str := range s.streams {
			if str == nil {
				continue
			}
			ep := str.ep[leg]
			ss := StreamState{Index: str.index, Media: ep.media,
				Local:     netip.AddrPortFrom(s.legs[leg].Advertise, uint16(ep.port)),
				LocalRTCP: netip.AddrPortFrom(s.legs[leg].Advertise, uint16(ep.port+1)),
				SendSSRC:  ep.sendSSRC.Load(), SendROC: ep.sendROC.Load()}
			if l := ep.latched.Load(); l != nil {
				ss.Latched = *l
			}
			if p := ep.plan.Load(); p != nil {
				ss.Remote, ss.RemoteRTCP, ss.RTCPMux, ss.Direction, ss.Codec = p.remote, p.remoteRTCP, p.mux, p.direction, p.codec
				if p.send != nil {
					ss.Suite = p.send.suite
					ss.SendKey = append([]byte(nil), p.send.key...)
				}
				if p.recv != nil {
					ss.RecvKey = append([]byte(nil), p.recv.key...)
				}
			}
			st.Legs[leg].Streams = append(st.Legs[leg].Streams, ss)
		}
	}
	return st
}

// Stats returns per-leg figures summed over the streams; codec, suite,
// jitter and RTT come from the first audio stream.
func (s *Session) Stats() SessionStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out SessionStats
	for leg := 0; leg < 2; leg++ {
		ls := &out.Legs[leg]
		ls.Name = s.legs[leg].Name
		first := true
		for _, str := range s.streams {
			if str == nil {
				continue
			}
			ep := str.ep[leg]
			ls.PacketsIn += ep.st.packetsIn.Load()
			ls.BytesIn += ep.st.bytesIn.Load()
			ls.PacketsOut += ep.st.packetsOut.Load()
			ls.BytesOut += ep.st.bytesOut.Load()
			ls.Lost += ep.st.lost.Load()
			ls.Dropped += ep.st.dropped.Load()
			if first && ep.media == "audio" {
				first = false
				ls.JitterMs = usToMs(ep.st.jitterUs.Load())
				ls.RTTMs = usToMs(ep.st.rttUs.Load())
				if p := ep.plan.Load(); p != nil {
					ls.Codec = p.codec
					if p.send != nil {
						ls.Suite = p.send.suite
					}
				}
			}
		}
	}
	return out
}

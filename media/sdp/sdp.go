package sdp

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Session is a parsed SDP body: session-level lines, then one Media per m=.
type Session struct {
	eol   string
	Head  []string // session-level lines without line ending
	Media []*Media
}

// Media is one m= section.
type Media struct {
	Type     string   // audio, video, image, application…
	Port     int      // 0 = disabled
	NumPorts string   // "/2" suffix of the port as written, usually ""
	Proto    string   // RTP/AVP, RTP/SAVP, udptl…
	Formats  []string // payload types (or "t38")
	Lines    []string // lines after m=, without line ending
	sess     *Session
}

// Parse splits body into lines. It is tolerant: unknown and out-of-order
// lines are kept; it fails only without a v= line or on an m= line whose
// port is not a number.
func Parse(body []byte) (*Session, error) {
	s := &Session{eol: "\r\n"}
	if i := bytes.IndexByte(body, '\n'); i >= 0 && (i == 0 || body[i-1] != '\r') {
		s.eol = "\n"
	}
	text := string(body)
	var cur *Media
	sawV := false
	for len(text) > 0 {
		var line string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, ""
		}
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "v=") {
			sawV = true
		}
		if strings.HasPrefix(line, "m=") {
			m, err := parseM(line)
			if err != nil {
				return nil, err
			}
			m.sess = s
			s.Media = append(s.Media, m)
			cur = m
			continue
		}
		if cur != nil {
			cur.Lines = append(cur.Lines, line)
		} else {
			s.Head = append(s.Head, line)
		}
	}
	if !sawV {
		return nil, fmt.Errorf("%w: no v= line", ErrMalformed)
	}
	return s, nil
}

func parseM(line string) (*Media, error) {
	f := strings.Fields(line[2:])
	if len(f) < 3 {
		return nil, fmt.Errorf("%w: %q", ErrMalformed, line)
	}
	m := &Media{Type: f[0], Proto: f[2], Formats: f[3:]}
	port := f[1]
	if i := strings.IndexByte(port, '/'); i >= 0 {
		m.NumPorts = port[i:]
		port = port[:i]
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("%w: m= port %q", ErrMalformed, f[1])
	}
	m.Port = p
	return m, nil
}

// Marshal writes the body back; untouched lines are byte for byte.
func (s *Session) Marshal() []byte {
	var b bytes.Buffer
	for _, l := range s.Head {
		b.WriteString(l)
		b.WriteString(s.eol)
	}
	for _, m := range s.Media {
		b.WriteString("m=")
		b.WriteString(m.Type)
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(m.Port))
		b.WriteString(m.NumPorts)
		b.WriteByte(' ')
		b.WriteString(m.Proto)
		for _, f := range m.Formats {
			b.WriteByte(' ')
			b.WriteString(f)
		}
		b.WriteString(s.eol)
		for _, l := range m.Lines {
			b.WriteString(l)
			b.WriteString(s.eol)
		}
	}
	return b.Bytes()
}

// Clone returns a deep copy.
func (s *Session) Clone() *Session {
	c := &Session{eol: s.eol, Head: append([]string(nil), s.Head...)}
	for _, m := range s.Media {
		mc := *m
		mc.Formats = append([]string(nil), m.Formats...)
		mc.Lines = append([]string(nil), m.Lines...)
		mc.sess = c
		c.Media = append(c.Media, &mc)
	}
	return c
}

// Origin returns the o= fields (username, sess-id, version, nettype,
// addrtype, address); ok is false without a well-formed o= line.
func (s *Session) Origin() (f []string, ok bool) {
	for _, l := range s.Head {
		if strings.HasPrefix(l, "o=") {
			f = strings.Fields(l[2:])
			return f, len(f) == 6
		}
	}
	return nil, false
}

// SetOrigin replaces (or adds after v=) the o= line. The username is "-":
// nothing of the other leg's originator leaks (topology hiding).
func (s *Session) SetOrigin(sessID, version uint64, addr netip.Addr) {
	line := "o=- " + strconv.FormatUint(sessID, 10) + " " + strconv.FormatUint(version, 10) + " IN " + addrType(addr) + " " + addr.String()
	for i, l := range s.Head {
		if strings.HasPrefix(l, "o=") {
			s.Head[i] = line
			return
		}
	}
	s.Head = insertAfter(s.Head, "v=", line)
}

func addrType(a netip.Addr) string {
	if a.Is4() || a.Is4In6() {
		return "IP4"
	}
	return "IP6"
}

func connLine(a netip.Addr) string {
	return "c=IN " + addrType(a) + " " + a.Unmap().String()
}

func parseConn(l string) (netip.Addr, bool) {
	f := strings.Fields(l[2:])
	if len(f) < 3 {
		return netip.Addr{}, false
	}
	a := f[2]
	if i := strings.IndexByte(a, '/'); i >= 0 { // multicast TTL
		a = a[:i]
	}
	ip, err := netip.ParseAddr(a)
	return ip, err == nil
}

// Conn returns the session-level c= address.
func (s *Session) Conn() (netip.Addr, bool) {
	for _, l := range s.Head {
		if strings.HasPrefix(l, "c=") {
			return parseConn(l)
		}
	}
	return netip.Addr{}, false
}

// SetConn writes addr into every c= line; a session-level c= is added when
// some m= section would otherwise have none.
func (s *Session) SetConn(addr netip.Addr) {
	line := connLine(addr)
	head := false
	for i, l := range s.Head {
		if strings.HasPrefix(l, "c=") {
			s.Head[i] = line
			head = true
		}
	}
	missing := false
	for _, m := range s.Media {
		found := false
		for i, l := range m.Lines {
			if strings.HasPrefix(l, "c=") {
				m.Lines[i] = line
				found = true
			}
		}
		if !found {
			missing = true
		}
	}
	if !head && missing {
		// c= goes before t= (RFC 8866 5 order); else at the end of the head.
		for i, l := range s.Head {
			if strings.HasPrefix(l, "t=") || strings.HasPrefix(l, "b=") {
				s.Head = append(s.Head[:i], append([]string{line}, s.Head[i:]...)...)
				return
			}
		}
		s.Head = append(s.Head, line)
	}
}

// SessionAttr returns the value of the first session-level a=name.
func (s *Session) SessionAttr(name string) (string, bool) { return attr(s.Head, name) }

func attr(lines []string, name string) (string, bool) {
	for _, l := range lines {
		if v, ok := attrValue(l, name); ok {
			return v, true
		}
	}
	return "", false
}

// attrValue matches "a=name" or "a=name:value".
func attrValue(l, name string) (string, bool) {
	if len(l) < 2+len(name) || l[:2] != "a=" || !strings.EqualFold(l[2:2+len(name)], name) {
		return "", false
	}
	rest := l[2+len(name):]
	if rest == "" {
		return "", true
	}
	if rest[0] == ':' {
		return rest[1:], true
	}
	return "", false
}

func insertAfter(lines []string, prefix, line string) []string {
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out := append([]string(nil), lines[:i+1]...)
			out = append(out, line)
			return append(out, lines[i+1:]...)
		}
	}
	return append([]string{line}, lines...)
}

// RemoveSessionAttr deletes every session-level a=name line.
func (s *Session) RemoveSessionAttr(name string) {
	out := s.Head[:0]
	for _, l := range s.Head {
		if _, ok := attrValue(l, name); !ok {
			out = append(out, l)
		}
	}
	s.Head = out
}

// Conn returns the media address: the section's c= or the session's.
func (m *Media) Conn() (netip.Addr, bool) {
	for _, l := range m.Lines {
		if strings.HasPrefix(l, "c=") {
			return parseConn(l)
		}
	}
	return m.sess.Conn()
}

// Attr returns the value of the first a=name in this section.
func (m *Media) Attr(name string) (string, bool) { return attr(m.Lines, name) }

// Attrs returns the values of every a=name in this section.
func (m *Media) Attrs(name string) []string {
	var out []string
	for _, l := range m.Lines {
		if v, ok := attrValue(l, name); ok {
			out = append(out, v)
		}
	}
	return out
}

// RemoveAttr deletes every a=name line of this section and returns the
// index where the first one was (-1 if none).
func (m *Media) RemoveAttr(name string) int {
	at := -1
	out := m.Lines[:0]
	for _, l := range m.Lines {
		if _, ok := attrValue(l, name); ok {
			if at < 0 {
				at = len(out)
			}
			continue
		}
		out = append(out, l)
	}
	m.Lines = out
	return at
}

// AddAttrs inserts lines "a=name:value" (or "a=name" for an empty value) at
// index at, or at the end when at < 0.
func (m *Media) AddAttrs(at int, name string, values ...string) {
	lines := make([]string, 0, len(values))
	for _, v := range values {
		if v == "" {
			lines = append(lines, "a="+name)
		} else {
			lines = append(lines, "a="+name+":"+v)
		}
	}
	if at < 0 || at > len(m.Lines) {
		m.Lines = append(m.Lines, lines...)
		return
	}
	m.Lines = append(m.Lines[:at], append(lines, m.Lines[at:]...)...)
}

// Directions per RFC 3264 6.1.
const (
	SendRecv = "sendrecv"
	SendOnly = "sendonly"
	RecvOnly = "recvonly"
	Inactive = "inactive"
)

var directions = []string{SendRecv, SendOnly, RecvOnly, Inactive}

// Direction returns the section's direction, falling back to the
// session-level one, then sendrecv.
func (m *Media) Direction() string {
	for _, lines := range [][]string{m.Lines, m.sess.Head} {
		for _, l := range lines {
			for _, d := range directions {
				if l == "a="+d {
					return d
				}
			}
		}
	}
	return SendRecv
}

// SetDirection writes d as the section's direction (replacing the first
// direction attribute in place, or appending one). A session-level
// direction is left as is: the media-level one takes precedence.
func (m *Media) SetDirection(d string) {
	at := -1
	out := m.Lines[:0]
	for _, l := range m.Lines {
		isDir := false
		for _, dd := range directions {
			if l == "a="+dd {
				isDir = true
			}
		}
		if isDir {
			if at < 0 {
				at = len(out)
				out = append(out, "a="+d)
			}
			continue
		}
		out = append(out, l)
	}
	m.Lines = out
	if at < 0 {
		m.Lines = append(m.Lines, "a="+d)
	}
}

// RTCP returns the a=rtcp port and optional address (RFC 3605).
func (m *Media) RTCP() (port int, addr netip.Addr, ok bool) {
	v, found := m.Attr("rtcp")
	if !found {
		return 0, netip.Addr{}, false
	}
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0, netip.Addr{}, false
	}
	p, err := strconv.Atoi(f[0])
	if err != nil || p <= 0 || p > 65535 {
		return 0, netip.Addr{}, false
	}
	if len(f) >= 4 {
		addr, _ = netip.ParseAddr(f[3])
	}
	return p, addr, true
}

// RTCPMux reports a=rtcp-mux.
func (m *Media) RTCPMux() bool { _, ok := m.Attr("rtcp-mux"); return ok }

// Codec is one payload format of an m= line.
type Codec struct {
	PT       string // as in the m= line
	Name     string // encoding name as written (PCMU, telephone-event…); "" if unknown
	Rate     int
	Channels string
}

var static = map[string]Codec{
	"0": {"0", "PCMU", 8000, ""}, "3": {"3", "GSM", 8000, ""}, "4": {"4", "G723", 8000, ""},
	"8": {"8", "PCMA", 8000, ""}, "9": {"9", "G722", 8000, ""}, "13": {"13", "CN", 8000, ""},
	"18": {"18", "G729", 8000, ""},
}

// Codecs returns the formats of the m= line with their rtpmap names.
func (m *Media) Codecs() []Codec {
	out := make([]Codec, 0, len(m.Formats))
	for _, pt := range m.Formats {
		c, ok := static[pt]
		if !ok {
			c = Codec{PT: pt}
		}
		for _, v := range m.Attrs("rtpmap") {
			f := strings.Fields(v)
			if len(f) == 2 && f[0] == pt {
				enc := strings.Split(f[1], "/")
				c.Name = enc[0]
				if len(enc) > 1 {
					c.Rate, _ = strconv.Atoi(enc[1])
				}
				if len(enc) > 2 {
					c.Channels = enc[2]
				}
			}
		}
		out = append(out, c)
	}
	return out
}

// KeepFormats sets the m= format list to keep (in that order) and removes
// the a=rtpmap, a=fmtp and a=rtcp-fb lines of every other payload type.
func (m *Media) KeepFormats(keep []string) {
	set := make(map[string]bool, len(keep))
	for _, k := range keep {
		set[k] = true
	}
	m.Formats = append([]string(nil), keep...)
	out := m.Lines[:0]
	for _, l := range m.Lines {
		drop := false
		for _, a := range []string{"rtpmap", "fmtp", "rtcp-fb"} {
			if v, ok := attrValue(l, a); ok {
				pt, _, _ := strings.Cut(v, " ")
				if pt != "*" && !set[pt] {
					drop = true
				}
			}
		}
		if !drop {
			out = append(out, l)
		}
	}
	m.Lines = out
}

// Disable sets the port to 0 (RFC 3264 6: a rejected stream).
func (m *Media) Disable() { m.Port = 0 }

// AppendMedia appends a copy of m (from another Session) to s.
func (s *Session) AppendMedia(m *Media) {
	mc := *m
	mc.Formats = append([]string(nil), m.Formats...)
	mc.Lines = append([]string(nil), m.Lines...)
	mc.sess = s
	s.Media = append(s.Media, &mc)
}

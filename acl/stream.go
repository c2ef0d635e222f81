package acl

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ErrFraming is returned by Conn.Read (after the connection was closed)
// when the stream cannot be split into SIP messages any more: a missing,
// duplicate, negative or invalid Content-Length, or a header section or
// message over max_message_bytes. The bytes that follow could not be
// trusted to start a message, so the edge closes rather than desynchronise.
var ErrFraming = errors.New("acl: sip stream framing error")

// errBanned closes a connection whose source got banned while it was open.
var errBanned = errors.New("acl: source banned")

// Listener is a net.Listener that closes connections from refused
// sources at Accept (before any byte is read, so before a TLS handshake)
// and, for WrapListener, wraps the accepted ones in a framing Conn.
type Listener struct {
	net.Listener
	g    *Guard
	side Side
	// frame: wrap accepted connections in Conn (plain-text streams)
	frame bool
}

// WrapListener wraps a plain-text stream listener of side s: TCP, or a
// TLS listener (crypto/tls.NewListener) whose Accept returns connections
// that decrypt on Read. Refused sources are closed at Accept; accepted
// connections are framed and filtered message by message (Conn).
func (g *Guard) WrapListener(s Side, ln net.Listener) *Listener {
	return &Listener{Listener: ln, g: g, side: s, frame: true}
}

// WrapRawListener wraps the raw TCP listener under a TLS layer: refused
// sources are closed at Accept before the handshake; accepted connections
// are returned unchanged (the bytes are still encrypted). Pair it with
// WrapConn on the decrypted connection, or WrapListener on the TLS
// listener, to filter messages too.
func (g *Guard) WrapRawListener(s Side, ln net.Listener) *Listener {
	return &Listener{Listener: ln, g: g, side: s}
}

// Accept returns the next admitted connection.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return c, err
		}
		if l.frame && admittedBelow(c) {
			// a TLS connection over a socket this Guard already admitted
			// and counted: frame the decrypted stream only
			return l.g.WrapConn(l.side, c), nil
		}
		src := addrOf(c.RemoteAddr())
		if !src.IsValid() {
			l.g.m.drop(l.side, ReasonMalformed)
			_ = c.Close() // refused before any use: a close error changes nothing
			continue
		}
		if r := l.g.Admit(l.side, src); r != ReasonNone {
			_ = c.Close() // refused (and counted by Admit)
			continue
		}
		if !l.g.openConn(l.side, src) {
			_ = c.Close() // refused: too many connections from src
			continue
		}
		if l.frame {
			wc := l.g.WrapConn(l.side, c)
			wc.counted = true
			return wc, nil
		}
		return &countedConn{Conn: c, g: l.g, src: src}, nil
	}
}

// admittedBelow reports whether c is a TLS connection (crypto/tls.Conn
// exposes NetConn) over a connection an acl Listener already accepted.
func admittedBelow(c net.Conn) bool {
	nc, ok := c.(interface{ NetConn() net.Conn })
	if !ok {
		return false
	}
	switch nc.NetConn().(type) {
	case *Conn, *countedConn:
		return true
	}
	return false
}

// Conn frames SIP messages on a stream (RFC 3261 §18.3: Content-Length
// delimits each message) and returns from Read only the bytes of the
// messages the Guard admits, whole messages at a time, so the reader's
// stream parser always starts on a message boundary. RFC 5626 keep-alive
// pings (CRLFCRLF) are answered with CRLF here and never reach the reader.
// Read and Write may be called concurrently (one reader).
type Conn struct {
	net.Conn
	g    *Guard
	side Side
	src  addrKey

	rmu     sync.Mutex // guards buf, start, end, pending, err (held by Read)
	buf     []byte     // raw bytes read: buf[start:end] not yet framed
	start   int
	end     int
	pending []byte        // admitted bytes not yet returned (a slice of buf)
	err     error         // sticky
	mode    atomic.Uint32 // modeSniff until the first byte, then modeSIP or modeRaw (read by Write)
	wmu     sync.Mutex
	counted bool // the source's connection count includes this one
	closed  atomic.Bool

	partialSince time.Time  // guarded by rmu: when the incomplete message in buf began to arrive
	dlMu         sync.Mutex // guards userDL
	userDL       time.Time  // the read deadline the reader set
}

// SetReadDeadline records the reader's deadline (the message timeout is
// combined with it) and sets it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	c.userDL = t
	c.dlMu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	c.dlMu.Lock()
	c.userDL = t
	c.dlMu.Unlock()
	return c.Conn.SetDeadline(t)
}

// Close closes the connection and releases its place in the source's
// connection count.
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) && c.counted {
		c.g.closeConn(addrFrom16(c.src))
	}
	return c.Conn.Close()
}

// countedConn is a connection of a listener that does not frame
// (WrapRawListener): Close releases its place in the source's count.
type countedConn struct {
	net.Conn
	g      *Guard
	src    netip.Addr
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.g.closeConn(c.src)
	}
	return c.Conn.Close()
}

// Stream modes. A TLS ClientHello (first byte 0x16, a handshake record)
// on a listener wrapped below the TLS layer switches the Conn to raw mode:
// bytes pass untouched (accept-time ACL and bans still apply, and a ban
// closes the connection on the next read); SIP never starts with 0x16.
const (
	modeSniff uint32 = iota
	modeSIP
	modeRaw
)

// addrKey is the remote IP (netip.Addr of the connection).
type addrKey = [16]byte

// WrapConn wraps an accepted plain-text stream connection of side s.
func (g *Guard) WrapConn(s Side, c net.Conn) *Conn {
	src := addrOf(c.RemoteAddr())
	return &Conn{Conn: c, g: g, side: s, src: src.As16(), buf: make([]byte, 4096)}
}

// Unwrap returns the wrapped connection (e.g. the *tls.Conn).
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Write serialises writes with the edge's own responses.
func (c *Conn) Write(b []byte) (int, error) {
	if c.mode.Load() != modeRaw {
		c.g.writeTap(c.side, c.LocalAddr(), c.RemoteAddr(), b)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.Write(b)
}

// Read returns admitted message bytes.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if len(c.pending) > 0 {
			n := copy(b, c.pending)
			c.pending = c.pending[n:]
			return n, nil
		}
		if c.err != nil {
			return 0, c.err
		}
		if c.mode.Load() == modeSniff && c.end > c.start {
			if c.buf[c.start] == 0x16 {
				c.mode.Store(modeRaw)
			} else {
				c.mode.Store(modeSIP)
			}
		}
		if c.mode.Load() == modeRaw {
			return c.readRaw(b)
		}
		before := c.start
		if err := c.frameOne(); err != nil {
			c.fail(err)
			continue
		}
		if c.start != before {
			c.partialSince = time.Time{}
		}
		if len(c.pending) > 0 || c.start != before {
			continue
		}
		if err := c.fill(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, ErrFraming) {
				return 0, err // the reader's deadline: not fatal
			}
			c.err = err
		}
	}
}

// readRaw serves a pass-through (TLS) connection: first what was read
// while sniffing, then straight from the connection.
func (c *Conn) readRaw(b []byte) (int, error) {
	if c.end > c.start {
		n := copy(b, c.buf[c.start:c.end])
		c.start += n
		return n, nil
	}
	if c.g.banned(addrFrom16(c.src)) {
		c.fail(errBanned)
		return 0, errBanned
	}
	return c.Conn.Read(b)
}

// fail records a fatal error and closes the connection.
func (c *Conn) fail(err error) {
	c.err = err
	_ = c.Close() // err is what the reader reports, not a close error
}

// fill reads more bytes from the connection, compacting or growing buf
// up to max_message_bytes plus one read.
func (c *Conn) fill() error {
	if c.start > 0 && (c.end == len(c.buf) || c.start == c.end) {
		copy(c.buf, c.buf[c.start:c.end])
		c.end -= c.start
		c.start = 0
	}
	if c.end == len(c.buf) {
		limit := c.g.pol.Load().cfg.MaxMessageBytes + 4096
		if len(c.buf) >= limit {
			return fmt.Errorf("%w: message over max_message_bytes", ErrFraming)
		}
		nb := make([]byte, min(2*len(c.buf), limit))
		copy(nb, c.buf[:c.end])
		c.buf = nb
	}
	// A message that has begun must be complete within message_timeout
	// (slow-header / slowloris): the reader's own deadline still applies.
	var own time.Time
	if mt := c.g.pol.Load().cfg.MessageTimeout; mt > 0 && c.end > c.start && c.mode.Load() == modeSIP {
		if c.partialSince.IsZero() {
			c.partialSince = time.Now()
		}
		own = c.partialSince.Add(mt)
		c.dlMu.Lock()
		user := c.userDL
		c.dlMu.Unlock()
		if !user.IsZero() && user.Before(own) {
			own = time.Time{}
		} else {
			_ = c.Conn.SetReadDeadline(own)
			defer func() {
				c.dlMu.Lock()
				_ = c.Conn.SetReadDeadline(c.userDL)
				c.dlMu.Unlock()
			}()
		}
	}
	n, err := c.Conn.Read(c.buf[c.end:])
	c.end += n
	if n > 0 || err == nil {
		return nil
	}
	var ne net.Error
	if !own.IsZero() && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(own) {
		c.g.m.drop(c.side, ReasonSlow)
		return fmt.Errorf("%w: message not complete within message_timeout", ErrFraming)
	}
	return err
}

var crlf2 = []byte("\r\n\r\n")

// frameOne frames at most one message (or keep-alive) from
// buf[start:end]. It sets pending for an admitted message, consumes a
// refused one, and returns a fatal error for a framing violation or a
// banned source. With too few bytes it does nothing.
func (c *Conn) frameOne() (err error) {
	g := c.g
	defer func() {
		if v := recover(); v != nil {
			g.m.drop(c.side, ReasonPanic)
			g.log.Error("acl: panic in stream filter", zap.Any("panic", v), zap.Stack("stack"))
			err = fmt.Errorf("%w: internal error", ErrFraming)
		}
	}()
	data := c.buf[c.start:c.end]
	// keep-alives between messages (RFC 5626 §3.5.1)
	for len(data) >= 2 && data[0] == '\r' && data[1] == '\n' {
		if len(data) >= 4 && data[2] == '\r' && data[3] == '\n' {
			c.start += 4
			data = data[4:]
			c.wmu.Lock()
			_, werr := c.Conn.Write(crlf2[:2])
			c.wmu.Unlock()
			if werr != nil {
				return werr
			}
			continue
		}
		if len(data) < 4 && (len(data) == 2 || data[2] == '\r') {
			return nil // may be the start of a ping: wait
		}
		c.start += 2 // a pong or a stray CRLF
		data = data[2:]
	}
	if len(data) == 0 {
		return nil
	}
	p := g.pol.Load()
	he := bytes.Index(data, crlf2)
	if he < 0 {
		if len(data) > p.cfg.MaxMessageBytes {
			g.m.drop(c.side, ReasonOversize)
			return fmt.Errorf("%w: header section over %d bytes", ErrFraming, p.cfg.MaxMessageBytes)
		}
		return nil
	}
	hdrLen := he + 4
	var m message
	p.inspect(data[:hdrLen], &m)
	switch {
	case m.clCount == 0:
		g.m.drop(c.side, ReasonFraming)
		return fmt.Errorf("%w: no Content-Length", ErrFraming)
	case m.clCount > 1:
		g.m.drop(c.side, ReasonFraming)
		return fmt.Errorf("%w: duplicate Content-Length", ErrFraming)
	case m.clValue < 0:
		g.m.drop(c.side, ReasonFraming)
		return fmt.Errorf("%w: invalid Content-Length", ErrFraming)
	case hdrLen+m.clValue > p.cfg.MaxMessageBytes:
		g.m.drop(c.side, ReasonOversize)
		return fmt.Errorf("%w: message of %d bytes over max_message_bytes", ErrFraming, hdrLen+m.clValue)
	}
	total := hdrLen + m.clValue
	if len(data) < total {
		return nil // wait for the body
	}
	msg := data[:total]
	c.start += total
	// per-message policy: source state first (bans may have happened
	// since accept), then the message itself
	src := addrFrom16(c.src)
	switch r := g.Admit(c.side, src); r {
	case ReasonNone:
	case ReasonBanned, ReasonDenied:
		return errBanned
	default:
		return nil // rate limited: drop the message, keep the stream
	}
	act, r, code := p.decide(c.side, msg, &m, true)
	switch act {
	case actPass:
		c.pending = msg
	case actRespond:
		g.m.drop(c.side, r)
		g.m.responses[c.side&1].Inc()
		resp := respPool.Get().(*[]byte)
		*resp = m.appendResponse((*resp)[:0], msg, code, p.side[c.side&1].allowHeader, p.cfg.ServerHeader)
		g.writeTap(c.side, c.LocalAddr(), c.RemoteAddr(), *resp)
		c.wmu.Lock()
		_, werr := c.Conn.Write(*resp)
		c.wmu.Unlock()
		respPool.Put(resp)
		if werr != nil {
			return werr
		}
	default:
		if r != ReasonNone {
			g.m.drop(c.side, r)
		}
	}
	return nil
}

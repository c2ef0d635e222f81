package acl

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// memConn is an in-memory stream: Read drains r in chunks of step bytes
// (to exercise reassembly), Write collects what the edge answers.
type memConn struct {
	r    *bytes.Reader
	step int
	out  bytes.Buffer
}

func (c *memConn) Read(b []byte) (int, error) {
	if len(b) > c.step {
		b = b[:c.step]
	}
	return c.r.Read(b)
}
func (c *memConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzGuard is a strict policy without rate limits, so every input
// reaches the message checks.
func fuzzGuard(f *testing.F) *Guard {
	g, err := New(Config{
		UserAgentDeny: []string{"friendly-scanner", "sipvicious"},
		// memConn's peer is 127.0.0.1: allowed, so that every input
		// reaches framing and the message checks
		WAN:             Rules{Allow: pfx("127.0.0.0/8"), Methods: []string{"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"}},
		MaxMessageBytes: 8192,
		MaxHeaders:      64,
		MaxLineBytes:    1024,
	}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	return g
}

// addSeeds adds the committed torture messages (RFC 4475, RFC 5118) as
// seeds in addition to testdata/fuzz/<name>.
func addSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/torture/*.sip")
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzDatagram feeds arbitrary bytes along the path of a UDP datagram.
func FuzzDatagram(f *testing.F) {
	g := fuzzGuard(f)
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p := g.pol.Load()
		for _, s := range []Side{LAN, WAN} {
			act, _, code, resp := p.checkDatagram(s, data, false)
			if act == actRespond {
				r := *resp
				if code < 400 || code > 599 || !bytes.HasPrefix(r, []byte("SIP/2.0 ")) || !bytes.HasSuffix(r, []byte("\r\nContent-Length: 0\r\n\r\n")) {
					t.Fatalf("bad response %q", r)
				}
				// no header line can be smuggled through a copied value
				for _, line := range bytes.Split(r[:len(r)-4], []byte("\r\n"))[1:] {
					if len(line) == 0 || bytes.ContainsAny(line, "\r\n\x00") {
						t.Fatalf("bad response line %q in %q", line, r)
					}
				}
				if len(r) > len(data)+512 {
					t.Fatalf("response amplification: %d bytes for %d", len(r), len(data))
				}
				respPool.Put(resp)
			} else if resp != nil {
				t.Fatal("response without respond action")
			}
		}
	})
}

// FuzzStream feeds arbitrary bytes along the path of a TCP/TLS stream,
// delivered in small chunks.
func FuzzStream(f *testing.F) {
	g := fuzzGuard(f)
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if g.Admit(WAN, netip.MustParseAddr("127.0.0.1")) != ReasonNone {
			t.Fatal("fuzz peer refused: the stream path would not be exercised")
		}
		for _, step := range []int{1, 13, 4096} {
			mc := &memConn{r: bytes.NewReader(data), step: step}
			c := g.WrapConn(WAN, mc)
			buf := make([]byte, 32768)
			var got int
			for i := 0; ; i++ {
				n, err := c.Read(buf)
				if n > 0 {
					got += n
					if n < len(buf) && !bytes.Contains(data, buf[:n]) {
						t.Fatalf("delivered bytes not in input: %q", buf[:n])
					}
				}
				if errors.Is(err, io.EOF) || (err != nil && n == 0) {
					break
				}
				if i > len(data)+10 {
					t.Fatal("Read does not terminate")
				}
			}
			if got > len(data) {
				t.Fatalf("delivered %d bytes of %d", got, len(data))
			}
		}
	})
}

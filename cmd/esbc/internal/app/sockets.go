package app

import (
	"context"
	"net"
	"syscall"
)

// listenConfig sets DSCP (media.dscp.sip) on every SIP socket before it
// is bound; accepted TCP connections inherit it. Failure to set it is
// not fatal (some sandboxes refuse IP_TOS): onErr reports it.
//
// Multipath TCP is turned off: Go (1.24 on) opens TCP listeners as MPTCP
// where the kernel has it, and Linux refuses IPV6_TCLASS on an MPTCP
// socket (EOPNOTSUPP), so SIP over TCP/TLS on IPv6 went unmarked.
func listenConfig(dscp int, onErr func(error)) *net.ListenConfig {
	lc := &net.ListenConfig{
		Control: func(network, _ string, c syscall.RawConn) error {
			if dscp <= 0 {
				return nil
			}
			var serr error
			err := c.Control(func(fd uintptr) {
				tos := dscp << 2
				if len(network) > 0 && network[len(network)-1] == '6' {
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_TCLASS, tos)
					return
				}
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS, tos)
				if serr != nil {
					// dual-stack socket: try the IPv6 option too
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_TCLASS, tos)
				}
			})
			if err == nil && serr != nil && onErr != nil {
				onErr(serr)
			}
			return nil
		},
	}
	lc.SetMultipathTCP(false)
	return lc
}

func listenPacket(ctx context.Context, lc *net.ListenConfig, addr string) (net.PacketConn, error) {
	return lc.ListenPacket(ctx, "udp", addr)
}

func listenStream(ctx context.Context, lc *net.ListenConfig, addr string) (net.Listener, error) {
	return lc.Listen(ctx, "tcp", addr)
}

// countingPacketConn counts outgoing SIP messages on a UDP socket.
type countingPacketConn struct {
	net.PacketConn
	count func(direction, method string)
}

func (c *countingPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(b, addr)
	if err == nil {
		countOut(b, c.count)
	}
	return n, err
}

// countingListener counts outgoing SIP messages on accepted streams
// (sipgo writes one whole message per Write call).
type countingListener struct {
	net.Listener
	count func(direction, method string)
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, count: l.count}, nil
}

type countingConn struct {
	net.Conn
	count func(direction, method string)
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil {
		countOut(b, c.count)
	}
	return n, err
}

func countOut(b []byte, count func(direction, method string)) {
	if len(b) < 8 || b[0] == '\r' { // keepalive CRLFs are not messages
		return
	}
	if m := sipMethodOf(b); m != "" {
		count("out", m)
	}
}

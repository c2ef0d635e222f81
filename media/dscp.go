package media

import (
	"net"
	"syscall"
)

// setDSCP marks a media socket (IP_TOS / IPV6_TCLASS = dscp<<2).
func setDSCP(c *net.UDPConn, dscp int, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v6 {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_TCLASS, dscp<<2)
			return
		}
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS, dscp<<2)
	})
	if err != nil {
		return err
	}
	return serr
}

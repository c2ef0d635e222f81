//go:build bench

package bench

// The relay architecture experiment the media issue asks for: is a fixed
// pool of epoll workers cheaper than Go's one goroutine per socket (the
// runtime netpoller) at the SBC's traffic shape — many sockets, 50 packets/s
// each? Both relays here do nothing but forward, so the difference in the
// process's CPU (same generator, same sink) is the cost of the read path.

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
)

type mediaRelayKind int

const (
	mediaGoroutinePerSocket mediaRelayKind = iota
	mediaEpollPool
	mediaReadBatch // goroutine per socket with ipv4.PacketConn ReadBatch/WriteBatch (recvmmsg/sendmmsg)
)

// mediaBatchCalls and mediaBatchMsgs count ReadBatch calls and messages.
var mediaBatchCalls, mediaBatchMsgs atomic.Int64

// mediaArchRelay opens n relay sockets forwarding to sinks (round robin) and
// returns their addresses and a stop function.
func mediaArchRelay(t *testing.T, kind mediaRelayKind, n int, sinks []netip.AddrPort) ([]netip.AddrPort, func()) {
	t.Helper()
	addrs := make([]netip.AddrPort, n)
	switch kind {
	case mediaGoroutinePerSocket:
		conns := make([]*net.UDPConn, n)
		var wg sync.WaitGroup
		for i := range conns {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadBuffer(1 << 20)
			conns[i] = c
			addrs[i] = netip.AddrPortFrom(mediaLo, uint16(mediaPort(c)))
			to := sinks[i%len(sinks)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 2048)
				for {
					m, _, err := c.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					_, _ = c.WriteToUDPAddrPort(buf[:m], to)
				}
			}()
		}
		return addrs, func() {
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		}
	case mediaReadBatch:
		conns := make([]*net.UDPConn, n)
		var wg sync.WaitGroup
		for i := range conns {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadBuffer(1 << 20)
			conns[i] = c
			addrs[i] = netip.AddrPortFrom(mediaLo, uint16(mediaPort(c)))
			to := net.UDPAddrFromAddrPort(sinks[i%len(sinks)])
			wg.Add(1)
			go func() {
				defer wg.Done()
				pc := ipv4.NewPacketConn(c)
				msgs := make([]ipv4.Message, 8)
				for j := range msgs {
					msgs[j].Buffers = [][]byte{make([]byte, 2048)}
				}
				out := make([]ipv4.Message, 8)
				for j := range out {
					out[j].Buffers = [][]byte{nil}
					out[j].Addr = to
				}
				for {
					k, err := pc.ReadBatch(msgs, 0)
					if err != nil {
						return
					}
					mediaBatchCalls.Add(1)
					mediaBatchMsgs.Add(int64(k))
					for j := 0; j < k; j++ {
						out[j].Buffers[0] = msgs[j].Buffers[0][:msgs[j].N]
					}
					_, _ = pc.WriteBatch(out[:k], 0)
				}
			}()
		}
		return addrs, func() {
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		}
	default:
		const workers = 2
		fds := make([]int, n)
		dst := make([]syscall.RawSockaddrInet4, n)
		var eps [workers]int
		for w := range eps {
			ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			eps[w] = ep
		}
		for i := range fds {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1<<20)
			if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				t.Fatal(err)
			}
			sa, _ := syscall.Getsockname(fd)
			addrs[i] = netip.AddrPortFrom(mediaLo, uint16(sa.(*syscall.SockaddrInet4).Port))
			fds[i] = fd
			to := sinks[i%len(sinks)]
			dst[i].Family = syscall.AF_INET
			dst[i].Addr = to.Addr().As4()
			p := to.Port()
			dst[i].Port = p<<8 | p>>8 // network order
			ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}
			if err := syscall.EpollCtl(eps[i%workers], syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
				t.Fatal(err)
			}
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		for w := range eps {
			wg.Add(1)
			go func(ep int) {
				defer wg.Done()
				events := make([]syscall.EpollEvent, 128)
				buf := make([]byte, 2048)
				var from syscall.RawSockaddrInet4
				for !stop.Load() {
					k, err := syscall.EpollWait(ep, events, 50)
					if err != nil {
						continue
					}
					for _, ev := range events[:k] {
						i := int(ev.Fd)
						for { // drain: natural batching when packets queued
							alen := uint32(unsafe.Sizeof(from))
							m, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(fds[i]), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
								syscall.MSG_DONTWAIT, uintptr(unsafe.Pointer(&from)), uintptr(unsafe.Pointer(&alen)))
							if e != 0 {
								break
							}
							_, _, _ = syscall.Syscall6(syscall.SYS_SENDTO, uintptr(fds[i]), uintptr(unsafe.Pointer(&buf[0])), m,
								0, uintptr(unsafe.Pointer(&dst[i])), unsafe.Sizeof(dst[i]))
						}
					}
				}
			}(eps[w])
		}
		return addrs, func() {
			stop.Store(true)
			wg.Wait()
			for _, fd := range fds {
				syscall.Close(fd)
			}
			for _, ep := range eps {
				syscall.Close(ep)
			}
		}
	}
}

// TestMediaRelayArchitecture: 1,000 sockets × 50 packets/s, 3 s each way.
func TestMediaRelayArchitecture(t *testing.T) {
	const n, pps = 1000, 50
	d := 3 * time.Second
	src := mediaListen(t)
	sinks := make([]*net.UDPConn, 8)
	sinkAddrs := make([]netip.AddrPort, len(sinks))
	for i := range sinks {
		sinks[i] = mediaListen(t)
		sinkAddrs[i] = netip.AddrPortFrom(mediaLo, uint16(mediaPort(sinks[i])))
	}
	for _, kind := range []mediaRelayKind{mediaGoroutinePerSocket, mediaEpollPool, mediaReadBatch, mediaGoroutinePerSocket, mediaEpollPool, mediaReadBatch} {
		mediaBatchCalls.Store(0)
		mediaBatchMsgs.Store(0)
		addrs, stop := mediaArchRelay(t, kind, n, sinkAddrs)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		var recv atomic.Int64
		done := make(chan struct{})
		var wg sync.WaitGroup
		for _, sink := range sinks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 2048)
				for {
					_ = sink.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
					for i := 0; i < 256; i++ {
						if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
							select {
							case <-done:
								return
							default:
							}
							break
						}
						recv.Add(1)
					}
				}
			}()
		}
		pkt := make([]byte, mediaPktSize)
		pkt[0] = 0x80
		per := (n + 19) / 20
		ticks := int(d/(20*time.Millisecond)) * 20
		start := time.Now()
		cpu0 := mediaCPUTime()
		sent := 0
		for tick := 0; tick < ticks; tick++ {
			if w := time.Until(start.Add(time.Duration(tick) * time.Millisecond)); w > 0 {
				time.Sleep(w)
			}
			for i := (tick % 20) * per; i < min((tick%20+1)*per, n); i++ {
				if _, err := src.WriteToUDPAddrPort(pkt, addrs[i]); err != nil {
					t.Fatal(err)
				}
				sent++
			}
		}
		time.Sleep(200 * time.Millisecond)
		cpu := mediaCPUTime() - cpu0
		wall := time.Since(start)
		runtime.ReadMemStats(&ms1)
		close(done)
		wg.Wait()
		stop()
		name := map[mediaRelayKind]string{mediaGoroutinePerSocket: "goroutine/socket", mediaEpollPool: "epoll pool (2)", mediaReadBatch: "ReadBatch/socket"}[kind]
		batch := ""
		if kind == mediaReadBatch {
			batch = fmt.Sprintf(", %.2f messages per ReadBatch", float64(mediaBatchMsgs.Load())/float64(max(mediaBatchCalls.Load(), 1)))
		}
		t.Logf("BENCH media arch %-16s sockets=%d offered=%d pps sent=%d recv=%d loss=%.3f%% process CPU=%.1f%% of a core (%.2f µs per packet, generator and sink included), allocs/packet=%.2f%s",
			name, n, n*pps, sent, recv.Load(), 100*float64(sent-int(recv.Load()))/float64(sent), 100*cpu.Seconds()/wall.Seconds(),
			float64(cpu.Microseconds())/float64(sent), float64(ms1.Mallocs-ms0.Mallocs)/float64(sent), batch)
	}
}

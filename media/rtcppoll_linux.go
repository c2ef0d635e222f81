//go:build linux

package media

import (
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
)

// rtcpPoller serves every RTCP socket of the engine from one goroutine on
// one epoll instance. RTCP is about one packet per 5 s per socket: a
// goroutine and a read buffer per socket would cost ~4 KiB each for
// nothing (measured: BENCHMARKS.md). The RTCP workers' SRTP contexts are
// owned by the poller goroutine. RTP sockets keep one goroutine each: at
// RTP rates that is the cheaper design (BENCHMARKS.md, architecture); the
// goroutines share their packet buffers (rtpLoop).
type rtcpPoller struct {
	e     *Engine
	epfd  int
	pipe  [2]int // writing to pipe[1] stops the loop
	buf   []byte
	mu    sync.Mutex // guards ws and next; held while a packet is handled, so unregister waits for it
	ws    map[int32]*pollEntry
	next  int32
	done  chan struct{}
	close sync.Once
}

type pollEntry struct {
	fd int
	w  *worker
}

const pollStopID = -1

func newRTCPPoller(e *Engine) (*rtcpPoller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("media: rtcp poller: %w", err)
	}
	p := &rtcpPoller{e: e, epfd: epfd, buf: make([]byte, bufSize), ws: map[int32]*pollEntry{}, done: make(chan struct{})}
	if err := syscall.Pipe2(p.pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd) // already failing; the Pipe2 error is the one to report
		return nil, fmt.Errorf("media: rtcp poller: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: pollStopID}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.pipe[0], &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("media: rtcp poller: %w", err)
	}
	go p.loop()
	return p, nil
}

// closeFDs releases the poller's descriptors. Errors are ignored: on Linux
// close(2) frees the descriptor even when it fails, so there is nothing to
// retry, and nothing was written through them that a failure could lose.
func (p *rtcpPoller) closeFDs() {
	_ = syscall.Close(p.pipe[0])
	_ = syscall.Close(p.pipe[1])
	_ = syscall.Close(p.epfd)
}

// register hands the worker's socket to the poller; the id unregisters it.
func (p *rtcpPoller) register(w *worker) (int32, error) {
	rc, err := w.conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	if p.next < 0 {
		p.next = 1
	}
	id := p.next
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: id}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return 0, fmt.Errorf("media: rtcp poller: %w", err)
	}
	p.ws[id] = &pollEntry{fd: fd, w: w}
	return id, nil
}

// unregister must be called before the socket is closed; it waits for a
// packet of that socket being handled.
func (p *rtcpPoller) unregister(id int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pe, ok := p.ws[id]; ok {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, pe.fd, nil)
		delete(p.ws, id)
	}
}

func (p *rtcpPoller) stop() {
	p.close.Do(func() {
		_, _ = syscall.Write(p.pipe[1], []byte{1})
		<-p.done
		p.closeFDs()
	})
}

func (p *rtcpPoller) loop() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 64)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			p.e.log.Error("rtcp poller", zap.Error(err))
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == pollStopID {
				return
			}
			p.serve(ev.Fd)
		}
	}
}

// serve drains one ready socket (level-triggered: what is left is
// reported again).
func (p *rtcpPoller) serve(id int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pe, ok := p.ws[id]
	if !ok {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			p.e.panics.Inc()
			p.e.log.Error("panic in rtcp poller", zap.Any("panic", r), zap.Stack("stack"))
		}
	}()
	var rsa syscall.RawSockaddrAny
	for i := 0; i < 16; i++ {
		alen := uint32(syscall.SizeofSockaddrAny)
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(pe.fd),
			uintptr(unsafe.Pointer(&p.buf[0])), uintptr(bufSize-headroom), syscall.MSG_DONTWAIT,
			uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&alen)))
		if errno != 0 {
			return // EAGAIN: drained
		}
		from, ok := addrPort(&rsa)
		if !ok {
			continue
		}
		pe.w.handle(p.buf[:n], from)
	}
}

// rtpLoop serves one RTP socket from its own goroutine until the socket
// closes; a panic is counted and the loop goes on. The goroutine waits for
// the socket in Go's netpoller (syscall.RawConn.Read) holding no buffer;
// a buffer is borrowed from bufPool for each packet.
func (e *Engine) rtpLoop(w *worker) {
	rc, err := w.conn.SyscallConn()
	if err != nil { // not a live socket: serve it the portable way
		e.loop(w)
		return
	}
	defer w.ep.wg.Done()
	read := func(fd uintptr) bool { return w.drain(int(fd)) }
	for !w.serveRaw(rc, read) {
	}
}

// serveRaw returns true once the socket is closed (RawConn.Read returns
// only then: read never reports done), false after a recovered panic.
func (w *worker) serveRaw(rc syscall.RawConn, read func(uintptr) bool) (done bool) {
	defer func() {
		if r := recover(); r != nil {
			w.ep.s.e.panics.Inc()
			w.ep.s.e.log.Error("panic in media loop", zap.String("session", w.ep.s.id), zap.Any("panic", r), zap.Stack("stack"))
			done = false
		}
	}()
	_ = rc.Read(read)
	return true
}

// drain relays every datagram queued on fd and returns false (wait for
// the socket to be readable again) once it would block: the netpoller is
// edge-triggered, so the queue must be emptied before waiting.
func (w *worker) drain(fd int) bool {
	var rsa syscall.RawSockaddrAny
	for errs := 0; ; {
		b := bufPool.Get().(*[bufSize]byte)
		alen := uint32(syscall.SizeofSockaddrAny)
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(fd),
			uintptr(unsafe.Pointer(&b[0])), uintptr(bufSize-headroom), syscall.MSG_DONTWAIT,
			uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&alen)))
		if errno != 0 {
			bufPool.Put(b)
			if errs++; errno == syscall.EAGAIN || errs > 16 {
				return false
			}
			continue // EINTR, or a pending socket error that this call consumed
		}
		errs = 0
		if from, ok := addrPort(&rsa); ok {
			w.handle(b[:n], from)
		}
		bufPool.Put(b)
	}
}

func addrPort(rsa *syscall.RawSockaddrAny) (netip.AddrPort, bool) {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		port := sa.Port>>8 | sa.Port<<8 // network byte order; the swap assumes a little-endian host
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), true
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		port := sa.Port>>8 | sa.Port<<8 // network byte order; the swap assumes a little-endian host
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

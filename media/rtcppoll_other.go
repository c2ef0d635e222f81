//go:build !linux

package media

// rtcpPoller on systems without epoll: one goroutine per RTCP socket, like
// the RTP sockets (see rtcppoll_linux.go for why Linux shares one).
type rtcpPoller struct{ e *Engine }

func newRTCPPoller(e *Engine) (*rtcpPoller, error) { return &rtcpPoller{e: e}, nil }

func (p *rtcpPoller) register(w *worker) (int32, error) {
	w.ep.wg.Add(1)
	go p.e.loop(w)
	return 0, nil
}

func (p *rtcpPoller) unregister(int32) {}

func (p *rtcpPoller) stop() {}

// rtpLoop: a goroutine with its own buffer per RTP socket.
func (e *Engine) rtpLoop(w *worker) { e.loop(w) }

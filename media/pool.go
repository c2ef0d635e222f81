package media

import (
	"fmt"
	"sync"
	"time"
)

// pool hands out even RTP ports (RTCP = port+1) from a range. Released
// ports wait in quarantine so that late packets of a finished call never
// reach the next call on the same port.
type pool struct {
	mu    sync.Mutex // guards every field below
	free  []int      // FIFO: the least recently used port is reused last
	quar  []quarantined
	inUse int
	total int
}

type quarantined struct {
	port  int
	until time.Time
}

func newPool(min, max int) (*pool, error) {
	if min < 1024 || max > 65535 || min > max {
		return nil, fmt.Errorf("media: port range %d-%d: want 1024 <= min <= max <= 65535", min, max)
	}
	if min%2 == 1 {
		min++
	}
	p := &pool{}
	for port := min; port+1 <= max; port += 2 {
		p.free = append(p.free, port)
	}
	if len(p.free) == 0 {
		return nil, fmt.Errorf("media: port range %d-%d holds no even/odd pair", min, max)
	}
	p.total = len(p.free)
	return p, nil
}

// get returns a free even port or ErrPortsExhausted.
func (p *pool) get(now time.Time) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.thaw(now)
	if len(p.free) == 0 {
		return 0, ErrPortsExhausted
	}
	port := p.free[0]
	p.free = p.free[1:]
	p.inUse++
	return port, nil
}

// put quarantines port until now+q.
func (p *pool) put(port int, now time.Time, q time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse--
	if q <= 0 {
		p.free = append(p.free, port)
		return
	}
	p.quar = append(p.quar, quarantined{port, now.Add(q)})
}

// thaw moves ports whose quarantine is over back to the free list; the
// quarantine queue is ordered by release time.
func (p *pool) thaw(now time.Time) {
	i := 0
	for ; i < len(p.quar) && !now.Before(p.quar[i].until); i++ {
		p.free = append(p.free, p.quar[i].port)
	}
	if i > 0 {
		p.quar = append(p.quar[:0], p.quar[i:]...)
	}
}

func (p *pool) used() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

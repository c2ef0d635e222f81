package media

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// drop reasons (label values of esbc_media_dropped_total).
const (
	reasonSource    = iota // not from the leg's peer (RTP bleed)
	reasonNoPeer           // nothing negotiated yet / stream disabled
	reasonSRTP             // SRTP/SRTCP authentication or replay failure
	reasonMalformed        // too short, not RTP/RTCP
	reasonSend             // write error toward the peer
	numReasons
)

var reasonNames = [numReasons]string{"source", "no_peer", "srtp", "malformed", "send"}

// Engine owns the port pool and every Session.
type Engine struct {
	log  *zap.Logger
	pool *pool
	cfg  atomic.Pointer[Config]
	tap  atomic.Pointer[tapRef] // nil: no tap (SetTap, tap.go)

	dropped   *prometheus.CounterVec
	panics    prometheus.Counter
	exhausted prometheus.Counter
	sessGauge prometheus.Gauge

	mu       sync.Mutex // guards sessions, closed, dropCache
	sessions map[*Session]struct{}
	closed   bool
	dropC    map[string]*[numReasons]prometheus.Counter

	rtcp *rtcpPoller // serves every RTCP socket (rtcppoll_linux.go)

	stop chan struct{}
	wg   sync.WaitGroup
}

func withDefaults(cfg Config) Config {
	if cfg.Quarantine == 0 {
		cfg.Quarantine = 2 * time.Second
	}
	if cfg.LatchWindow == 0 {
		cfg.LatchWindow = 5 * time.Second
	}
	return cfg
}

// NewEngine creates the engine and its watchdog goroutine. reg may be nil.
func NewEngine(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Engine, error) {
	if log == nil {
		log = zap.NewNop()
	}
	p, err := newPool(cfg.PortMin, cfg.PortMax)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		log:      log,
		pool:     p,
		sessions: map[*Session]struct{}{},
		dropC:    map[string]*[numReasons]prometheus.Counter{},
		stop:     make(chan struct{}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbc_media_dropped_total",
			Help: "Media packets dropped, by leg and reason (source = not from the negotiated peer).",
		}, []string{"leg", "reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esbc_media_panics_total", Help: "Recovered panics in media packet loops.",
		}),
		exhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esbc_media_ports_exhausted_total", Help: "Media port allocations refused because the range is exhausted.",
		}),
		sessGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esbc_media_sessions", Help: "Active media sessions.",
		}),
	}
	cfg = withDefaults(cfg)
	e.cfg.Store(&cfg)
	if e.rtcp, err = newRTCPPoller(e); err != nil {
		return nil, err
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{e.dropped, e.panics, e.exhausted, e.sessGauge,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "esbc_media_ports_in_use", Help: "Media port pairs allocated.",
			}, func() float64 { return float64(p.used()) }),
		} {
			if err := reg.Register(c); err != nil {
				e.rtcp.stop()
				return nil, err
			}
		}
	}
	e.wg.Add(1)
	go e.watchdog()
	return e, nil
}

// SetConfig applies the hot settings; PortMin/PortMax are ignored (restart).
// DSCP is re-applied to the sockets of live sessions.
func (e *Engine) SetConfig(cfg Config) {
	old := e.cfg.Load()
	cfg = withDefaults(cfg)
	cfg.PortMin, cfg.PortMax = old.PortMin, old.PortMax
	e.cfg.Store(&cfg)
	if cfg.DSCP != old.DSCP {
		e.mu.Lock()
		ss := make([]*Session, 0, len(e.sessions))
		for s := range e.sessions {
			ss = append(ss, s)
		}
		e.mu.Unlock()
		for _, s := range ss {
			s.applyDSCP(cfg.DSCP)
		}
	}
}

func (e *Engine) config() *Config { return e.cfg.Load() }

// Sessions returns the number of active sessions.
func (e *Engine) Sessions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sessions)
}

// Close closes every session and stops the watchdog. Idempotent.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	ss := make([]*Session, 0, len(e.sessions))
	for s := range e.sessions {
		ss = append(ss, s)
	}
	e.mu.Unlock()
	for _, s := range ss {
		_ = s.Close()
	}
	close(e.stop)
	e.wg.Wait()
	e.rtcp.stop()
	return nil
}

func (e *Engine) dropCounters(leg string) *[numReasons]prometheus.Counter {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.dropC[leg]; ok {
		return c
	}
	c := new([numReasons]prometheus.Counter)
	for i, r := range reasonNames {
		c[i] = e.dropped.WithLabelValues(leg, r)
	}
	e.dropC[leg] = c
	return c
}

func (e *Engine) remove(s *Session) {
	e.mu.Lock()
	if _, ok := e.sessions[s]; ok {
		delete(e.sessions, s)
		e.sessGauge.Dec()
	}
	e.mu.Unlock()
}

// watchdog fires onInactive for sessions without media for
// InactivityTimeout (sessions on hold excepted).
func (e *Engine) watchdog() {
	defer e.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			to := e.config().InactivityTimeout
			if to <= 0 {
				continue
			}
			var fire []*Session
			e.mu.Lock()
			for s := range e.sessions {
				if s.inactive(now, to) {
					fire = append(fire, s)
				}
			}
			e.mu.Unlock()
			for _, s := range fire {
				e.log.Info("media inactivity timeout", zap.String("session", s.id), zap.Duration("timeout", to))
				func() {
					defer func() {
						if r := recover(); r != nil {
							e.panics.Inc()
							e.log.Error("panic in onInactive", zap.Any("panic", r))
						}
					}()
					s.onInactive()
				}()
			}
		}
	}
}

package tls

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// HandshakeTimeout bounds a server-side handshake.
const HandshakeTimeout = 10 * time.Second

// Metrics counts handshake failures; one per process (register once).
type Metrics struct {
	Failures *prometheus.CounterVec // esbc_tls_handshake_failures_total{side,reason}
}

// NewMetrics creates the metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "esbc_tls_handshake_failures_total",
		Help: "TLS handshakes that failed, by side and reason.",
	}, []string{"side", "reason"})}
	if reg != nil {
		reg.MustRegister(m.Failures)
	}
	return m
}

// Failed counts and logs one failed handshake.
func (m *Metrics) Failed(log *zap.Logger, side string, peer string, err error) {
	reason := Reason(err)
	if m != nil {
		m.Failures.WithLabelValues(side, reason).Inc()
	}
	if log != nil {
		log.Warn("tls handshake failed", zap.String("side", side), zap.String("peer", peer),
			zap.String("reason", reason), zap.Error(err))
	}
}

// Reason classifies a handshake error for the metric label:
// version | certificate | timeout | eof | other.
func Reason(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "connection reset"):
		return "eof"
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "version"):
		return "version"
	case strings.Contains(s, "certificate"), strings.Contains(s, "x509"), strings.Contains(s, "verify"):
		return "certificate"
	}
	return "other"
}

// NewListener returns a listener that serves TLS with cfg over inner.
// Each accepted connection does its handshake on first use (so a slow
// peer never holds the accept loop) within HandshakeTimeout; a failure
// is logged with the peer and counted under side.
func NewListener(inner net.Listener, cfg *cryptotls.Config, side string, log *zap.Logger, m *Metrics) net.Listener {
	return &listener{Listener: inner, cfg: cfg, side: side, log: log, m: m}
}

type listener struct {
	net.Listener
	cfg  *cryptotls.Config
	side string
	log  *zap.Logger
	m    *Metrics
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: cryptotls.Server(c, l.cfg), l: l}, nil
}

type conn struct {
	*cryptotls.Conn
	l    *listener
	once sync.Once
	err  error
}

func (c *conn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
		defer cancel()
		if err := c.HandshakeContext(ctx); err != nil {
			c.err = err
			c.l.m.Failed(c.l.log, c.l.side, c.RemoteAddr().String(), err)
		}
	})
	return c.err
}

func (c *conn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *conn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

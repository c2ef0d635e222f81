package trunk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/esbc/esbc/b2bua/locate"
)

// optionsLoop sends, every OptionsInterval, an OPTIONS to the serving target
// (keepalive: NAT bindings, liveness) and to every target that is down
// (probe: bring it back). The first round goes out at once.
func (t *Trunk) optionsLoop(ctx context.Context) {
	tick := time.NewTicker(t.cfg.OptionsInterval)
	defer tick.Stop()
	for {
		t.optionsRound(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// optionsRound pings the serving target and probes the down ones, in parallel.
func (t *Trunk) optionsRound(ctx context.Context) {
	ts, err := t.Targets(ctx)
	if err != nil {
		if ctx.Err() == nil {
			t.log.Warn("options: no targets", zap.Error(err))
		}
		return
	}
	serving, ok := t.Serving()
	if !ok || !contains(ts, serving) {
		serving = ts[0]
		if !t.cfg.registers() {
			// A trunk without registration keeps alive its best target.
			t.setServing(serving)
		}
	} else if !t.cfg.registers() && serving.String() != ts[0].String() {
		serving = ts[0]
		t.setServing(serving)
	}
	var wg sync.WaitGroup
	for _, x := range ts {
		if x.String() != serving.String() && t.deps.Health.Up(t.cfg.Name, x) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.ping(ctx, x)
		}()
	}
	wg.Wait()
}

// ping sends one OPTIONS to x and records the outcome in Health: any final
// answer but a 5xx means the server is alive (a 401/407/404/405 included).
func (t *Trunk) ping(ctx context.Context, x locate.Target) {
	req := t.newRequest(sip.OPTIONS, sip.GenerateTagN(24), sip.GenerateTagN(12), 1)
	req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	req.SetBody(nil)
	_, err := t.send(ctx, req, x)
	if ctx.Err() != nil {
		return
	}
	var te *targetError
	switch {
	case err == nil:
		if !t.deps.Health.Up(t.cfg.Name, x) {
			t.log.Info("target answers OPTIONS again", zap.String("target", x.String()))
		}
		t.deps.Health.MarkUp(t.cfg.Name, x)
	case errors.As(err, &te):
		if t.deps.Health.Up(t.cfg.Name, x) {
			t.log.Warn("target down", zap.String("target", x.String()), zap.Error(err))
		}
		t.markDown(x, "options: "+te.Error())
	default:
		t.log.Debug("options", zap.String("target", x.String()), zap.Error(err))
	}
}

// crlfPing is the RFC 5626 §3.5.1 keepalive ping; the pong is one CRLF,
// which sipgo's stream reader consumes.
var crlfPing = []byte("\r\n\r\n")

// crlfLoop writes the double-CRLF ping every KeepaliveInterval on the open
// connection to the serving target. It never opens a connection: the
// REGISTER/OPTIONS traffic does. A failed write takes the target down. It
// also watches that connection for a registering trunk (watchFlow).
func (t *Trunk) crlfLoop(ctx context.Context) {
	tick := time.NewTicker(t.cfg.KeepaliveInterval)
	defer tick.Stop()
	var kicked flow // the registered flow a new REGISTER was asked for
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		x, ok := t.Serving()
		if !ok {
			continue
		}
		laddr, err := t.crlf(x)
		if err != nil && !errors.Is(err, errNoConnection) {
			t.log.Warn("crlf keepalive failed", zap.String("target", x.String()), zap.Error(err))
			t.markDown(x, "crlf keepalive: "+err.Error())
		}
		t.watchFlow(x, laddr, &kicked)
	}
}

// flow is esbc's end (laddr) of its connection to a target.
type flow struct {
	target, laddr string
}

// watchFlow asks the registration loop to register again at once when the
// connection the last REGISTER to the serving registrar went over is gone
// or has been replaced (RFC 5626 §4.4.1 in spirit: a broken flow is
// registered again over a new one). A trunk that sends its calls over the
// connection esbc opened (Skype Connect style, esbc behind NAT) cannot
// reach esbc between the loss of that connection and the next REGISTER,
// which would otherwise be the refresh, up to RegisterExpires away. sipgo
// keeps a connection open while its reference count is above zero
// (sip.(*TCPConnection).TryClose closes at exactly zero) and every pooled
// one holds an idle reference (sip.TransportIdleConnection), so a change
// here means the peer or the network ended the connection, not sipgo's
// counting. laddr is esbc's end of the connection open to x now ("" none);
// kicked remembers the registered flow already reported.
func (t *Trunk) watchFlow(x locate.Target, laddr string, kicked *flow) {
	if !t.cfg.registers() {
		return
	}
	t.mu.Lock()
	reg := t.regFlow
	t.mu.Unlock()
	if reg.laddr == "" || reg.target != x.String() || reg.laddr == laddr || *kicked == reg {
		return
	}
	*kicked = reg
	t.log.Info("connection to the registrar lost or replaced", zap.String("target", reg.target),
		zap.String("registered_over", reg.laddr), zap.String("now", laddr))
	select {
	case t.reflow <- struct{}{}:
	default:
	}
}

var errNoConnection = errors.New("no open connection")

// crlf pings x over the open connection to it and returns esbc's address
// on that connection.
func (t *Trunk) crlf(x locate.Target) (string, error) {
	conn, err := t.deps.UA.TransportLayer().GetConnection(x.Transport, x.Addr.String())
	if err != nil || conn == nil {
		return "", errNoConnection
	}
	// GetConnection took a reference; give it back, or the connection's
	// count never returns to zero and sipgo keeps it open forever.
	defer func() { _, _ = conn.TryClose() }()
	laddr := conn.LocalAddr().String()
	w, ok := conn.(io.Writer)
	if !ok {
		return laddr, fmt.Errorf("%T: %w", conn, errNoConnection)
	}
	_, err = w.Write(crlfPing)
	return laddr, err
}

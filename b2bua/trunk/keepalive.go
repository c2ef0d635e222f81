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
// REGISTER/OPTIONS traffic does. A failed write takes the target down.
func (t *Trunk) crlfLoop(ctx context.Context) {
	tick := time.NewTicker(t.cfg.KeepaliveInterval)
	defer tick.Stop()
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
		if err := t.crlf(x); err != nil && !errors.Is(err, errNoConnection) {
			t.log.Warn("crlf keepalive failed", zap.String("target", x.String()), zap.Error(err))
			t.markDown(x, "crlf keepalive: "+err.Error())
		}
	}
}

var errNoConnection = errors.New("no open connection")

func (t *Trunk) crlf(x locate.Target) error {
	conn, err := t.deps.UA.TransportLayer().GetConnection(x.Transport, x.Addr.String())
	if err != nil || conn == nil {
		return errNoConnection
	}
	// GetConnection took a reference; give it back, or the connection's
	// count never returns to zero and sipgo keeps it open forever.
	defer func() { _, _ = conn.TryClose() }()
	w, ok := conn.(io.Writer)
	if !ok {
		return fmt.Errorf("%T: %w", conn, errNoConnection)
	}
	_, err = w.Write(crlfPing)
	return err
}

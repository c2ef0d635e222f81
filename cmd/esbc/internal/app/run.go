package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/esbc/esbc/cmd/esbc/internal/config"
)

// servePending is a bound socket, wrapped, waiting to be served.
type servePending struct {
	side     *SideSIP
	udp      net.PacketConn
	tcp, tls net.Listener
}

// serveSide hands side's sockets to sipgo; each Serve returns when its
// socket is closed at shutdown.
func (a *App) serveSide(s *SideSIP) {
	for _, p := range a.pending {
		if p.side != s {
			continue
		}
		a.serving.Add(1)
		go func() {
			defer a.serving.Done()
			var err error
			switch {
			case p.udp != nil:
				err = s.Server.ServeUDP(p.udp)
			case p.tcp != nil:
				err = s.Server.ServeTCP(p.tcp)
			case p.tls != nil:
				err = s.Server.ServeTLS(p.tls)
			}
			if err != nil && a.ready.Load() {
				a.log.Error("sip listener stopped", zap.String("side", string(s.Side)), zap.Error(err))
			}
		}()
	}
}

// waitServing returns once sipgo holds every UDP listening socket of s
// (bounded): clients bound to a listener's address (calls.go udpClient)
// send from it only then; before, sipgo would try to bind a second socket
// on that address and fail. sipgo has no readiness signal, so it is polled.
func (a *App) waitServing(s *SideSIP) {
	for _, l := range s.Listeners {
		if l.Network != "udp" {
			continue
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if c, err := s.UA.TransportLayer().GetConnection("udp", l.Addr.String()); err == nil && c != nil {
				_, _ = c.TryClose() // GetConnection took a reference (a listener is never closed by it)
				break
			}
			if time.Now().After(deadline) {
				a.log.Warn("sip listener not served yet", zap.String("side", string(s.Side)), zap.Stringer("addr", l.Addr))
				break
			}
		}
	}
}

// notify sends a state to systemd (no-op outside systemd).
func notify(state string) {
	_, _ = daemon.SdNotify(false, state)
}

// loop waits for signals, reload triggers and the end of ctx.
func (a *App) loop(ctx context.Context) int {
	sigs := a.o.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(ch)
		sigs = ch
	}
	if iv, err := daemon.SdWatchdogEnabled(false); err == nil && iv > 0 {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		a.watchdog = t.C
	}
	for {
		select {
		case <-ctx.Done():
			a.log.Info("stopping", zap.String("reason", "context done"))
			return a.shutdown(sigs)
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				_ = a.Reload("SIGHUP")
			default:
				a.log.Info("stopping", zap.String("signal", sig.String()))
				return a.shutdown(sigs)
			}
		case <-a.watcher.events:
			_ = a.Reload("file change")
		case <-a.watchdog:
			notify(daemon.SdNotifyWatchdog)
		}
	}
}

// watchedFiles are the files whose change triggers a reload: the config
// and the TLS files it names.
func (a *App) watchedFiles() []string {
	s := a.store.Current()
	files := []string{a.o.ConfigPath}
	for _, f := range []string{s.WAN.TLS.CertFile, s.WAN.TLS.KeyFile, s.WAN.TLS.CAFile, s.Admin.TokenFile} {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}

// Reload loads the file again and, if it is valid, swaps it in. An
// invalid file leaves the running configuration untouched.
func (a *App) Reload(trigger string) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec())
	defer notify(daemon.SdNotifyReady)
	log := a.log.With(zap.String("trigger", trigger), zap.String("config", a.o.ConfigPath))

	next, err := config.Load(a.o.ConfigPath)
	if err == nil {
		err = a.certsFor(next)
	}
	if err != nil {
		a.m.reloads.WithLabelValues("error").Inc()
		var errs config.Errors
		lines := []string{err.Error()}
		if asErrors(err, &errs) {
			lines = lines[:0]
			for _, e := range errs {
				lines = append(lines, e.Error())
			}
		}
		log.Error("reload failed: the previous configuration stays in force", zap.Strings("errors", lines))
		return err
	}
	prev := a.store.Current()
	if next.Log.Level != prev.Log.Level {
		a.level.SetLevel(levelOf(next.Log.Level).Level())
	}
	a.store.Swap(next)
	restart := config.RestartRequired(a.initial, next)
	a.restart.Store(&restart)
	if len(restart) > 0 {
		a.m.restartRequired.Set(1)
		log.Warn("configuration changes that apply only after a restart", zap.Strings("keys", restart))
	} else {
		a.m.restartRequired.Set(0)
	}
	a.m.generation.Set(float64(next.Generation))
	a.m.reloads.WithLabelValues("success").Inc()
	log.Info("configuration reloaded", zap.Uint64("generation", next.Generation))
	return nil
}

// certsFor installs next's certificate (rotation); on error nothing changes.
func (a *App) certsFor(next *config.Snapshot) error {
	if next.WAN.TLS.CertFile == "" {
		return nil
	}
	if err := a.certs.Load(next.WAN.TLS.CertFile, next.WAN.TLS.KeyFile); err != nil {
		return fmt.Errorf("wan.tls.cert_file: %w", err)
	}
	return nil
}

// shutdown drains (bounded by shutdown_grace; a second SIGTERM/SIGINT
// cuts it short) and closes everything. It returns the exit code.
func (a *App) shutdown(sigs <-chan os.Signal) int {
	notify(daemon.SdNotifyStopping)
	a.ready.Store(false)
	a.drain.Store(true)
	grace := a.store.Current().ShutdownGrace
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		a.hooks.runDrain(ctx, a.log)
	}()
	forced := false
wait:
	for {
		select {
		case <-drained:
			break wait
		case <-a.watchdog: // a drain may outlast WatchdogSec
			notify(daemon.SdNotifyWatchdog)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue
			}
			a.log.Warn("second stop signal: exiting at once", zap.String("signal", sig.String()))
			forced = true
			cancel()
			<-drained
			break wait
		}
	}
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 5*time.Second)
	if forced {
		cancelClose()
	}
	defer cancelClose()
	a.stop(closeCtx)
	a.log.Info("esbc stopped", zap.Bool("forced", forced))
	return 0
}

// stop closes components, then sockets and user agents, then admin.
func (a *App) stop(ctx context.Context) {
	a.ready.Store(false)
	a.hooks.runClose(ctx, a.log)
	for _, c := range slices.Backward(a.closers) {
		_ = c.Close()
	}
	a.serving.Wait()
	if a.untrace != nil {
		a.untrace()
	}
	if a.edge != nil {
		_ = a.edge.close()
	}
	if a.admin != nil {
		a.admin.close(ctx)
	}
}

func (a *App) status() any {
	s := a.store.Current()
	side := func(ss *SideSIP) []map[string]string {
		var out []map[string]string
		if ss == nil {
			return out
		}
		for _, l := range ss.Listeners {
			out = append(out, map[string]string{"network": l.Network, "addr": l.Addr.String()})
		}
		return out
	}
	return map[string]any{
		"version":          Version,
		"commit":           Commit,
		"ready":            a.ready.Load(),
		"draining":         a.drain.Load(),
		"generation":       s.Generation,
		"restart_required": *a.restart.Load(),
		"listeners":        map[string]any{"lan": side(a.lan), "wan": side(a.wan)},
	}
}

// hooks implements Hooks.
type hooks struct {
	mu     sync.Mutex // guards drains, closes
	drains []namedHook
	closes []namedHook
}

type namedHook struct {
	name string
	fn   HookFunc
}

func (h *hooks) OnDrain(name string, fn HookFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drains = append(h.drains, namedHook{name, fn})
}

func (h *hooks) OnClose(name string, fn HookFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closes = append(h.closes, namedHook{name, fn})
}

func (h *hooks) runDrain(ctx context.Context, log *zap.Logger) {
	h.mu.Lock()
	list := slices.Clone(h.drains)
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer recoverHook(log, "drain "+d.name)
			if err := d.fn(ctx); err != nil {
				log.Warn("drain hook", zap.String("hook", d.name), zap.Error(err))
			}
		}()
	}
	wg.Wait()
}

func (h *hooks) runClose(ctx context.Context, log *zap.Logger) {
	h.mu.Lock()
	list := slices.Clone(h.closes)
	h.closes = nil
	h.mu.Unlock()
	for _, c := range slices.Backward(list) {
		func() {
			defer recoverHook(log, "close "+c.name)
			if err := c.fn(ctx); err != nil {
				log.Warn("close hook", zap.String("hook", c.name), zap.Error(err))
			}
		}()
	}
}

func recoverHook(log *zap.Logger, what string) {
	if r := recover(); r != nil {
		log.Error("panic in hook", zap.String("hook", what), zap.Any("panic", r), zap.Stack("stack"))
	}
}

package app

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// admin is the admin HTTP endpoint. Components mount handlers on mux;
// every path under /api/ passes through requireToken.
type admin struct {
	log      *zap.Logger
	mux      *http.ServeMux
	srv      *http.Server
	ln       net.Listener
	ready    *atomic.Bool
	snapshot SnapshotFunc
	done     chan struct{}
}

func newAdmin(log *zap.Logger, m *metrics, snap SnapshotFunc, ready *atomic.Bool, status func() any) *admin {
	a := &admin{log: log, mux: http.NewServeMux(), ready: ready, snapshot: snap}
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	a.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	a.mux.HandleFunc("GET /api/v1/config", func(w http.ResponseWriter, _ *http.Request) {
		s := snap()
		writeJSON(w, map[string]any{
			"source":     s.Source,
			"generation": s.Generation,
			"loaded_at":  s.LoadedAt.UTC().Format(time.RFC3339Nano),
			"embedded":   s.Embedded,
			"config":     s.Redacted(),
		})
	})
	a.mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, status())
	})
	// Runtime profiles (pprof format: go tool pprof URL) behind the /api/
	// guard (loopback or bearer token): heap, allocs, goroutine, …;
	// ?gc=1 collects garbage first, so the heap profile shows live memory.
	a.mux.HandleFunc("GET /api/v1/debug/pprof/{profile}", func(w http.ResponseWriter, r *http.Request) {
		p := pprof.Lookup(r.PathValue("profile"))
		if p == nil {
			http.Error(w, "unknown profile", http.StatusNotFound)
			return
		}
		if r.URL.Query().Get("gc") == "1" {
			runtime.GC()
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_ = p.WriteTo(w, 0)
	})
	return a
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// handler guards /api/: a client that is not on loopback needs
// "Authorization: Bearer <token>" with the token of admin.token_file;
// with no token file, /api/ is loopback-only.
func (a *admin) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") && !isLoopback(r.RemoteAddr) {
			tokenFile := a.snapshot().Admin.TokenFile
			if tokenFile == "" {
				http.Error(w, "admin API is loopback-only (no admin.token_file)", http.StatusForbidden)
				return
			}
			want, err := os.ReadFile(tokenFile)
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if err != nil || !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(string(want))), []byte(got)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="esbc"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		a.mux.ServeHTTP(w, r)
	})
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// listen binds addr (before any SIP socket is served, so a port clash
// fails start-up).
func (a *admin) listen(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	a.ln = ln
	return nil
}

// serve runs until close; listen must have succeeded.
func (a *admin) serve() {
	a.srv = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: zap.NewStdLog(a.log)}
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin http", zap.Error(err))
		}
	}()
}

func (a *admin) close(ctx context.Context) {
	if a.srv == nil {
		if a.ln != nil {
			_ = a.ln.Close() // never served: no connection to lose, nothing to report
		}
		return
	}
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close() // past the deadline: connections are dropped either way
	}
	<-a.done
}

package app

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"

	"github.com/esbc/esbc/cmd/esbc/internal/config"
	esbctls "github.com/esbc/esbc/tls"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer collects logs written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeCert writes a fresh self-signed certificate for 127.0.0.1 and
// returns its leaf.
func writeCert(t *testing.T, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	c, err := esbctls.SelfSigned([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	// Write to temporary names and rename, as a cert manager does.
	writeAtomic(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
	writeAtomic(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return c.Leaf
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// testConfig is a loopback configuration on ephemeral ports; extra adds
// top-level sections (a section in extra replaces the default one).
func testConfig(dir, extra string) string {
	defaults := []string{
		`log: { level: info }`,
		`admin: { listen: "127.0.0.1:0" }`,
		`shutdown_grace: 5s`,
		`lan: { listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"], advertise: 127.0.0.1 }`,
		fmt.Sprintf(`wan: { listen: ["tls://127.0.0.1:0"], advertise: 127.0.0.1, tls: { cert_file: %s/wan.crt, key_file: %s/wan.key }, acl: { allow: ["127.0.0.0/8"] } }`, dir, dir),
		`cdr: { file: "" }`,
	}
	var b strings.Builder
	for _, d := range defaults {
		key, _, _ := strings.Cut(d, ":")
		if !strings.HasPrefix(extra, key+":") && !strings.Contains(extra, "\n"+key+":") {
			b.WriteString(d + "\n")
		}
	}
	b.WriteString(extra + "\n")
	return b.String()
}

type running struct {
	app  *App
	dir  string
	path string
	sigs chan os.Signal
	stop context.CancelFunc
	code chan int
	logs *syncBuffer
	leaf *x509.Certificate
}

func start(t *testing.T, extra string) *running {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "esbc.yaml")
	leaf := writeCert(t, filepath.Join(dir, "wan.crt"), filepath.Join(dir, "wan.key"))
	if err := os.WriteFile(path, []byte(testConfig(dir, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return launch(t, dir, path, leaf)
}

// launch runs app on the config file at path (certificates in dir).
func launch(t *testing.T, dir, path string, leaf *x509.Certificate) *running {
	t.Helper()
	r := &running{dir: dir, path: path, sigs: make(chan os.Signal, 4), code: make(chan int, 1), logs: &syncBuffer{}, leaf: leaf}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	ready := make(chan *App, 1)
	go func() {
		r.code <- Run(ctx, Options{ConfigPath: r.path, Explicit: true, Stderr: r.logs, Signals: r.sigs,
			WatchDebounce: 50 * time.Millisecond, OnReady: func(a *App) { ready <- a }})
	}()
	select {
	case r.app = <-ready:
	case code := <-r.code:
		t.Fatalf("Run exited %d:\n%s", code, r.logs.String())
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.code:
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return")
		}
	})
	return r
}

func (r *running) addr(side Side, network string) string {
	for _, l := range r.app.Listeners(side) {
		if l.Network == network {
			return l.Addr.String()
		}
	}
	panic("no listener " + network)
}

// sipPeer is a sipgo UA acting as PBX or trunk.
func sipPeer(t *testing.T, roots *x509.CertPool) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-peer"),
		sipgo.WithUserAgenTLSConfig(&cryptotls.Config{RootCAs: roots, ServerName: "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// request sends method to addr with Request-URI user@host (host "" = addr's).
func request(t *testing.T, cli *sipgo.Client, method sip.RequestMethod, user, host, addr, transport string) *sip.Response {
	t.Helper()
	h, port, _ := strings.Cut(addr, ":")
	var p int
	fmt.Sscanf(port, "%d", &p)
	if host == "" {
		host = h
	}
	req := sip.NewRequest(method, sip.Uri{User: user, Host: host, Port: p})
	req.SetTransport(transport)
	req.SetDestination(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cli.Do(ctx, req)
	if err != nil {
		t.Fatalf("%s over %s to %s: %v", method, transport, addr, err)
	}
	return res
}

func TestOPTIONSAnsweredOnEveryTransport(t *testing.T) {
	r := start(t, "")
	roots := x509.NewCertPool()
	roots.AddCert(r.leaf)
	cli := sipPeer(t, roots)
	for _, tc := range []struct {
		side      Side
		network   string
		transport string
	}{
		{SideLAN, "udp", "UDP"},
		{SideLAN, "tcp", "TCP"},
		{SideWAN, "tls", "TLS"},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			res := request(t, cli, sip.OPTIONS, "", "", r.addr(tc.side, tc.network), tc.transport)
			if res.StatusCode != 200 {
				t.Fatalf("OPTIONS: %d %s", res.StatusCode, res.Reason)
			}
			for _, h := range []string{"Allow", "Accept", "Supported", "Server"} {
				if res.GetHeader(h) == nil {
					t.Errorf("200 OK lacks %s", h)
				}
			}
			if allow := res.GetHeader("Allow").Value(); !strings.Contains(allow, "INVITE") {
				t.Errorf("Allow = %q", allow)
			}
			// OPTIONS for somebody else is not answered as a keepalive
			// (calls.go owns the exact answer).
			if res := request(t, cli, sip.OPTIONS, "200", "pbx.example", r.addr(tc.side, tc.network), tc.transport); res.StatusCode < 300 {
				t.Errorf("OPTIONS for another host: %d", res.StatusCode)
			}
		})
	}
	// A request calls.go does not take (MESSAGE is in no default method list).
	if res := request(t, cli, sip.MESSAGE, "200", "", r.addr(SideLAN, "udp"), "UDP"); res.StatusCode < 400 {
		t.Errorf("MESSAGE: %d, want a failure", res.StatusCode)
	}
	// Every message sent is counted once, where it leaves (two OPTIONS
	// answered per transport: LAN udp+tcp, WAN tls).
	for side, want := range map[Side]float64{SideLAN: 4, SideWAN: 2} {
		if got := counterReaches(t, r.app.m.sipMessages.WithLabelValues(string(side), "out", "OPTIONS"), want); got != want {
			t.Errorf("esbc_sip_messages_total{side=%s,direction=out,method=OPTIONS} = %v, want %v", side, got, want)
		}
	}
	body := httpGet(t, r, "/metrics")
	for _, want := range []string{
		`esbc_sip_messages_total{direction="in",method="OPTIONS",side="lan"}`,
		`esbc_sip_messages_total{direction="out",method="OPTIONS",side="wan"}`,
		`esbc_build_info{`,
		`go_goroutines`,
		`process_open_fds`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func httpGet(t *testing.T, r *running, path string) string {
	t.Helper()
	res, err := http.Get("http://" + r.app.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
	}
	return string(b)
}

// waitGeneration waits for a reload to install generation gen.
func waitGeneration(t *testing.T, r *running, gen uint64) *config.Snapshot {
	t.Helper()
	got := make(chan *config.Snapshot, 8)
	unsub := r.app.store.Subscribe(func(_, next *config.Snapshot) { got <- next })
	defer unsub()
	if s := r.app.Snapshot(); s.Generation >= gen {
		return s
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-got:
			if s.Generation >= gen {
				return s
			}
		case <-timeout:
			t.Fatalf("generation %d not reached (now %d); logs:\n%s", gen, r.app.Snapshot().Generation, r.logs.String())
		}
	}
}

func reloadErrors(r *running) float64 {
	return counterValue(r.app.m.reloads.WithLabelValues("error"))
}

func TestReloadOnSIGHUP(t *testing.T) {
	r := start(t, "security: { server_header: first }")
	if err := os.WriteFile(r.path, []byte(testConfig(r.dir, "security: { server_header: second }\nlog: { level: debug }")), 0o600); err != nil {
		t.Fatal(err)
	}
	r.sigs <- syscall.SIGHUP
	s := waitGeneration(t, r, 2)
	if s.Security.ServerHeader != "second" {
		t.Fatalf("server_header = %q", s.Security.ServerHeader)
	}
	if !r.app.level.Enabled(-1) { // debug
		t.Fatal("log level not applied")
	}
	cfg := httpGet(t, r, "/api/v1/config")
	if !strings.Contains(cfg, `"server_header": "second"`) || !strings.Contains(cfg, `"generation": 2`) {
		t.Fatalf("/api/v1/config:\n%s", cfg)
	}
}

func TestInvalidReloadKeepsConfig(t *testing.T) {
	r := start(t, "security: { server_header: good }")
	if err := os.WriteFile(r.path, []byte(testConfig(r.dir, "security: { server_header: bad, bogus: 1 }")), 0o600); err != nil {
		t.Fatal(err)
	}
	before := reloadErrors(r)
	if err := r.app.Reload("test"); err == nil {
		t.Fatal("invalid reload succeeded")
	}
	if got := reloadErrors(r); got != before+1 {
		t.Fatalf("reload errors %v -> %v", before, got)
	}
	if s := r.app.Snapshot(); s.Generation != 1 || s.Security.ServerHeader != "good" {
		t.Fatalf("config changed: gen %d header %q", s.Generation, s.Security.ServerHeader)
	}
	if !strings.Contains(r.logs.String(), "security.bogus: unknown key") {
		t.Fatalf("error not logged:\n%s", r.logs.String())
	}
	if !strings.Contains(httpGet(t, r, "/metrics"), `esbc_config_reload_total{result="error"} 1`) {
		t.Fatal("metric not exported")
	}
}

func TestReloadOnRenameReplace(t *testing.T) {
	r := start(t, "")
	tmp := filepath.Join(r.dir, ".esbc.yaml.swp")
	if err := os.WriteFile(tmp, []byte(testConfig(r.dir, "shutdown_grace: 7s")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		t.Fatal(err)
	}
	if s := waitGeneration(t, r, 2); s.ShutdownGrace != 7*time.Second {
		t.Fatalf("shutdown_grace = %s", s.ShutdownGrace)
	}
}

func TestReloadOnSymlinkSwap(t *testing.T) {
	// Kubernetes ConfigMap layout: esbc.yaml -> ..data/esbc.yaml, ..data -> ..v1.
	dir := t.TempDir()
	leaf := writeCert(t, filepath.Join(dir, "wan.crt"), filepath.Join(dir, "wan.key"))
	cm := filepath.Join(dir, "cm")
	for _, v := range []string{"..v1", "..v2"} {
		if err := os.MkdirAll(filepath.Join(cm, v), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(v, extra string) {
		if err := os.WriteFile(filepath.Join(cm, v, "esbc.yaml"), []byte(testConfig(dir, extra)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("..v1", "")
	write("..v2", "shutdown_grace: 9s")
	must(t, os.Symlink("..v1", filepath.Join(cm, "..data")))
	must(t, os.Symlink("..data/esbc.yaml", filepath.Join(cm, "esbc.yaml")))
	r := launch(t, dir, filepath.Join(cm, "esbc.yaml"), leaf)
	// Swap ..data atomically, as the kubelet does.
	must(t, os.Symlink("..v2", filepath.Join(cm, "..data_tmp")))
	must(t, os.Rename(filepath.Join(cm, "..data_tmp"), filepath.Join(cm, "..data")))
	if s := waitGeneration(t, r, 2); s.ShutdownGrace != 9*time.Second {
		t.Fatalf("shutdown_grace = %s", s.ShutdownGrace)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCertificateRotation(t *testing.T) {
	r := start(t, "")
	addr := r.addr(SideWAN, "tls")
	serial := func() string {
		c, err := cryptotls.Dial("tcp", addr, &cryptotls.Config{InsecureSkipVerify: true})
		must(t, err)
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := serial(); got != r.leaf.SerialNumber.String() {
		t.Fatalf("serial %s, want %s", got, r.leaf.SerialNumber)
	}
	newLeaf := writeCert(t, filepath.Join(r.dir, "wan.crt"), filepath.Join(r.dir, "wan.key"))
	waitGeneration(t, r, 2) // the watcher sees the cert files change
	if got := serial(); got != newLeaf.SerialNumber.String() {
		t.Fatalf("after rotation serial %s, want %s", got, newLeaf.SerialNumber)
	}
}

func TestRestartRequiredGauge(t *testing.T) {
	r := start(t, "")
	must(t, os.WriteFile(r.path, []byte(testConfig(r.dir, `media: { rtp_ports: "30000-30099" }`)), 0o600))
	must(t, r.app.Reload("test"))
	if v := gaugeValue(r.app.m.restartRequired); v != 1 {
		t.Fatalf("restart_required = %v", v)
	}
	if !strings.Contains(r.logs.String(), "media.rtp_ports") {
		t.Fatal("restart key not logged")
	}
}

func TestAdminEndpoints(t *testing.T) {
	r := start(t, `trunks: [{name: t1, domain: t.example, auth: {username: u, password: "hunter2"}}]`)
	if got := httpGet(t, r, "/healthz"); got != "ok\n" {
		t.Fatalf("/healthz = %q", got)
	}
	if got := httpGet(t, r, "/readyz"); got != "ready\n" {
		t.Fatalf("/readyz = %q", got)
	}
	cfg := httpGet(t, r, "/api/v1/config")
	if strings.Contains(cfg, "hunter2") || !strings.Contains(cfg, "<redacted>") {
		t.Fatalf("password not redacted:\n%s", cfg)
	}
	if !strings.Contains(httpGet(t, r, "/api/v1/status"), `"lan"`) {
		t.Fatal("status lacks listeners")
	}
	// Heap profile in pprof format (gzip-compressed protobuf).
	if p := httpGet(t, r, "/api/v1/debug/pprof/heap?gc=1"); len(p) < 2 || p[0] != 0x1f || p[1] != 0x8b {
		t.Fatalf("heap profile is not gzip (%d bytes)", len(p))
	}
	if res, err := http.Get("http://" + r.app.AdminAddr() + "/api/v1/debug/pprof/nosuch"); err != nil {
		t.Fatal(err)
	} else if res.Body.Close(); res.StatusCode != 404 {
		t.Fatalf("unknown profile: %d", res.StatusCode)
	}
	// A client that is not on loopback needs the bearer token.
	tokenFile := filepath.Join(r.dir, "token")
	must(t, os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600))
	h := r.app.admin.handler()
	try := func(token string, withFile bool) int {
		if withFile {
			must(t, os.WriteFile(r.path, []byte(testConfig(r.dir, fmt.Sprintf("admin: { listen: %q, token_file: %q }", "127.0.0.1:0", tokenFile))), 0o600))
		} else {
			must(t, os.WriteFile(r.path, []byte(testConfig(r.dir, "")), 0o600))
		}
		must(t, r.app.Reload("test"))
		req := httptest.NewRequest("GET", "/api/v1/config", nil)
		req.RemoteAddr = "10.1.2.3:5555"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	for _, tc := range []struct {
		token    string
		withFile bool
		want     int
	}{
		{"", false, 403}, {"", true, 401}, {"wrong", true, 401}, {"s3cret", true, 200},
	} {
		if got := try(tc.token, tc.withFile); got != tc.want {
			t.Errorf("token %q file %v: %d, want %d", tc.token, tc.withFile, got, tc.want)
		}
	}
	// /metrics and /healthz stay open.
	req := httptest.NewRequest("GET", "/healthz", nil)
	req.RemoteAddr = "10.1.2.3:5555"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Fatalf("/healthz from LAN: %d", w.Code)
	}
}

func TestDrainThenExitZero(t *testing.T) {
	r := start(t, "")
	drained := make(chan struct{})
	r.app.hooks.OnDrain("test", func(ctx context.Context) error {
		close(drained)
		return nil
	})
	r.sigs <- syscall.SIGTERM
	select {
	case code := <-r.code:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		r.code <- code // for Cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	select {
	case <-drained:
	default:
		t.Fatal("drain hook not run")
	}
}

func TestSecondSIGTERMCutsDrainShort(t *testing.T) {
	r := start(t, "shutdown_grace: 1h")
	blocked := make(chan struct{})
	r.app.hooks.OnDrain("slow", func(ctx context.Context) error {
		close(blocked)
		<-ctx.Done() // a call that never ends
		return ctx.Err()
	})
	r.sigs <- syscall.SIGTERM
	<-blocked
	// Draining: not ready any more (load balancers and monitors see it).
	res, err := http.Get("http://" + r.app.AdminAddr() + "/readyz")
	must(t, err)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %d", res.StatusCode)
	}
	r.sigs <- syscall.SIGTERM
	select {
	case code := <-r.code:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		r.code <- code
	case <-time.After(20 * time.Second):
		t.Fatal("second SIGTERM did not end the drain")
	}
}

func TestStartFailsOnBusyPort(t *testing.T) {
	r := start(t, "")
	busy := r.addr(SideLAN, "tcp")
	dir := t.TempDir()
	writeCert(t, filepath.Join(dir, "wan.crt"), filepath.Join(dir, "wan.key"))
	path := filepath.Join(dir, "esbc.yaml")
	cfg := strings.Replace(testConfig(dir, ""), `"tcp://127.0.0.1:0"`, `"tcp://`+busy+`"`, 1)
	must(t, os.WriteFile(path, []byte(cfg), 0o600))
	logs := &syncBuffer{}
	if code := Run(context.Background(), Options{ConfigPath: path, Explicit: true, Stderr: logs, Signals: make(chan os.Signal)}); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(logs.String(), "address already in use") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

func TestMainCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "esbc dev") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	must(t, os.WriteFile(bad, []byte("lan: { listen: [] }\nfoo: 1\n"), 0o600))
	errb.Reset()
	if code := Main([]string{"check-config", "--config", bad}, &out, &errb); code != 1 {
		t.Fatalf("check-config bad: %d", code)
	}
	if got := errb.String(); got != "foo: unknown key\nlan.listen: at least one listen URL is required\nwan.tls.cert_file: required by a tls:// listener\n" {
		t.Fatalf("check-config output:\n%s", got)
	}
	if code := Main([]string{"check-config", "--config", filepath.Join(dir, "none.yaml")}, &out, &errb); code != 1 {
		t.Fatalf("check-config missing: %d", code)
	}
	if code := Main([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
	if code := Main(nil, &out, &errb); code != 2 {
		t.Fatalf("no command: %d", code)
	}
}

func TestSIPMethodOf(t *testing.T) {
	for in, want := range map[string]string{
		"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n":                       "OPTIONS",
		"SIP/2.0 200 OK\r\nVia: x\r\nCSeq: 1 INVITE\r\n\r\n":            "INVITE",
		"SIP/2.0 503 Service Unavailable\r\ncseq :  7  BYE\r\n\r\nbody": "BYE",
		"garbage": "",
	} {
		if got := sipMethodOf([]byte(in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	if methodLabel("FOOBAR") != "other" || methodLabel("invite") != "INVITE" {
		t.Error("methodLabel")
	}
}

// TestSystemdNotify plays systemd: a NOTIFY_SOCKET datagram socket that
// receives READY, RELOADING with MONOTONIC_USEC, WATCHDOG and STOPPING.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	must(t, err)
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(prefix string) string {
		t.Helper()
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m, prefix) {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no %s notification", prefix)
			}
		}
	}
	r := start(t, "")
	next("READY=1")
	next("WATCHDOG=1")
	r.sigs <- syscall.SIGHUP
	if m := next("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Fatalf("reload notification without MONOTONIC_USEC: %q", m)
	}
	next("READY=1")
	r.sigs <- syscall.SIGTERM
	next("STOPPING=1")
	if code := <-r.code; code != 0 {
		t.Fatalf("exit %d", code)
	}
	r.code <- 0
}

func TestDSCPOnSIPSockets(t *testing.T) {
	lc := listenConfig(24, func(err error) { t.Errorf("set DSCP: %v", err) })
	pc, err := listenPacket(context.Background(), lc, "127.0.0.1:0")
	must(t, err)
	defer pc.Close()
	ln, err := listenStream(context.Background(), lc, "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	for name, c := range map[string]syscall.Conn{"udp": pc.(syscall.Conn), "tcp": ln.(syscall.Conn)} {
		raw, err := c.SyscallConn()
		must(t, err)
		var tos int
		var serr error
		must(t, raw.Control(func(fd uintptr) { tos, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS) }))
		must(t, serr)
		if tos != 24<<2 {
			t.Errorf("%s: IP_TOS = %#x, want %#x (CS3)", name, tos, 24<<2)
		}
	}
	// IPv6: IPV6_TCLASS on the UDP socket and the TCP listener (which Go
	// would open as MPTCP, where Linux refuses the option).
	pc6, err := listenPacket(context.Background(), lc, "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine (IPv4 checked above): %v", err)
	}
	defer pc6.Close()
	ln6, err := listenStream(context.Background(), lc, "[::1]:0")
	must(t, err)
	defer ln6.Close()
	for name, c := range map[string]syscall.Conn{"udp6": pc6.(syscall.Conn), "tcp6": ln6.(syscall.Conn)} {
		raw, err := c.SyscallConn()
		must(t, err)
		var tc int
		var serr error
		must(t, raw.Control(func(fd uintptr) { tc, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_TCLASS) }))
		must(t, serr)
		if tc != 24<<2 {
			t.Errorf("%s: IPV6_TCLASS = %#x, want %#x (CS3)", name, tc, 24<<2)
		}
	}
}

// Black-box tests of the esbc binary as a service: built with go build,
// run as a process, driven by signals, files and real SIP/TLS/HTTP peers
// over loopback on ephemeral ports.
package test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// serviceBuild builds esbc into dir the way `make build` does.
func serviceBuild(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "esbc")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin,
		"-ldflags", "-X github.com/esbc/esbc/cmd/esbc/internal/app.Version=v0.0.0-test -X github.com/esbc/esbc/cmd/esbc/internal/app.Commit=abc1234",
		"github.com/esbc/esbc/cmd/esbc")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// serviceCert writes a self-signed certificate for 127.0.0.1 with the
// given serial (rename-replace, as certificate managers do).
func serviceCert(t *testing.T, dir string, serial int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "esbc-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	serviceWrite(t, filepath.Join(dir, "wan.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	serviceWrite(t, filepath.Join(dir, "wan.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func serviceWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func serviceConfig(dir, serverHeader, grace string) []byte {
	return []byte(fmt.Sprintf(`
log: { level: info, format: json }
admin: { listen: "127.0.0.1:0" }
shutdown_grace: %s
lan: { listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"], advertise: 127.0.0.1 }
wan:
  listen: ["tls://127.0.0.1:0"]
  advertise: 127.0.0.1
  tls: { cert_file: %s/wan.crt, key_file: %s/wan.key, min_version: "1.2" }
  acl: { allow: ["127.0.0.0/8"] }   # the test peer plays the trunk
cdr: { file: "" }
security: { server_header: %q }
`, grace, dir, dir, serverHeader))
}

// serviceProc is a running esbc process and what its logs told us.
type serviceProc struct {
	cmd   *exec.Cmd
	exit  chan error
	mu    sync.Mutex
	lines []string
	addrs map[string]string // "admin", "lan/udp", "lan/tcp", "wan/tls"
	ready chan struct{}
}

func serviceStart(t *testing.T, bin, cfg string) *serviceProc {
	t.Helper()
	p := &serviceProc{cmd: exec.Command(bin, "run", "--config", cfg), exit: make(chan error, 1),
		addrs: map[string]string{}, ready: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		readyOnce := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			var m map[string]any
			_ = json.Unmarshal([]byte(line), &m)
			p.mu.Lock()
			p.lines = append(p.lines, line)
			switch m["msg"] {
			case "admin listener bound":
				p.addrs["admin"] = fmt.Sprint(m["addr"])
			case "sip listener bound":
				p.addrs[fmt.Sprintf("%v/%v", m["side"], m["network"])] = fmt.Sprint(m["addr"])
			case "esbc ready":
				readyOnce.Do(func() { close(p.ready) })
			}
			p.mu.Unlock()
		}
		p.exit <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
		}
	})
	select {
	case <-p.ready:
	case err := <-p.exit:
		p.exit <- err
		t.Fatalf("esbc exited before ready: %v\n%s", err, p.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("esbc not ready:\n%s", p.logs())
	}
	return p
}

func (p *serviceProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

func (p *serviceProc) addr(key string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[key]
}

func (p *serviceProc) get(t *testing.T, path string) string {
	t.Helper()
	res, err := http.Get("http://" + p.addr("admin") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// waitFor polls the admin API until cond holds (a reload is asynchronous
// to the signal or file change that causes it).
func (p *serviceProc) waitFor(t *testing.T, what, path string, cond func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		body := p.get(t, path)
		if cond(body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not observed; last %s:\n%s\nlogs:\n%s", what, path, body, p.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func serviceOptions(t *testing.T, addr, transport string, roots *x509.CertPool) *sip.Response {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("service-test"),
		sipgo.WithUserAgenTLSConfig(&cryptotls.Config{RootCAs: roots, ServerName: "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscanf(port, "%d", &n)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Host: host, Port: n})
	req.SetTransport(transport)
	req.SetDestination(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cli.Do(ctx, req)
	if err != nil {
		t.Fatalf("OPTIONS over %s: %v", transport, err)
	}
	return res
}

func serviceServedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := cryptotls.Dial("tcp", addr, &cryptotls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestService(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := serviceBuild(t, t.TempDir())

	t.Run("static binary", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatal("binary has an ELF interpreter: not statically linked")
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Fatalf("binary imports %v", libs)
		}
		out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "CGO_ENABLED=0") {
			t.Fatalf("go version -m: %v\n%s", err, out)
		}
	})

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		want := "esbc v0.0.0-test (commit abc1234, " + runtime.Version()
		if !strings.HasPrefix(string(out), want) {
			t.Fatalf("version = %q, want prefix %q", out, want)
		}
	})

	t.Run("check-config", func(t *testing.T) {
		dir := t.TempDir()
		serviceCert(t, dir, 1)
		good := filepath.Join(dir, "good.yaml")
		serviceWrite(t, good, serviceConfig(dir, "esbc", "5s"))
		bad := filepath.Join(dir, "bad.yaml")
		serviceWrite(t, bad, []byte("trunks: [{ name: a, domain: a.example, srtpp: off, auth: { method: ip } }]\nmedia: { dscp: { sip: 99 } }\n"))
		for _, tc := range []struct {
			args []string
			code int
			out  string
		}{
			{[]string{"check-config", "--config", good}, 0, good + ": ok\n"},
			{[]string{"check-config", "--config", bad}, 1, "media.dscp.sip: DSCP must be in 0..63, got 99\ntrunks[0].srtpp: unknown key\nwan.tls.cert_file: required by a tls:// listener\n"},
			{[]string{"check-config", "--config", filepath.Join(dir, "missing.yaml")}, 1, ""},
			{[]string{"bogus"}, 2, ""},
		} {
			cmd := exec.Command(bin, tc.args...)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tc.code {
				t.Errorf("%v: exit %d, want %d\n%s", tc.args, code, tc.code, out)
			}
			if tc.out != "" && string(out) != tc.out {
				t.Errorf("%v: output %q, want %q", tc.args, out, tc.out)
			}
		}
	})

	t.Run("run", func(t *testing.T) {
		dir := t.TempDir()
		serviceCert(t, dir, 100)
		cfg := filepath.Join(dir, "esbc.yaml")
		serviceWrite(t, cfg, serviceConfig(dir, "first", "5s"))
		p := serviceStart(t, bin, cfg)

		// OPTIONS answered 200 over UDP, TCP and TLS.
		certPEM, _ := os.ReadFile(filepath.Join(dir, "wan.crt"))
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(certPEM)
		for _, tc := range []struct{ key, transport string }{{"lan/udp", "UDP"}, {"lan/tcp", "TCP"}, {"wan/tls", "TLS"}} {
			res := serviceOptions(t, p.addr(tc.key), tc.transport, roots)
			if res.StatusCode != 200 || res.GetHeader("Allow") == nil {
				t.Fatalf("OPTIONS over %s: %s", tc.transport, res.StartLine())
			}
		}
		if got := p.get(t, "/healthz"); got != "ok\n" {
			t.Fatalf("/healthz = %q", got)
		}
		if got := p.get(t, "/readyz"); got != "ready\n" {
			t.Fatalf("/readyz = %q", got)
		}

		// SIGHUP reloads.
		serviceWrite(t, cfg, serviceConfig(dir, "second", "5s"))
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		p.waitFor(t, "reload on SIGHUP", "/api/v1/config", func(b string) bool {
			return strings.Contains(b, `"server_header": "second"`)
		})

		// A rename-replace of the file reloads by itself.
		serviceWrite(t, cfg, serviceConfig(dir, "third", "5s"))
		p.waitFor(t, "reload on rename", "/api/v1/config", func(b string) bool {
			return strings.Contains(b, `"server_header": "third"`)
		})

		// An invalid file: the old config stays, the error is counted.
		serviceWrite(t, cfg, []byte("security: { server_header: fourth, nonsense: 1 }\n"))
		p.waitFor(t, "reload error counted", "/metrics", func(b string) bool {
			return strings.Contains(b, `esbc_config_reload_total{result="error"} 1`)
		})
		if b := p.get(t, "/api/v1/config"); !strings.Contains(b, `"server_header": "third"`) {
			t.Fatalf("config changed by an invalid file:\n%s", b)
		}
		if !strings.Contains(p.logs(), "security.nonsense: unknown key") {
			t.Fatal("invalid reload not logged with the key")
		}
		serviceWrite(t, cfg, serviceConfig(dir, "third", "5s"))

		// A certificate rotated on disk is served to the next handshake.
		if got := serviceServedSerial(t, p.addr("wan/tls")); got != 100 {
			t.Fatalf("serial %d, want 100", got)
		}
		serviceCert(t, dir, 200)
		deadline := time.Now().Add(20 * time.Second)
		for serviceServedSerial(t, p.addr("wan/tls")) != 200 {
			if time.Now().After(deadline) {
				t.Fatalf("rotated certificate not served; logs:\n%s", p.logs())
			}
			time.Sleep(20 * time.Millisecond)
		}

		// TLS below min_version is refused, logged with the peer and counted.
		if c, err := cryptotls.Dial("tcp", p.addr("wan/tls"), &cryptotls.Config{
			InsecureSkipVerify: true, MinVersion: cryptotls.VersionTLS11, MaxVersion: cryptotls.VersionTLS11,
		}); err == nil {
			c.Close()
			t.Fatal("TLS 1.1 handshake accepted")
		}
		p.waitFor(t, "handshake failure counted", "/metrics", func(b string) bool {
			return strings.Contains(b, `esbc_tls_handshake_failures_total{reason="version",side="wan"} 1`)
		})
		if !strings.Contains(p.logs(), `"msg":"tls handshake failed"`) || !strings.Contains(p.logs(), `"peer":"127.0.0.1:`) {
			t.Fatal("handshake failure not logged with the peer")
		}

		// SIGTERM: drain, exit 0 within shutdown_grace.
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-p.exit:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs())
			}
		case <-time.After(5*time.Second + 10*time.Second):
			t.Fatalf("no exit within shutdown_grace:\n%s", p.logs())
		}
		if !strings.Contains(p.logs(), `"msg":"esbc stopped"`) {
			t.Fatalf("no orderly stop:\n%s", p.logs())
		}
	})
}

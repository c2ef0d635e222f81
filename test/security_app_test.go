package test

import (
	"bufio"
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// secApp is a running esbc binary (a serviceProc) with its configuration
// file.
type secApp struct {
	*serviceProc
	cfg  string
	once sync.Once
}

func secAppConfig(lanDeny, captureDir string) string {
	return fmt.Sprintf(`log: { level: info, format: json }
capture: { dir: %q, mode: sip }
admin: { listen: "127.0.0.1:0" }
lan:
  listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]
  advertise: 127.0.0.1
  pbx: { uri: "sip:127.0.0.1:5999;transport=udp" }
  acl: { allow: ["127.0.0.0/8"], deny: [%s] }
wan:
  listen: ["udp://127.0.0.1:0"]
  advertise: 127.0.0.1
cdr: { file: "" }
security:
  rate_limit: { per_ip: 30, burst: 60, ban: 10m }
  user_agent_deny: ["friendly-scanner"]
`, captureDir, lanDeny)
}

func secStartApp(t *testing.T, cfg string) *secApp {
	t.Helper()
	dir := t.TempDir()
	a := &secApp{cfg: filepath.Join(dir, "esbc.yaml")}
	if err := os.WriteFile(a.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a.serviceProc = serviceStart(t, serviceBuild(t, dir), a.cfg)
	t.Cleanup(a.stop)
	return a
}

// stop drains esbc (SIGTERM) and waits for it to exit; idempotent.
func (a *secApp) stop() {
	a.once.Do(func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exit:
		case <-time.After(15 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.exit
		}
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
}

func (a *secApp) http(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+a.addr("admin")+path, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// metric returns the value of the sample line starting with series.
func (a *secApp) metric(t *testing.T, series string) float64 {
	t.Helper()
	_, body := a.http(t, "GET", "/metrics")
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, series+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(l[len(series):]), 64)
			return v
		}
	}
	return 0
}

// secAsk sends an OPTIONS for esbc itself from c to addr and returns the
// first line of the answer.
func secAsk(t *testing.T, c *net.UDPConn, addr string) string {
	t.Helper()
	dst, _ := net.ResolveUDPAddr("udp", addr)
	msg := strings.Replace(string(secRawOptions(c.LocalAddr().String())), "OPTIONS sip:127.0.0.1 ", "OPTIONS sip:"+addr+" ", 1)
	if _, err := c.WriteTo([]byte(msg), dst); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no answer from %s to %s: %v", addr, c.LocalAddr(), err)
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line
}

// secSend sends an OPTIONS without waiting for an answer.
func secSend(t *testing.T, c *net.UDPConn, addr string) {
	t.Helper()
	dst, _ := net.ResolveUDPAddr("udp", addr)
	if _, err := c.WriteTo(secRawOptions(c.LocalAddr().String()), dst); err != nil {
		t.Fatal(err)
	}
}

// TestSecurityApp drives the edge through the whole esbc binary: app.go
// opens the sockets, edge.go wraps them with acl, the admin API shows bans.
func TestSecurityApp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	secLeakCheck(t)
	capDir := t.TempDir()
	a := secStartApp(t, secAppConfig(`"127.0.0.2/32"`, capDir))
	lan, wan := a.addr("lan/udp"), a.addr("wan/udp")
	pbx := secUDP(t, "127.0.0.1")
	denied := secUDP(t, "127.0.0.2")
	other := secUDP(t, "127.0.0.3")

	// LAN: allowed sources answered, a denied one gets nothing.
	secSend(t, denied, lan)
	if l := secAsk(t, pbx, lan); l != "SIP/2.0 200 OK" {
		t.Fatalf("PBX OPTIONS: %q", l)
	}
	secNoDatagram(t, denied)
	if l := secAsk(t, other, lan); l != "SIP/2.0 200 OK" {
		t.Fatalf("127.0.0.3 OPTIONS: %q", l)
	}
	if v := a.metric(t, `esbc_acl_dropped_total{reason="denied",side="lan"}`); v != 1 {
		t.Fatalf("lan denied = %v", v)
	}
	// WAN: an empty allow list admits only trunk servers (none here).
	secSend(t, pbx, wan)
	if l := secAsk(t, pbx, lan); l != "SIP/2.0 200 OK" {
		t.Fatalf("PBX OPTIONS: %q", l)
	}
	if v := a.metric(t, `esbc_acl_dropped_total{reason="denied",side="wan"}`); v != 1 {
		t.Fatalf("wan denied = %v", v)
	}

	// Flood from 127.0.0.5: banned, visible and removable in the admin API;
	// the PBX (trusted) is served during and after.
	flooder := secUDP(t, "127.0.0.5")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- secFlood(ctx, flooder, net.UDPAddrFromAddrPort(secAddrPort(lan)), 20000, 2*time.Second)
	}()
	for i := 0; i < 20; i++ {
		if l := secAsk(t, pbx, lan); l != "SIP/2.0 200 OK" {
			t.Fatalf("PBX OPTIONS during the flood: %q", l)
		}
	}
	sent := <-done
	cancel()
	code, body := a.http(t, "GET", "/api/v1/bans")
	if code != 200 || !strings.Contains(body, `"addr":"127.0.0.5"`) || !strings.Contains(body, `"reason":"rate_limit"`) {
		t.Fatalf("GET /api/v1/bans after %d datagrams: %d %s", sent, code, body)
	}
	if v := a.metric(t, "esbc_acl_banned"); v != 1 {
		t.Errorf("esbc_acl_banned = %v", v)
	}
	if code, _ := a.http(t, "DELETE", "/api/v1/bans/127.0.0.5"); code != 204 {
		t.Fatalf("DELETE ban: %d", code)
	}
	if l := secAsk(t, flooder, lan); l != "SIP/2.0 200 OK" {
		t.Fatalf("after unban: %q", l)
	}

	// Reload: deny 127.0.0.3 too (SIGHUP); it gets nothing from then on.
	reloadApply(t, a.serviceProc, "reload denying 127.0.0.3", func() {
		if err := os.WriteFile(a.cfg, []byte(secAppConfig(`"127.0.0.2/32", "127.0.0.3/32"`, capDir)), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	secSend(t, other, lan)
	if l := secAsk(t, pbx, lan); l != "SIP/2.0 200 OK" {
		t.Fatalf("PBX OPTIONS after reload: %q", l)
	}
	secNoDatagram(t, other)
	if v := a.metric(t, `esbc_acl_dropped_total{reason="denied",side="lan"}`); v != 2 {
		t.Fatalf("lan denied after reload = %v", v)
	}

	// capture (mode sip): the SIP esbc saw, both directions, readable by tshark
	a.stop()
	files, _ := filepath.Glob(filepath.Join(capDir, "*.pcapng"))
	if len(files) != 1 {
		t.Fatalf("capture files: %v", files)
	}
	e2eRequireTool(t, "tshark")
	_, port, _ := net.SplitHostPort(lan)
	out, err := exec.Command("tshark", "-r", files[0], "-d", "udp.port=="+port+",sip", "-Y", "sip", "-T", "fields", "-e", "ip.src", "-e", "sip.CSeq.method", "-e", "sip.Status-Code").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	if !strings.Contains(string(out), "127.0.0.1\tOPTIONS\t\n") || !strings.Contains(string(out), "\tOPTIONS\t200\n") {
		t.Fatalf("capture lacks the PBX's OPTIONS and esbc's 200:\n%s", out)
	}
	if strings.Contains(string(out), "127.0.0.2\t") {
		t.Fatalf("capture holds a denied source's message:\n%s", out)
	}
	t.Logf("capture: %d SIP messages decoded by tshark", strings.Count(string(out), "\n"))
}

func secAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// TestSecurityAppTLSCapture: a SIP exchange over the WAN TLS listener of
// the binary shows up decrypted in the capture (read filter for what
// esbc reads, the edge above TLS for what it writes), readable by tshark.
func TestSecurityAppTLSCapture(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	e2eRequireTool(t, "tshark")
	secLeakCheck(t)
	dir, capDir := t.TempDir(), t.TempDir()
	cert, roots := secCert(t)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(dir, "wan.crt"), filepath.Join(dir, "wan.key")
	if err := os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	a := secStartApp(t, fmt.Sprintf(`log: { level: info, format: json }
capture: { dir: %q, mode: sip }
admin: { listen: "127.0.0.1:0" }
lan: { listen: ["udp://127.0.0.1:0"], advertise: 127.0.0.1 }
wan:
  listen: ["tls://127.0.0.1:0"]
  advertise: 127.0.0.1
  tls: { cert_file: %q, key_file: %q, min_version: "1.2" }
  acl: { allow: ["127.0.0.0/8"] }
cdr: { file: "" }
`, capDir, crt, key))
	addr := a.addr("wan/tls")
	c, err := cryptotls.Dial("tcp", addr, &cryptotls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := strings.NewReplacer("SIP/2.0/UDP", "SIP/2.0/TLS", "OPTIONS sip:127.0.0.1 ", "OPTIONS sip:"+addr+";transport=tls ").
		Replace(string(secRawOptions(c.LocalAddr().String())))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "SIP/2.0 200 OK\r\n" {
		t.Fatalf("OPTIONS over TLS: %q %v", line, err)
	}
	c.Close()
	a.stop()
	files, _ := filepath.Glob(filepath.Join(capDir, "*.pcapng"))
	if len(files) != 1 {
		t.Fatalf("capture files: %v", files)
	}
	_, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("tshark", "-r", files[0], "-d", "udp.port=="+port+",sip", "-Y", "sip", "-T", "fields",
		"-e", "udp.srcport", "-e", "sip.CSeq.method", "-e", "sip.Status-Code", "-e", "sip.Via.transport").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "\tOPTIONS\t\tTLS") || lines[1] != port+"\tOPTIONS\t200\tTLS" {
		t.Fatalf("capture of the TLS exchange, decoded by tshark:\n%s", out)
	}
}

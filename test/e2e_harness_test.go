//go:build e2e

// Package test holds black-box tests of the esbc binary over loopback with
// real peers. The SIPp tests (e2e_*) are behind the e2e build tag, as the
// other SIPp/e2e files of this package: `go test -tags e2e ./test/` (about
// 90 s; -short skips them). A missing tool skips a test unless
// ESBC_REQUIRE_TOOLS=1, which turns the skip into a failure (CI).
package test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// e2ePortBound reports whether something listens on 127.0.0.1:port.
func e2ePortBound(transport string, port int) bool {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if transport == "tcp" {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return true
	}
	pc.Close()
	return false
}

// e2eRepoRoot is the module root (the directory holding go.mod).
func e2eRepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// e2eBinary builds ./cmd/esbc into the test's temporary directory (the Go
// build cache makes every build after the first a link only).
func e2eBinary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("ESBC_BINARY"); b != "" { // a prebuilt (release) binary
		return b
	}
	out := filepath.Join(t.TempDir(), "esbc")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/esbc")
	cmd.Dir = e2eRepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/esbc: %v\n%s", err, b)
	}
	return out
}

// e2eLeakCheck checks, after every cleanup of the test (processes
// stopped), that the test left no goroutine behind.
func e2eLeakCheck(t testing.TB) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		goleak.VerifyNone(t, ignore)
	})
}

// freeUDPPort returns a UDP port free on 127.0.0.1 right now, and also free
// for TCP so one number serves both listeners.
func e2eFreePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			pc.Close()
			continue
		}
		ln.Close()
		pc.Close()
		if port == 5060 || port == 5061 {
			continue
		}
		return port
	}
	t.Fatal("no free port")
	return 0
}

// freePortPair returns an even port p with p and p+1 free on UDP (RTP and
// RTCP of a SIPp media port).
func e2eFreeMediaPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		p := e2eFreePort(t)
		if p%2 != 0 {
			p--
		}
		a, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		b, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+1))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p
	}
	t.Fatal("no free media port pair")
	return 0
}

// e2eESBC is a running esbc binary.
type e2eESBC struct {
	cmd     *exec.Cmd
	dir     string
	admin   string // http://127.0.0.1:port
	logPath string
	done    chan struct{}
	err     error
}

// e2eStartESBC writes cfg to a file in dir and runs `esbc run --config` until
// /readyz answers 200.
func e2eStartESBC(t testing.TB, dir, cfg, admin string) *e2eESBC {
	t.Helper()
	bin := e2eBinary(t)
	cfgPath := filepath.Join(dir, "esbc.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(bin, "check-config", "--config", cfgPath)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("esbc check-config: %v\n%s\nconfig:\n%s", err, out, cfg)
	}
	p := &e2eESBC{dir: dir, admin: "http://" + admin, logPath: filepath.Join(dir, "esbc.log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "run", "--config", cfgPath)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("esbc exited at start: %v\n%s", p.err, p.tail(40))
		default:
		}
		res, err := http.Get(p.admin + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("esbc not ready after 20s\n%s", p.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM (drain) and waits; SIGKILL after 15 s.
func (p *e2eESBC) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("esbc did not exit 15 s after SIGTERM\n%s", p.tail(20))
	}
}

// tail returns the last n lines of esbc's log.
func (p *e2eESBC) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// metric returns the sum of the samples of a metric family whose labels
// contain every given "k=v" pair, from esbc's /metrics.
func (p *e2eESBC) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	res, err := http.Get(p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// rssKiB reads VmRSS and VmHWM (peak) of esbc from /proc.
func (p *e2eESBC) rssKiB(t testing.TB) (rss, peak int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = n
		case "VmHWM:":
			peak = n
		}
	}
	return rss, peak
}

// sipp is one SIPp process.
type e2eSIPp struct {
	name       string
	dir        string
	cmd        *exec.Cmd
	screenFile string
	msgFile    string
	errFile    string
	statFile   string
	done       chan struct{}
	err        error
}

// e2eScenario is the path of a scenario under test/sipp.
func e2eScenario(t testing.TB, name string) string {
	return filepath.Join(e2eRepoRoot(t), "test", "sipp", name)
}

// e2eStartSIPp runs sipp with args in its own directory under dir; traces go
// to files there (the message log only when traceMsg: it is large under
// load). It returns at once.
func e2eStartSIPp(t testing.TB, dir, name string, traceMsg bool, args ...string) *e2eSIPp {
	t.Helper()
	bin := e2eRequireTool(t, "sipp")
	s := &e2eSIPp{name: name, dir: filepath.Join(dir, name), done: make(chan struct{})}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.screenFile = filepath.Join(s.dir, "screen.log")
	s.msgFile = filepath.Join(s.dir, "messages.log")
	s.errFile = filepath.Join(s.dir, "errors.log")
	s.statFile = filepath.Join(s.dir, "stat.csv")
	all := append([]string{
		"-nostdin", "-trace_screen", "-screen_file", s.screenFile,
		"-trace_err", "-error_file", s.errFile,
		"-trace_stat", "-stf", s.statFile, "-fd", "1",
	}, args...)
	if traceMsg {
		all = append(all, "-trace_msg", "-message_file", s.msgFile)
	}
	s.cmd = exec.Command(bin, all...)
	s.cmd.Dir = s.dir
	out, err := os.Create(filepath.Join(s.dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		out.Close()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop() })
	return s
}

// wait waits for SIPp to exit by itself (a UAC with -m) within d.
func (s *e2eSIPp) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(d):
		s.stop()
		t.Fatalf("sipp %s still running after %s\n%s", s.name, d, s.file(s.screenFile, 40))
		return nil
	}
}

// stop ends SIPp (SIGUSR1 asks it to quit and dump its screen; SIGKILL after 5 s).
func (s *e2eSIPp) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGUSR1)
	select {
	case <-s.done:
		return
	case <-time.After(2 * time.Second):
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *e2eSIPp) file(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var e2eScreenCounter = regexp.MustCompile(`^\s*(Successful call|Failed call|Outgoing calls created|Incoming calls created)\s*\|[^|]*\|\s*(\d+)`)

// counts returns the cumulative counters of SIPp's final statistics screen.
func (s *e2eSIPp) counts(t testing.TB) map[string]int {
	t.Helper()
	f, err := os.Open(s.screenFile)
	if err != nil {
		t.Fatalf("sipp %s screen: %v", s.name, err)
	}
	defer f.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if g := e2eScreenCounter.FindStringSubmatch(sc.Text()); g != nil {
			n, _ := strconv.Atoi(g[2])
			m[g[1]] = n // the last screen wins
		}
	}
	return m
}

// e2eSIPMessage is one SIP message from a SIPp -trace_msg log.
type e2eSIPMessage struct {
	Sent      bool
	StartLine string
	Headers   map[string][]string // lower-case name → values
	Body      string
	Raw       string
}

func (m e2eSIPMessage) Header(name string) string {
	v := m.Headers[strings.ToLower(name)]
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

var e2eCompactHeaders = map[string]string{"f": "from", "t": "to", "i": "call-id", "v": "via", "m": "contact", "l": "content-length", "c": "content-type", "k": "supported"}

// messages parses SIPp's message log.
func (s *e2eSIPp) messages(t testing.TB) []e2eSIPMessage {
	t.Helper()
	b, err := os.ReadFile(s.msgFile)
	if err != nil {
		t.Fatalf("sipp %s messages: %v", s.name, err)
	}
	var out []e2eSIPMessage
	for _, block := range regexp.MustCompile(`(?m)^-{20,}.*$`).Split(string(b), -1) {
		block = strings.TrimLeft(block, "\r\n")
		head, rest, ok := strings.Cut(block, "\n")
		if !ok {
			continue
		}
		m := e2eSIPMessage{Sent: strings.Contains(head, "sent"), Headers: map[string][]string{}}
		rest = strings.TrimLeft(rest, "\r\n")
		hdrs, body, _ := strings.Cut(strings.ReplaceAll(rest, "\r\n", "\n"), "\n\n")
		lines := strings.Split(hdrs, "\n")
		if len(lines) == 0 || !strings.Contains(lines[0], "SIP/2.0") {
			continue
		}
		m.StartLine = lines[0]
		for _, l := range lines[1:] {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			k = strings.ToLower(strings.TrimSpace(k))
			if full, ok := e2eCompactHeaders[k]; ok {
				k = full
			}
			m.Headers[k] = append(m.Headers[k], strings.TrimSpace(v))
		}
		m.Body = body
		m.Raw = rest
		out = append(out, m)
	}
	return out
}

//go:build bench

package bench

// Harness of the SIP load figures (sip_bench_test.go): the esbc binary and
// SIPp processes over loopback. Names carry the sip prefix: the package is
// shared with the media figures.

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	rt "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sipRequireTool skips (fails with ESBC_REQUIRE_TOOLS=1) without name.
func sipRequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not installed (apt-get install -y %s); ESBC_REQUIRE_TOOLS=1 makes this a failure", name, pkg)
		if os.Getenv("ESBC_REQUIRE_TOOLS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func sipRepoRoot() string {
	_, file, _, _ := rt.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

func sipScenario(name string) string { return filepath.Join(sipRepoRoot(), "test", "sipp", name) }

// sipBinary builds ./cmd/esbc into dir.
func sipBinary(t testing.TB, dir string) string {
	t.Helper()
	if b := os.Getenv("ESBC_BINARY"); b != "" { // a prebuilt (release) binary
		return b
	}
	out := filepath.Join(dir, "esbc")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/esbc")
	cmd.Dir = sipRepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/esbc: %v\n%s", err, b)
	}
	return out
}

// sipFreePort returns a port free for both UDP and TCP on 127.0.0.1.
func sipFreePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		pc.Close()
		if err != nil {
			continue
		}
		ln.Close()
		if p%2 == 0 && p != 5060 { // even: usable as an RTP port too
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// sipESBC is a running esbc.
type sipESBC struct {
	cmd   *exec.Cmd
	admin string
	log   string
	done  chan struct{}
	err   error
}

func sipStartESBC(t testing.TB, dir, cfg string, admin int) *sipESBC {
	t.Helper()
	bin := sipBinary(t, dir)
	path := filepath.Join(dir, "esbc.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check-config", "--config", path).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	e := &sipESBC{admin: fmt.Sprintf("http://127.0.0.1:%d", admin), log: filepath.Join(dir, "esbc.log"), done: make(chan struct{})}
	f, err := os.Create(e.log)
	if err != nil {
		t.Fatal(err)
	}
	e.cmd = exec.Command(bin, "run", "--config", path)
	e.cmd.Stdout, e.cmd.Stderr = f, f
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { e.err = e.cmd.Wait(); f.Close(); close(e.done) }()
	t.Cleanup(func() {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(20 * time.Second):
			_ = e.cmd.Process.Kill()
			<-e.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-e.done:
			t.Fatalf("esbc exited: %v\n%s", e.err, sipTail(e.log, 30))
		default:
		}
		if res, err := http.Get(e.admin + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("esbc not ready\n%s", sipTail(e.log, 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric sums the samples of name whose labels include every "k=v".
func (e *sipESBC) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	res, err := http.Get(e.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			ok = ok && strings.Contains(line, k+`="`+v+`"`)
		}
		if f := strings.Fields(line); ok {
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// mem reads VmRSS and VmHWM (peak RSS) in KiB.
func (e *sipESBC) mem(t testing.TB) (rss, peak int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			n, _ := strconv.Atoi(f[1])
			switch f[0] {
			case "VmRSS:":
				rss = n
			case "VmHWM:":
				peak = n
			}
		}
	}
	return rss, peak
}

// cpu returns esbc's user+system CPU time so far.
func (e *sipESBC) cpu(t testing.TB) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ = 100 on Linux
}

func sipTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sipSIPp is one SIPp process.
type sipSIPp struct {
	name   string
	dir    string
	cmd    *exec.Cmd
	screen string
	errs   string
	done   chan struct{}
	err    error
}

func sipStartSIPp(t testing.TB, dir, name string, args ...string) *sipSIPp {
	t.Helper()
	bin := sipRequireTool(t, "sipp", "sip-tester")
	s := &sipSIPp{name: name, dir: filepath.Join(dir, name), done: make(chan struct{})}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.screen = filepath.Join(s.dir, "screen.log")
	s.errs = filepath.Join(s.dir, "errors.log")
	all := append([]string{"-nostdin", "-trace_screen", "-screen_file", s.screen, "-trace_err", "-error_file", s.errs}, args...)
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
	go func() { s.err = s.cmd.Wait(); out.Close(); close(s.done) }()
	t.Cleanup(s.stop)
	return s
}

func (s *sipSIPp) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGUSR1)
	select {
	case <-s.done:
		return
	case <-time.After(3 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

func (s *sipSIPp) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(d):
		s.stop()
		return fmt.Errorf("sipp %s still running after %s", s.name, d)
	}
}

// counts reads the cumulative counters of SIPp's last statistics screen.
func (s *sipSIPp) counts() map[string]int {
	m := map[string]int{}
	b, _ := os.ReadFile(s.screen)
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, "|")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		switch name {
		case "Successful call", "Failed call", "Outgoing calls created", "Current Calls":
		default:
			continue
		}
		parts := strings.Split(rest, "|")
		v := strings.TrimSpace(parts[len(parts)-1])
		if v == "" && len(parts) > 1 {
			v = strings.TrimSpace(parts[0])
		}
		if n, err := strconv.Atoi(strings.Fields(v + " x")[0]); err == nil {
			m[name] = n
		}
	}
	return m
}

// sipWaitBound waits until a UDP (or TCP) port is taken on 127.0.0.1.
func sipWaitBound(t testing.TB, network string, port int) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if network == "tcp" {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return
			}
		} else if pc, err := net.ListenPacket("udp", addr); err != nil {
			return
		} else {
			pc.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing bound %s/%s", network, addr)
}

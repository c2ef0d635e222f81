//go:build e2e

package test

// WAN certificate rotation under load, black-box: inbound calls from a
// TLS trunk (sipgo, one TLS connection for all its calls) run through the
// built binary's tls:// listener to the PBX while the certificate and key
// files are replaced twice (rename-replace, as certificate managers do)
// and the configuration reloaded with SIGHUP.

import (
	"bufio"
	cryptotls "crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	rotationCalls = 90
	rotationRate  = 15 // calls per second
	rotationHold  = 2 * time.Second
)

// rotationServed is the serial of the certificate a fresh handshake with
// addr presents, verified against roots.
func rotationServed(t *testing.T, addr string, roots *x509.CertPool) *big.Int {
	t.Helper()
	c, err := cryptotls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr,
		&cryptotls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// rotationInstall replaces files of dir, in order (rename-replace, as
// certificate managers do): each {name, from} with the file name of the
// directory from.
func rotationInstall(t *testing.T, dir string, files ...[2]string) {
	t.Helper()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(f[1], f[0]))
		if err != nil {
			t.Fatal(err)
		}
		serviceWrite(t, filepath.Join(dir, f[0]), b)
	}
}

// rotationOptions sends an OPTIONS over an open TLS connection and reads
// the response's status line (bounded).
func rotationOptions(c *cryptotls.Conn, r *bufio.Reader, n int) (string, error) {
	local := c.LocalAddr().String()
	msg := fmt.Sprintf("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bK-rot%d-%d\r\n"+
		"From: <sip:probe@%s>;tag=rot%d\r\nTo: <sip:127.0.0.1>\r\nCall-ID: rot%d-%d@%s\r\nCSeq: %d OPTIONS\r\n"+
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n", local, n, time.Now().UnixNano(), local, n, n, time.Now().UnixNano(), local, n)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	status, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	for { // the rest of the response: headers, then the (empty) body
		l, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(status), nil
}

// TestTLSRotationUnderLoad: 90 inbound calls at 15/s, each held 2 s, over
// the trunk's TLS connection to esbc's WAN listener, while the WAN
// certificate is rotated twice (new key and certificate files from the
// same CA, SIGHUP). Every call is set up and ends normally (0 failed, a BYE
// at the PBX for each); calls up before the rotations keep their media; a
// fresh handshake after each reload presents the new certificate (serial
// read from a crypto/tls dial); a TLS connection opened before the
// rotations keeps its certificate and still gets answers; a new trunk UA
// (new handshake, verified against the CA) calls through after them.
func TestTLSRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary under load")
	}
	failoverLeakCheck(t)
	dir := t.TempDir()
	pki := newEdgePKI(t, dir, "127.0.0.1", "127.0.0.1")
	ca, first, trunkCert, roots := pki.ca, pki.esbc, pki.trunk, pki.roots
	serialOf := func(c cryptotls.Certificate) *big.Int {
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.SerialNumber
	}

	pbx := newEdgeUA(t, "pbx", "127.0.0.1", "udp", nil, nil)
	trunk := newEdgeUA(t, "trunk", "127.0.0.1", "tls", &trunkCert, roots)
	cfg := filepath.Join(dir, "esbc.yaml")
	serviceWrite(t, cfg, edgeConfig("127.0.0.1", dir, pbx.port, trunk.port, `"127.0.0.0/8"`, "", `"127.0.0.0/8"`, "", reloadRTPRange()))
	r := &reloadRig{bin: serviceBuild(t, dir), cfg: cfg}
	p := r.start(t)
	wan := p.addr("wan/tls")
	reloadWaitTrunkUp(t, p, "127.0.0.1/"+trunk.addr()+"/tls")
	if got, want := rotationServed(t, wan, roots), serialOf(first); got.Cmp(want) != 0 {
		t.Fatalf("certificate served at start: serial %v, want %v", got, want)
	}
	okBefore := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`)
	errStart := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`)

	// A TLS connection opened before the rotations.
	old, err := cryptotls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", wan,
		&cryptotls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldR := bufio.NewReader(old)
	if st, err := rotationOptions(old, oldR, 1); err != nil || !strings.HasPrefix(st, "SIP/2.0 200") {
		t.Fatalf("OPTIONS over a TLS connection before the rotations: %q %v", st, err)
	}

	// Calls up before the rotations (media checked after them).
	dial := func() (*edgeCall, error) { return trunk.call(wan, "+14155550100") }
	early := reloadEarlyCalls(t, p, 2, "the rotations", dial)

	var rotations atomic.Int64      // rotations done (seen in force)
	third := make(chan struct{}, 2) // one signal after a third, one after two thirds of the calls started
	load := reloadLoad(rotationCalls, rotationRate, rotationHold, 0, func() int { return int(rotations.Load()) },
		func(i int) {
			if i == rotationCalls/3 || i == 2*rotationCalls/3 {
				third <- struct{}{}
			}
		}, dial)

	// Two rotations: new key and certificate (rename-replace each), SIGHUP,
	// then a fresh handshake must present the new certificate (bounded).
	stage := t.TempDir()
	var current *big.Int // the serial in force after the last rotation
	for k := 1; k <= 2; k++ {
		select {
		case <-third:
		case <-time.After(60 * time.Second):
			t.Fatal("calls did not start")
		}
		next := ca.leaf(t, stage, "esbc", "127.0.0.1")
		want := serialOf(next)
		rotationInstall(t, dir, [2]string{"esbc.key", stage}, [2]string{"esbc.crt", stage})
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !failoverPoll(15*time.Second, func() bool { return rotationServed(t, wan, roots).Cmp(want) == 0 }) {
			t.Fatalf("rotation %d: a new handshake still presents serial %v, want %v\n%s",
				k, rotationServed(t, wan, roots), want, failoverTail(p.logs(), 20))
		}
		current = want
		rotations.Store(int64(k))
	}
	load.wait(t, p, 90*time.Second)

	// Calls up before the rotations: media both ways, BYE succeeds.
	reloadEndEarly(t, early, "2 rotations")
	n := load.tally(t, "rotation")
	setupFailed, byeFailed, spanned := n.setupFailed, n.byeFailed, n.spanned
	want := int64(rotationCalls + len(early))
	failoverPoll(10*time.Second, func() bool { return pbx.byes.Load() >= want })
	t.Logf("%d inbound calls over TLS at %d/s held %s, 2 certificate rotations: %d set-up failures, %d BYE failures, "+
		"%d calls lived through a rotation; PBX: %d answered, %d BYEs", rotationCalls, rotationRate, rotationHold,
		setupFailed, byeFailed, spanned, pbx.answered.Load(), pbx.byes.Load())
	if pbx.answered.Load() != want || pbx.byes.Load() != want {
		t.Errorf("PBX: %d answered, %d BYEs; want %d of each (every call ended normally on both legs)",
			pbx.answered.Load(), pbx.byes.Load(), want)
	}
	if spanned == 0 {
		t.Errorf("no call lived through a rotation: the test did not test rotation under load")
	}
	// Each rotation is one SIGHUP plus file watcher events for the two
	// files (a watcher event between the key and the certificate sees a
	// mismatched pair and is refused: an error, the old certificate stays).
	ok := reloadMetric(t, p, `esbc_config_reload_total{result="success"}`) - okBefore
	errs := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`) - errStart
	t.Logf("2 rotations: reload_total success +%v, error +%v", ok, errs)
	if ok < 2 {
		t.Errorf("esbc_config_reload_total{result=\"success\"} +%v over 2 rotations, want >= 2", ok)
	}

	// A botched rotation (a certificate whose key is not the key file's) is
	// refused: counted as a reload error, the certificate in force stays.
	errBefore := reloadMetric(t, p, `esbc_config_reload_total{result="error"}`)
	ca.leaf(t, stage, "esbc", "127.0.0.1")
	other := t.TempDir()
	ca.leaf(t, other, "esbc", "127.0.0.1")
	rotationInstall(t, dir, [2]string{"esbc.crt", stage}, [2]string{"esbc.key", other})
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !failoverPoll(15*time.Second, func() bool {
		return reloadMetric(t, p, `esbc_config_reload_total{result="error"}`) > errBefore
	}) {
		t.Errorf("a certificate that does not match its key: no reload error counted\n%s", failoverTail(p.logs(), 20))
	}
	if got := rotationServed(t, wan, roots); got.Cmp(current) != 0 {
		t.Errorf("after a refused rotation a new handshake presents serial %v, want the one in force (%v)", got, current)
	}

	// The connection opened before the rotations: still answered, with the
	// certificate it was opened with.
	if st, err := rotationOptions(old, oldR, 2); err != nil || !strings.HasPrefix(st, "SIP/2.0 200") {
		t.Errorf("OPTIONS over the TLS connection opened before the rotations: %q %v", st, err)
	}
	if got := old.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(serialOf(first)) != 0 {
		t.Errorf("connection opened before the rotations: serial %v, want the first certificate's %v", got, serialOf(first))
	}
	// A new trunk UA (its own handshake, verified against the CA) calls
	// through after the rotations.
	fresh := newEdgeUA(t, "trunk-fresh", "127.0.0.1", "tls", &trunkCert, roots)
	fresh.callThrough(t, p, wan, "+14155550100", "call on a new TLS connection after the rotations")
	if strings.Contains(p.logs(), "panic") {
		t.Errorf("esbc logged a panic:\n%s", failoverTail(p.logs(), 40))
	}
}

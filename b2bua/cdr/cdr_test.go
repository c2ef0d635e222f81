package cdr

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func record(id string) Record {
	start := time.Date(2026, 11, 30, 13, 0, 0, 0, time.UTC)
	return Record{
		CallID: id, Direction: "outbound", Trunk: "skype", From: "+14155550100", To: "+442071234567",
		Start: start, Answer: start.Add(3 * time.Second), End: start.Add(63 * time.Second), DurationSec: 60,
		Disposition: "answered", SIPCode: 200, Codec: "PCMU", SRTPSuite: "AES_CM_128_HMAC_SHA1_80",
		LAN: Leg{Codec: "PCMU", Packets: 3000, Lost: 1, JitterMs: 1.5, RTTMs: 0.4, Remote: "10.0.0.10:4000"},
		WAN: Leg{Codec: "PCMU", SRTPSuite: "AES_CM_128_HMAC_SHA1_80", Packets: 2990, Lost: 3, JitterMs: 7.25, RTTMs: 120, Remote: "127.0.0.5:30000"},
	}
}

// readLines returns the JSON objects in path, one per line.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func ids(lines []map[string]any) string {
	var s []string
	for _, l := range lines {
		s = append(s, l["call_id"].(string))
	}
	return strings.Join(s, " ")
}

func TestWriteJSONLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "cdr.jsonl")
	reg := prometheus.NewRegistry()
	w, err := NewWriter(path, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(record("a"))
	unanswered := record("b")
	unanswered.Answer, unanswered.DurationSec, unanswered.Disposition, unanswered.SIPCode = time.Time{}, 0, "busy", 486
	w.Write(unanswered)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if ids(lines) != "a b" {
		t.Fatalf("lines %v", lines)
	}
	// Round trip of the full record.
	raw, _ := os.ReadFile(path)
	var got Record
	if err := json.Unmarshal([]byte(strings.SplitN(string(raw), "\n", 2)[0]), &got); err != nil {
		t.Fatal(err)
	}
	if want := record("a"); got != want {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	// Field names are the documented contract.
	a := lines[0]
	for _, k := range []string{"call_id", "direction", "trunk", "from", "to", "start", "answer", "end", "duration_sec", "disposition", "sip_code", "codec", "srtp_suite", "lan", "wan"} {
		if _, ok := a[k]; !ok {
			t.Errorf("field %q missing", k)
		}
	}
	wan := a["wan"].(map[string]any)
	for k, v := range map[string]any{"codec": "PCMU", "srtp_suite": "AES_CM_128_HMAC_SHA1_80", "packets": 2990.0, "lost": 3.0, "jitter_ms": 7.25, "rtt_ms": 120.0, "remote": "127.0.0.5:30000"} {
		if wan[k] != v {
			t.Errorf("wan.%s = %v, want %v", k, wan[k], v)
		}
	}
	if a["start"] != "2026-11-30T13:00:00Z" {
		t.Errorf("start = %v", a["start"])
	}
	if _, ok := lines[1]["answer"]; ok {
		t.Error("unanswered call has an answer time")
	}
	if lines[1]["sip_code"] != 486.0 {
		t.Errorf("sip_code %v", lines[1]["sip_code"])
	}
	if n := counterValue(w.written); n != 2 {
		t.Errorf("written %v", n)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", info.Mode())
	}
}

// stuckDisk is a sink whose Write blocks until released, like a hung disk.
type stuckDisk struct {
	entered chan struct{} // closed at the first Write
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     strings.Builder // guarded by mu
}

func (d *stuckDisk) Write(p []byte) (int, error) {
	d.once.Do(func() { close(d.entered) })
	<-d.release
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.buf.Write(p)
}

func (d *stuckDisk) Close() error { return nil }

func TestWriteNeverBlocksOnStuckDisk(t *testing.T) {
	disk := &stuckDisk{entered: make(chan struct{}), release: make(chan struct{})}
	const queue = 8
	w, err := newWriter("stuck", nil, nil, queue, func(string) (io.WriteCloser, error) { return disk, nil })
	if err != nil {
		t.Fatal(err)
	}
	// The first record reaches the disk, which hangs.
	w.Write(record("first"))
	<-disk.entered
	// The queue fills, then every further Write returns at once (this test
	// would hang here if Write blocked) and is counted as dropped.
	for i := range queue + 100 {
		w.Write(record("r" + string(rune('a'+i%26))))
	}
	if got := w.Dropped(); got != 100 {
		t.Fatalf("dropped %d, want 100", got)
	}
	close(disk.release)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(disk.buf.String(), "\n"); n != 1+queue {
		t.Errorf("%d records reached the disk, want %d", n, 1+queue)
	}
	w.Write(record("late"))
	if got := w.Dropped(); got != 101 {
		t.Errorf("Write after Close: dropped %d, want 101", got)
	}
}

func TestReopenAfterRotate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cdr.jsonl")
	w, err := NewWriter(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write(record("before"))
	// Reopen waits for queued records, so "before" is in the old file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.Write(record("after"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ids(readLines(t, path+".1")); got != "before" {
		t.Errorf("rotated file: %q", got)
	}
	if got := ids(readLines(t, path)); got != "after" {
		t.Errorf("new file: %q", got)
	}
}

func TestSetPathAndDisabled(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := filepath.Join(dir, "one.jsonl"), filepath.Join(dir, "two.jsonl")
	w, err := NewWriter("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(record("nowhere"))
	if err := w.SetPath(p1); err != nil {
		t.Fatal(err)
	}
	w.Write(record("one"))
	if err := w.SetPath(p2); err != nil {
		t.Fatal(err)
	}
	w.Write(record("two"))
	if err := w.SetPath(""); err != nil {
		t.Fatal(err)
	}
	w.Write(record("off"))
	if err := w.SetPath(filepath.Join(dir, "missing-parent-is-a-file", "x")); err != nil {
		t.Fatal(err) // MkdirAll creates it
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.SetPath(filepath.Join(dir, "file", "x")); err == nil {
		t.Error("SetPath under a regular file: no error")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if got := ids(readLines(t, p1)); got != "one" {
		t.Errorf("p1: %q", got)
	}
	if got := ids(readLines(t, p2)); got != "two" {
		t.Errorf("p2: %q", got)
	}
	if w.Dropped() != 0 {
		t.Errorf("disabled writes counted as dropped: %d", w.Dropped())
	}
	if err := w.Reopen(); err == nil {
		t.Error("Reopen after Close: no error")
	}
}

func TestCloseFlushesEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.jsonl")
	w, err := NewWriter(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000 // < DefaultQueue: none may be dropped
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n / 4 {
				w.Write(record(string(rune('A'+g)) + "-" + string(rune('0'+i%10))))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readLines(t, path)); got != n || w.Dropped() != 0 {
		t.Fatalf("%d lines, %d dropped; want %d, 0", got, w.Dropped(), n)
	}
}

type failingDisk struct{ writes int }

func (d *failingDisk) Write(p []byte) (int, error) {
	d.writes++
	return 0, errors.New("no space left on device")
}
func (d *failingDisk) Close() error { return nil }

func TestWriteErrorsCountedAndSurvived(t *testing.T) {
	disk := &failingDisk{}
	w, err := newWriter("full", nil, nil, 4, func(string) (io.WriteCloser, error) { return disk, nil })
	if err != nil {
		t.Fatal(err)
	}
	w.Write(record("x"))
	if err := w.Reopen(); err != nil { // a sync point: x has been handled
		t.Fatal(err)
	}
	w.Write(record("y"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if counterValue(w.errs) < 2 || disk.writes < 2 {
		t.Errorf("errors %v, disk writes %d", counterValue(w.errs), disk.writes)
	}
}

func TestNilAndOpenError(t *testing.T) {
	var w *Writer
	w.Write(record("x"))
	if w.Reopen() != nil || w.SetPath("x") != nil || w.Close() != nil || w.Dropped() != 0 {
		t.Error("nil Writer not inert")
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(filepath.Join(f, "cdr.jsonl"), nil, nil); err == nil {
		t.Error("NewWriter under a regular file: no error")
	}
}

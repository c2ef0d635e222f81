package cdr

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Leg is the media quality of one call leg (LAN: toward the PBX, WAN:
// toward the trunk).
type Leg struct {
	Codec     string  `json:"codec,omitempty"`
	SRTPSuite string  `json:"srtp_suite,omitempty"`
	Packets   uint64  `json:"packets"`
	Lost      uint64  `json:"lost"`
	JitterMs  float64 `json:"jitter_ms"`
	RTTMs     float64 `json:"rtt_ms"`
	Remote    string  `json:"remote,omitempty"` // media peer "ip:port"
}

// Record is one ended call. The JSON field names are a user-facing
// contract: add fields, never rename them.
type Record struct {
	CallID      string    `json:"call_id"`
	Direction   string    `json:"direction"` // inbound | outbound
	Trunk       string    `json:"trunk"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	Start       time.Time `json:"start"`
	Answer      time.Time `json:"answer,omitzero"` // zero: not answered
	End         time.Time `json:"end"`
	DurationSec float64   `json:"duration_sec"` // End - Answer; 0 when not answered
	Disposition string    `json:"disposition"`  // answered|busy|no-answer|failed|cancelled|rejected
	SIPCode     int       `json:"sip_code"`
	Codec       string    `json:"codec,omitempty"`
	SRTPSuite   string    `json:"srtp_suite,omitempty"`
	LAN         Leg       `json:"lan"`
	WAN         Leg       `json:"wan"`
}

// DefaultQueue is the number of records the Writer holds while the disk is
// slow; beyond it records are dropped and counted.
const DefaultQueue = 4096

// Writer appends records as JSON lines to a file from its own goroutine. A
// nil *Writer discards everything.
type Writer struct {
	log     *zap.Logger
	written prometheus.Counter
	dropped prometheus.Counter
	errs    prometheus.Counter

	// open creates the sink for a path; tests replace it to simulate a
	// stuck disk.
	open func(path string) (io.WriteCloser, error)

	mu     sync.RWMutex
	closed bool        // guarded by mu
	q      chan Record // sends guarded by mu (read lock) so Close can close it
	ctl    chan ctlReq
	done   chan struct{}
	once   sync.Once

	// Owned by the run goroutine only.
	path string
	f    io.WriteCloser
	bw   *bufio.Writer
	enc  *json.Encoder
}

type ctlReq struct {
	reopen bool   // reopen the current path (logrotate)
	path   string // else switch to this path
	reply  chan error
}

// NewWriter opens (creating, appending) path and starts the writer. An empty
// path returns a Writer that discards records until SetPath gives it one.
// log nil means no logging; reg nil means the metrics are not registered.
func NewWriter(path string, log *zap.Logger, reg prometheus.Registerer) (*Writer, error) {
	return newWriter(path, log, reg, DefaultQueue, openFile)
}

func newWriter(path string, log *zap.Logger, reg prometheus.Registerer, queue int, open func(string) (io.WriteCloser, error)) (*Writer, error) {
	if log == nil {
		log = zap.NewNop()
	}
	w := &Writer{
		log: log,
		written: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esbc_cdr_written_total", Help: "CDR records written to the CDR file.",
		})),
		dropped: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esbc_cdr_dropped_total", Help: "CDR records dropped because the writer queue was full or closed.",
		})),
		errs: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esbc_cdr_errors_total", Help: "CDR file open, encode and write errors.",
		})),
		open: open,
		q:    make(chan Record, queue),
		ctl:  make(chan ctlReq),
		done: make(chan struct{}),
	}
	if err := w.switchTo(path); err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

func openFile(path string) (io.WriteCloser, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// Write queues r and returns at once; it never blocks. When the queue is full
// (disk stuck) or the writer is closed, r is dropped and counted.
func (w *Writer) Write(r Record) {
	if w == nil {
		return
	}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		w.dropped.Inc()
		return
	}
	select {
	case w.q <- r:
	default:
		w.dropped.Inc()
	}
	w.mu.RUnlock()
}

// Dropped returns how many records were dropped so far.
func (w *Writer) Dropped() uint64 {
	if w == nil {
		return 0
	}
	return uint64(counterValue(w.dropped))
}

// Reopen closes and reopens the current file (after logrotate moved it). It
// waits for the records queued before it to be written.
func (w *Writer) Reopen() error {
	if w == nil {
		return nil
	}
	return w.control(ctlReq{reopen: true})
}

// SetPath switches to another file (config reload); "" disables writing.
func (w *Writer) SetPath(path string) error {
	if w == nil {
		return nil
	}
	return w.control(ctlReq{path: path})
}

func (w *Writer) control(req ctlReq) error {
	req.reply = make(chan error, 1)
	select {
	case w.ctl <- req:
		return <-req.reply
	case <-w.done:
		return errors.New("cdr: writer closed")
	}
}

// Close writes every queued record, flushes and closes the file. It is
// idempotent; later Writes are dropped and counted. It waits for the disk:
// on a file system that never returns, Close does not return either.
func (w *Writer) Close() error {
	if w == nil {
		return nil
	}
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		close(w.q)
		w.mu.Unlock()
	})
	<-w.done
	return nil
}

// run is the only goroutine touching the file.
func (w *Writer) run() {
	defer close(w.done)
	for {
		select {
		case r, ok := <-w.q:
			if !ok {
				if err := w.closeFile(); err != nil {
					// closeFile counted it; Close returns nil, so log it as write and flush errors are
					w.log.Error("cdr: close", zap.Error(err))
				}
				return
			}
			w.safeWrite(r)
			if len(w.q) == 0 {
				w.flush()
			}
		case req := <-w.ctl:
			// Write what was queued before the request, then switch.
			for n := len(w.q); n > 0; n-- {
				r, ok := <-w.q
				if !ok {
					break
				}
				w.safeWrite(r)
			}
			path := req.path
			if req.reopen {
				path = w.path
			}
			req.reply <- w.switchTo(path)
		}
	}
}

// safeWrite encodes one record, surviving a panic in the encoder or sink.
func (w *Writer) safeWrite(r Record) {
	defer func() {
		if p := recover(); p != nil {
			w.errs.Inc()
			w.log.Error("cdr: write panic", zap.Any("panic", p), zap.String("call_id", r.CallID))
		}
	}()
	if w.enc == nil {
		if w.path != "" { // the file could not be (re)opened: the record is lost
			w.errs.Inc()
		}
		return // disabled
	}
	if err := w.enc.Encode(r); err != nil {
		w.errs.Inc()
		w.log.Error("cdr: write", zap.String("path", w.path), zap.String("call_id", r.CallID), zap.Error(err))
		return
	}
	w.written.Inc()
}

func (w *Writer) flush() {
	if w.bw == nil {
		return
	}
	if err := w.bw.Flush(); err != nil {
		w.errs.Inc()
		w.log.Error("cdr: flush", zap.String("path", w.path), zap.Error(err))
		w.bw.Reset(w.f) // drop the unwritable bytes, keep going
	}
}

func (w *Writer) closeFile() error {
	if w.f == nil {
		return nil
	}
	w.flush()
	err := w.f.Close()
	w.f, w.bw, w.enc = nil, nil, nil
	if err != nil {
		w.errs.Inc()
		return fmt.Errorf("cdr: close %s: %w", w.path, err)
	}
	return nil
}

// switchTo closes the current file and opens path ("" = disabled). On an
// open error the writer is left disabled and the error returned.
func (w *Writer) switchTo(path string) error {
	cerr := w.closeFile()
	w.path = path
	if path == "" {
		return cerr
	}
	f, err := w.open(path)
	if err != nil {
		w.errs.Inc()
		return fmt.Errorf("cdr: open %s: %w", path, err)
	}
	w.f = f
	w.bw = bufio.NewWriterSize(f, 64<<10)
	w.enc = json.NewEncoder(w.bw)
	w.enc.SetEscapeHTML(false)
	return cerr
}

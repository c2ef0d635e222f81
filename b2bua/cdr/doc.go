// Package cdr defines the call detail record esbc writes for every ended
// call and a writer that appends them, one JSON object per line, to a file
// without ever blocking the call that produced it.
//
// # Owns
//
// The Record/Leg schema (the JSON field names are a user-facing contract)
// and the CDR file: open, append, reopen for logrotate, close.
//
// # May import
//
// The standard library, go.uber.org/zap, github.com/prometheus/client_golang.
// No other esbc package.
//
// # API
//
//	type Leg struct {
//		Codec, SRTPSuite string
//		Packets, Lost    uint64
//		JitterMs, RTTMs  float64
//		Remote           string
//	}
//	type Record struct {
//		CallID, Direction, Trunk, From, To string
//		Start, Answer, End                 time.Time // Answer zero = not answered (omitted in JSON)
//		DurationSec                        float64   // End - Answer, 0 when not answered
//		Disposition                        string    // answered|busy|no-answer|failed|cancelled|rejected
//		SIPCode                            int
//		Codec, SRTPSuite                   string
//		LAN, WAN                           Leg
//	}
//	const DefaultQueue = 4096
//	func NewWriter(path string, log *zap.Logger, reg prometheus.Registerer) (*Writer, error) // "" = disabled
//	func (w *Writer) Write(r Record)        // never blocks; drops and counts when the queue is full
//	func (w *Writer) Reopen() error         // reopen the same path (logrotate, SIGHUP)
//	func (w *Writer) SetPath(path string) error // reload with another path; "" disables
//	func (w *Writer) Close() error          // idempotent; writes what is queued, flushes, closes
//	func (w *Writer) Dropped() uint64       // records dropped so far (also esbc_cdr_dropped_total)
//
// A file that cannot be (re)opened leaves the writer disabled until the next
// Reopen/SetPath succeeds; records meanwhile count in esbc_cdr_errors_total.
//
// JSON field names: call_id, direction, trunk, from, to, start, answer, end,
// duration_sec, disposition, sip_code, codec, srtp_suite, lan, wan; legs:
// codec, srtp_suite, packets, lost, jitter_ms, rtt_ms, remote. Times are
// RFC 3339 with nanoseconds, UTC as given.
//
// Metrics (when reg != nil): esbc_cdr_written_total, esbc_cdr_dropped_total
// (queue full or writer closed), esbc_cdr_errors_total (encode/write/open
// failures).
//
// # Concurrency
//
// Write may be called from any goroutine, also after Close (the record is
// then dropped and counted). One goroutine owned by the Writer does all file
// I/O; Reopen, SetPath and Close hand their work to it and wait. A nil
// *Writer is valid and discards everything.
package cdr

package b2bua_test

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// wireLog records, in the order the trunk's TLS connection delivers them,
// the method and Call-ID of every request esbc sends to the trunk.
type wireLog struct {
	mu  sync.Mutex
	buf []byte
	seq []wireReq
}

type wireReq struct{ method, callID, cseq string }

var (
	reReqLine = regexp.MustCompile(`(?m)^([A-Z]+) sips?:\S+ SIP/2\.0\r$`)
	reCallID  = regexp.MustCompile(`(?mi)^(?:Call-ID|i):\s*(\S+)\r$`)
	reCSeq    = regexp.MustCompile(`(?mi)^CSeq:\s*(\d+)`)
)

// filter is a sip.TransportReadFilter: it runs on the connection's read
// loop, before sipgo hands each message to its own goroutine, so its order
// is the wire order.
func (w *wireLog) filter(_ sip.TransportReadProps, data []byte) ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, data...)
	for {
		end := bytes.Index(w.buf, []byte("\r\n\r\n"))
		if end < 0 {
			break
		}
		head := w.buf[:end+2]
		n := 0
		if m := regexp.MustCompile(`(?mi)^(?:Content-Length|l):\s*(\d+)`).FindSubmatch(head); m != nil {
			fmt.Sscan(string(m[1]), &n)
		}
		if len(w.buf) < end+4+n {
			break
		}
		if m := reReqLine.FindSubmatch(head); m != nil {
			r := wireReq{method: string(m[1])}
			if c := reCallID.FindSubmatch(head); c != nil {
				r.callID = string(c[1])
			}
			if c := reCSeq.FindSubmatch(head); c != nil {
				r.cseq = string(c[1])
			}
			w.seq = append(w.seq, r)
		}
		w.buf = w.buf[end+4+n:]
	}
	return data, nil
}

func (w *wireLog) requests() []wireReq {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]wireReq(nil), w.seq...)
}

// TestAckBeforeBye: the PBX ACKs the 2xx and hangs up back to back, many
// calls at once; sipgo handles the ACK and the BYE on goroutines of their
// own, yet the trunk must see esbc's ACK before its BYE on every call.
func TestAckBeforeBye(t *testing.T) {
	var w wireLog
	e := newEnv(t, envOpts{trunkFilter: w.filter})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const workers, perWorker = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perWorker; j++ {
				s, err := e.outbound(ctx, "94155550123") // ACK written here ...
				if err != nil {
					errs <- err
					return
				}
				if err := hangUp(ctx, s); err != nil { // ... and BYE right after
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e.waitEnded(workers * perWorker)
	waitFor(t, func() bool {
		n := 0
		for _, r := range w.requests() {
			if r.method == "BYE" {
				n++
			}
		}
		return n == workers*perWorker
	}, "not every BYE reached the trunk")
	ackAt := map[string]int{}
	bad := 0
	for i, r := range w.requests() {
		switch r.method {
		case "ACK":
			if _, ok := ackAt[r.callID]; !ok {
				ackAt[r.callID] = i
			}
		case "BYE":
			if _, ok := ackAt[r.callID]; !ok {
				bad++
				t.Errorf("call %s: BYE reached the trunk before the ACK", r.callID)
			}
		}
	}
	t.Logf("%d calls, %d with BYE before ACK", workers*perWorker, bad)
}

// TestInDialogBurstInOrder: the PBX sends INFOs (DTMF) back to back
// without waiting for their answers; each is handled on its own goroutine
// in esbc, yet the trunk receives them in the PBX's order and none is
// refused as out of order.
func TestInDialogBurstInOrder(t *testing.T) {
	var w wireLog
	e := newEnv(t, envOpts{trunkFilter: w.filter})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const calls, burst = 10, 10
	for i := 0; i < calls; i++ {
		s, err := e.outbound(ctx, "94155550123")
		if err != nil {
			t.Fatal(err)
		}
		var txs []sip.ClientTransaction
		for d := 0; d < burst; d++ {
			req := sip.NewRequest(sip.INFO, s.InviteResponse.Contact().Address)
			req.Laddr = s.InviteRequest.Laddr
			req.AppendHeader(sip.NewHeader("Content-Type", "application/dtmf-relay"))
			req.SetBody([]byte(fmt.Sprintf("Signal=%d\r\nDuration=160\r\n", d)))
			tx, err := s.TransactionRequest(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			txs = append(txs, tx)
		}
		for d, tx := range txs {
			select {
			case res := <-tx.Responses():
				if res.StatusCode != 200 {
					t.Errorf("call %d INFO %d: %d %s", i, d, res.StatusCode, res.Reason)
				}
			case <-tx.Done():
				t.Errorf("call %d INFO %d: %v", i, d, tx.Err())
			}
			tx.Terminate()
		}
		if err := hangUp(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	e.waitEnded(calls)
	last := map[string]int{}
	infos := 0
	for _, r := range w.requests() {
		if r.method != "INFO" && r.method != "BYE" {
			continue
		}
		var n int
		fmt.Sscan(r.cseq, &n)
		if p, ok := last[r.callID]; ok && n <= p {
			t.Errorf("call %s: %s CSeq %d after CSeq %d", r.callID, r.method, n, p)
		}
		last[r.callID] = n
		if r.method == "INFO" {
			infos++
		}
	}
	if infos != calls*burst {
		t.Errorf("%d INFOs reached the trunk, want %d", infos, calls*burst)
	}
}

// TestInDialogCSeqGap: a peer that skips CSeq numbers (or whose request
// was lost) is not refused: the request after the gap is relayed once its
// missing predecessor has had its chance, and so are the next ones.
func TestInDialogCSeqGap(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "94155550123")
	if err != nil {
		t.Fatal(err)
	}
	seq := s.InviteRequest.CSeq().SeqNo
	for i, jump := range []uint32{5, 1, 3} {
		seq += jump
		// Built by hand: sipgo's dialog would renumber it.
		req := sip.NewRequest(sip.INFO, s.InviteResponse.Contact().Address)
		req.AppendHeader(sip.HeaderClone(s.InviteRequest.From()))
		req.AppendHeader(sip.HeaderClone(s.InviteResponse.To()))
		req.AppendHeader(sip.HeaderClone(s.InviteRequest.CallID()))
		req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: sip.INFO})
		req.AppendHeader(sip.HeaderClone(s.InviteRequest.Contact()))
		req.SetDestination(s.InviteResponse.Source())
		res, err := e.pbx.cli.Do(ctx, req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("INFO %d (CSeq %d): %v %v", i, seq, res, err)
		}
	}
	if n := len(e.trkUAS.requests(sip.INFO)); n != 3 {
		t.Errorf("trunk got %d INFOs, want 3", n)
	}
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(1)
}

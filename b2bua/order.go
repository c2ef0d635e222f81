package b2bua

import (
	"time"

	"github.com/emiago/sipgo/sip"
)

// In-dialog ordering.
//
// sipgo hands every message to a goroutine of its own, so leg A's ACK and
// the BYE the PBX sent right after it, or two INFOs carrying DTMF, can
// reach the handlers in either order. A B2BUA that relays them as they
// come reorders the dialog: the trunk sees BYE before ACK, or a CSeq lower
// than the last one (and answers 500). esbc relays the requests of each
// leg's peer in CSeq order instead (RFC 3261 §12.2.1.1: contiguous,
// increasing by one), and a request from leg A after esbc's 2xx only once
// the ACK of that 2xx has been relayed to leg B.
//
// The state is two plain fields per Leg under Call.mu (relayed, wake); a
// request that is early waits on its own handler goroutine, bounded by
// orderWait, for the one before it. Nothing runs for an idle call, and
// only the relay's start is ordered: a BYE does not wait for the answer to
// a re-INVITE sent before it, only for that re-INVITE to be on the wire.

// orderWait bounds how long a request waits for its predecessor in the
// dialog (a lower CSeq, or leg A's ACK of the 2xx): far longer than
// goroutine scheduling, and no longer than the peer's first retransmission
// of a request lost on the way (T1), after which it goes on without it.
func orderWait() time.Duration { return sip.T1 }

// awaitTurn blocks until the request with CSeq seq from leg l's peer is
// next in its dialog, or orderWait has passed. It returns the function
// that marks the request relayed: call it once the relay is written or the
// request is answered here; it is idempotent, so it may also be deferred.
func (b *B2BUA) awaitTurn(c *Call, l *Leg, seq uint32) (relayed func()) {
	var timer *time.Timer
	expired := func() <-chan time.Time {
		if timer == nil {
			timer = time.NewTimer(orderWait())
		}
		return timer.C
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	late := false
	c.mu.Lock()
	for c.state != StateEnded && l.relayed != 0 && seq > l.relayed+1 && !l.gappy {
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		wake := l.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-expired():
			late = true
		}
		c.mu.Lock()
		if late {
			// A peer that skips CSeq numbers (or a request lost on the
			// way): its dialog is not waited on again.
			l.gappy = true
			break
		}
	}
	answered := l == c.A && c.state == StateAnswered
	c.mu.Unlock()
	if answered && !late {
		// esbc's 2xx is out and leg A's ACK not handled yet: it was sent
		// before this request (a UAC ACKs a 2xx first), so wait for it and
		// for its relay to leg B.
		select {
		case <-c.ackCh:
			c.mu.Lock()
			ended := c.state == StateEnded
			c.mu.Unlock()
			if !ended {
				b.ackB(c)
			}
		case <-expired():
		}
	}
	done := false
	return func() {
		if done {
			return
		}
		done = true
		c.markRelayed(l, seq)
	}
}

// markRelayed records that the request with CSeq seq from leg l's peer is
// relayed (or answered) and lets the next one go.
func (c *Call) markRelayed(l *Leg, seq uint32) {
	c.mu.Lock()
	if seq > l.relayed {
		l.relayed = seq
	}
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
	c.mu.Unlock()
}

// wakeLegs releases every request waiting for its turn (the call ended).
// c.mu is held.
func (c *Call) wakeLegs() {
	for _, l := range []*Leg{c.A, c.B} {
		if l != nil && l.wake != nil {
			close(l.wake)
			l.wake = nil
		}
	}
}

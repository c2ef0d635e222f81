package b2bua

import (
	"time"

	"github.com/esbc/esbc/b2bua/locate"
	"github.com/esbc/esbc/media"
)

// CallSnapshot is the state of one call in plain values: both dialogs, the
// serving trunk target and the media session's state (addresses, SRTP
// keys, ROC). It is what a future standby needs to rebuild the call (HA);
// nothing of a call lives only in a goroutine once it is confirmed.
type CallSnapshot struct {
	ID        string
	Direction string
	Trunk     string
	From, To  string
	State     string
	Start     time.Time
	Answer    time.Time
	A, B      LegSnapshot
	Media     *media.SessionState // nil without a media engine
	// Timers is the RFC 4028 state of leg A (0) and leg B (1): interval,
	// refresher, expiry, refresh method and the SDP a refresh re-sends.
	Timers [2]LegTimer
	// Prack is the RFC 3262 state (reliable 18x on leg A, RSeq PRACKed on
	// leg B).
	Prack PrackState
}

// LegSnapshot is one leg of a CallSnapshot.
type LegSnapshot struct {
	Side   string
	UAS    bool
	Dialog Dialog
	Target locate.Target
}

// Snapshot returns the state of every call in progress.
func (b *B2BUA) Snapshot() []CallSnapshot {
	b.mu.Lock()
	calls := make([]*Call, 0, len(b.calls))
	for _, c := range b.calls {
		calls = append(calls, c)
	}
	b.mu.Unlock()
	out := make([]CallSnapshot, 0, len(calls))
	for _, c := range calls {
		c.mu.Lock()
		cs := CallSnapshot{
			ID: c.ID, Direction: c.Direction, Trunk: c.Trunk, From: c.From, To: c.To,
			State: c.state.String(), Start: c.Start, Answer: c.Answer,
			A: legSnapshot(c.A), B: legSnapshot(c.B),
			Timers: c.st.Legs,
			Prack:  c.prack,
		}
		cs.Prack.ackedA = nil
		if c.prack.RSeqB != nil {
			cs.Prack.RSeqB = make(map[string]uint32, len(c.prack.RSeqB))
			for k, v := range c.prack.RSeqB {
				cs.Prack.RSeqB[k] = v
			}
		}
		for i := range cs.Timers {
			cs.Timers[i].SDP = append([]byte(nil), cs.Timers[i].SDP...)
		}
		ms := c.media
		c.mu.Unlock()
		if ms != nil {
			st := ms.State()
			cs.Media = &st
		}
		out = append(out, cs)
	}
	return out
}

func legSnapshot(l *Leg) LegSnapshot {
	d := l.Dialog
	d.RouteSet = append([]string(nil), d.RouteSet...)
	return LegSnapshot{Side: l.Side, UAS: l.UAS, Dialog: d, Target: l.Target}
}

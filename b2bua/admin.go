package b2bua

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/esbc/esbc/media"
)

// LegInfo is one leg as the admin API and the CDR see it.
type LegInfo struct {
	Side        string          `json:"side"`
	CallID      string          `json:"call_id"`
	LocalTag    string          `json:"local_tag"`
	RemoteTag   string          `json:"remote_tag,omitempty"`
	Transport   string          `json:"transport"`
	Peer        string          `json:"peer"`
	Target      string          `json:"target,omitempty"`
	Media       *media.LegStats `json:"media,omitempty"`
	MediaLocal  string          `json:"media_local,omitempty"`
	MediaRemote string          `json:"media_remote,omitempty"`
}

// CallInfo is a snapshot of one call. Legs[i].CallID is each leg's own
// SIP Call-ID (the key of its per-call capture); a refused INVITE has the
// one leg it came in on. Handed to Deps.OnEnd after the media session is
// closed, so nothing of the call is captured after it.
type CallInfo struct {
	ID          string    `json:"id"`
	Direction   string    `json:"direction"`
	Trunk       string    `json:"trunk"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	State       string    `json:"state"`
	Start       time.Time `json:"start"`
	Answer      time.Time `json:"answer,omitzero"`
	End         time.Time `json:"end,omitzero"`
	Code        int       `json:"sip_code,omitempty"`
	Disposition string    `json:"disposition,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Legs        []LegInfo `json:"legs"`
}

type mediaStats struct {
	st       media.SessionStats
	state    media.SessionState
	hasState bool
}

// info snapshots a call; st may be nil (taken from the live session).
func (c *Call) info(st *mediaStats) CallInfo {
	c.mu.Lock()
	ci := CallInfo{
		ID: c.ID, Direction: c.Direction, Trunk: c.Trunk, From: c.From, To: c.To,
		State: c.state.String(), Start: c.Start, Answer: c.Answer, End: c.End, Code: c.Code, Reason: c.Reason,
	}
	legs := []*Leg{c.A, c.B}
	ms := c.media
	for _, l := range legs {
		li := LegInfo{
			Side: l.Side, CallID: l.Dialog.CallID, LocalTag: l.Dialog.LocalTag, RemoteTag: l.Dialog.RemoteTag,
			Transport: l.Dialog.Transport, Peer: l.Dialog.Destination,
		}
		if l.Target.Addr.IsValid() {
			li.Target = l.Target.String()
		}
		ci.Legs = append(ci.Legs, li)
	}
	c.mu.Unlock()
	if st == nil && ms != nil {
		st = &mediaStats{st: ms.Stats(), state: ms.State(), hasState: true}
	}
	if st != nil && st.hasState {
		for i := range ci.Legs {
			if i < len(st.state.Legs) && len(st.state.Legs[i].Streams) > 0 {
				s0 := st.state.Legs[i].Streams[0]
				ci.Legs[i].MediaLocal = s0.Local.String()
				ci.Legs[i].MediaRemote = s0.Remote.String()
			}
		}
	}
	if st != nil {
		for i := range ci.Legs {
			ls := st.st.Legs[i]
			ci.Legs[i].Media = &ls
		}
	}
	return ci
}

// Calls returns a snapshot of the calls in progress, oldest first.
func (b *B2BUA) Calls() []CallInfo {
	b.mu.Lock()
	calls := make([]*Call, 0, len(b.calls))
	for _, c := range b.calls {
		calls = append(calls, c)
	}
	b.mu.Unlock()
	out := make([]CallInfo, 0, len(calls))
	for _, c := range calls {
		out = append(out, c.info(nil))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// CallsHandler serves GET /api/v1/calls: the calls in progress as JSON.
func (b *B2BUA) CallsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		writeJSON(w, map[string]any{"calls": b.Calls(), "active": b.ActiveCalls(), "draining": b.Draining()})
	})
}

// JSONHandler serves GET with the value fn returns (used for
// /api/v1/registrations with trunk.Set.Registrations).
func JSONHandler(fn func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		writeJSON(w, fn())
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeCDR hands the ended call to Deps.OnEnd (b2bua/cdr through app).
func (b *B2BUA) writeCDR(c *Call, result string, st *mediaStats) {
	if b.deps.OnEnd == nil {
		return
	}
	ci := c.info(st)
	ci.Disposition = result
	b.deps.OnEnd(ci)
}

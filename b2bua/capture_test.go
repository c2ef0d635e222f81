package b2bua_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/b2bua"
	"github.com/esbc/esbc/media"
)

// recEngine wraps the real media engine: it keeps the leg configurations
// each session was created with and whether the session was closed.
type recEngine struct {
	inner b2bua.MediaEngine
	mu    sync.Mutex
	legs  map[string][2]media.LegConfig // by session (call) id
	open  map[string]bool
}

func (r *recEngine) NewSession(id string, a, b media.LegConfig, onInactive func()) (b2bua.MediaSession, error) {
	s, err := r.inner.NewSession(id, a, b, onInactive)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.legs[id] = [2]media.LegConfig{a, b}
	r.open[id] = true
	r.mu.Unlock()
	return &recSession{MediaSession: s, r: r, id: id}, nil
}

func (r *recEngine) isOpen(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open[id]
}

type recSession struct {
	b2bua.MediaSession
	r  *recEngine
	id string
}

func (s *recSession) Close() error {
	err := s.MediaSession.Close()
	s.r.mu.Lock()
	s.r.open[s.id] = false
	s.r.mu.Unlock()
	return err
}

// tapRec is a media.Tap that keeps, per Call-ID, every address its
// packets came from or went to.
type tapRec struct {
	mu    sync.Mutex
	addrs map[string]map[netip.AddrPort]bool
}

func (t *tapRec) WriteRTP(callID string, src, dst netip.AddrPort, _ []byte, _ time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.addrs[callID]
	if m == nil {
		m = map[netip.AddrPort]bool{}
		t.addrs[callID] = m
	}
	m[src], m[dst] = true, true
}

// callIDsOf lists the Call-IDs under which addr was seen.
func (t *tapRec) callIDsOf(addr netip.AddrPort) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id, m := range t.addrs {
		if m[addr] {
			out = append(out, id)
		}
	}
	return out
}

// captureEnv is withMedia with the recording engine, a tap, and a check
// at OnEnd that the call's media session is closed by then.
func captureEnv(t *testing.T) (*env, *recEngine, *tapRec, chan bool) {
	me, eng := newMedia(t)
	tap := &tapRec{addrs: map[string]map[netip.AddrPort]bool{}}
	eng.SetTap(tap)
	rec := &recEngine{inner: me, legs: map[string][2]media.LegConfig{}, open: map[string]bool{}}
	closedAtEnd := make(chan bool, 16)
	e := newEnv(t, envOpts{media: rec, onEnd: func(ci b2bua.CallInfo) { closedAtEnd <- !rec.isOpen(ci.ID) }})
	cfg := *e.cfg
	cfg.LANMedia = media.LegConfig{Name: "lan", BindAddr: netip.MustParseAddr(lanIP), SRTP: media.SRTPOff}
	cfg.WANMedia = media.LegConfig{Name: "wan", BindAddr: netip.MustParseAddr(wanIP), SRTP: media.SRTPMandatory,
		Codecs: []string{"PCMU", "PCMA", "G729", "telephone-event"}}
	if err := e.b.SetConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	return e, rec, tap, closedAtEnd
}

// checkCapture asserts that each media leg carries its dialog's Call-ID
// and that each leg's packets went to the tap under that Call-ID only.
func checkCapture(t *testing.T, e *env, rec *recEngine, tap *tapRec,
	pbxCallID, trunkCallID string, pbxRTP, trunkRTP netip.AddrPort, pbxLeg int) {
	t.Helper()
	calls := e.b.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls", len(calls))
	}
	rec.mu.Lock()
	legs := rec.legs[calls[0].ID]
	rec.mu.Unlock()
	want := [2]string{pbxCallID, trunkCallID}
	if pbxLeg == 1 {
		want = [2]string{trunkCallID, pbxCallID}
	}
	if legs[0].CallID != want[0] || legs[1].CallID != want[1] {
		t.Errorf("media legs' Call-IDs %q %q, want %q %q", legs[0].CallID, legs[1].CallID, want[0], want[1])
	}
	if got := tap.callIDsOf(pbxRTP); len(got) != 1 || got[0] != pbxCallID {
		t.Errorf("PBX's RTP captured under %q, want only %q", got, pbxCallID)
	}
	if got := tap.callIDsOf(trunkRTP); len(got) != 1 || got[0] != trunkCallID {
		t.Errorf("trunk's SRTP captured under %q, want only %q", got, trunkCallID)
	}
}

// checkEnded asserts that OnEnd came after the media session was closed,
// with both legs' Call-IDs and media peers.
func checkEnded(t *testing.T, e *env, closedAtEnd chan bool, pbxCallID, trunkCallID string) {
	t.Helper()
	ci := e.waitEnded(1)[0]
	if !<-closedAtEnd {
		t.Error("OnEnd ran before the media session was closed")
	}
	ids := map[string]string{}
	for _, l := range ci.Legs {
		ids[l.Side] = l.CallID
	}
	if ids["lan"] != pbxCallID || ids["wan"] != trunkCallID {
		t.Errorf("OnEnd legs' Call-IDs %v, want lan %q wan %q", ids, pbxCallID, trunkCallID)
	}
	for _, l := range ci.Legs {
		if l.MediaRemote == "" {
			t.Errorf("ended call's %s leg without its media peer: %+v", l.Side, l)
		}
	}
}

// TestCaptureCallIDsOutbound: PBX → trunk; leg A is the PBX's.
func TestCaptureCallIDsOutbound(t *testing.T) {
	e, rec, tap, closedAtEnd := captureEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mc := setupMediaCall(t, ctx, e)
	exchange(t, mc.pbxRTP, mc.lan, mc.trk, mc.wan)
	pbxID := mc.s.InviteRequest.CallID().Value()
	trkID := e.trkUAS.lastInvite().CallID().Value()
	checkCapture(t, e, rec, tap, pbxID, trkID,
		mc.pbxRTP.LocalAddr().(*net.UDPAddr).AddrPort(), mc.trk.conn.LocalAddr().(*net.UDPAddr).AddrPort(), 0)
	if err := hangUp(ctx, mc.s); err != nil {
		t.Fatal(err)
	}
	checkEnded(t, e, closedAtEnd, pbxID, trkID)
}

// TestCaptureCallIDsInbound: trunk → PBX; the media legs are swapped (leg
// A is the trunk's) and each still carries its own dialog's Call-ID.
func TestCaptureCallIDsInbound(t *testing.T) {
	e, rec, tap, closedAtEnd := captureEnv(t)
	trk := newSRTPPeer(t, trunkIP)
	pbxRTP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(pbxIP)})
	if err != nil {
		t.Fatal(err)
	}
	defer pbxRTP.Close()
	pbxPort := pbxRTP.LocalAddr().(*net.UDPAddr).Port
	e.pbxUAS.setScript(func(u *uas, req *sip.Request, tx sip.ServerTransaction) {
		sess, err := u.dsc.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = sess.Respond(200, "OK", sdpOffer(pbxIP, pbxPort), sip.NewHeader("Content-Type", "application/sdp"))
		u.sessions <- sess // after Respond: the test reads the session's InviteResponse
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri := sip.Uri{Scheme: "sip", User: "+14155550100", Host: wanIP, Port: e.wan.port(), UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}
	s, err := e.trkUAC.dcc.Invite(ctx, uri, trk.sdp("1"), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if trk.answer(t, s.InviteResponse.Body()) == nil {
		t.Fatal("no SDES answer from esbc")
	}
	exchange(t, pbxRTP, sdpAddr(t, e.pbxUAS.lastInvite().Body()), trk, sdpAddr(t, s.InviteResponse.Body()))
	pbxID := e.pbxUAS.lastInvite().CallID().Value()
	trkID := s.InviteRequest.CallID().Value()
	if strings.EqualFold(pbxID, trkID) {
		t.Fatal("one Call-ID on both legs")
	}
	checkCapture(t, e, rec, tap, pbxID, trkID,
		pbxRTP.LocalAddr().(*net.UDPAddr).AddrPort(), trk.conn.LocalAddr().(*net.UDPAddr).AddrPort(), 1)
	if err := hangUp(ctx, s); err != nil {
		t.Fatal(err)
	}
	checkEnded(t, e, closedAtEnd, pbxID, trkID)
}

// TestRefusedCallCarriesCallID: an INVITE refused before any leg B exists
// still hands its own Call-ID to OnEnd (its SIP may have been captured).
func TestRefusedCallCarriesCallID(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.outbound(ctx, "12") // no route: 404
	if statusOf(err) != 404 {
		t.Fatalf("want 404, got %v", err)
	}
	ci := e.waitEnded(1)[0]
	if len(ci.Legs) != 1 || ci.Legs[0].Side != "lan" || ci.Legs[0].CallID != s.InviteRequest.CallID().Value() {
		t.Errorf("refused call's legs: %+v", ci.Legs)
	}
}

package media

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/esbc/esbc/media/sdp"
)

// suitesOf lists an m-line's a=crypto as "tag suite".
func suitesOf(t testing.TB, m *sdp.Media) []string {
	t.Helper()
	var out []string
	for _, v := range m.Attrs("crypto") {
		c, err := sdp.ParseCrypto(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d %s", c.Tag, c.Suite))
	}
	return out
}

func TestDefaultSuitesAreTheImplementedOnes(t *testing.T) {
	for i, name := range DefaultSuites {
		if _, err := keysFrom(sdp.Crypto{Tag: 1, Suite: name, Key: make([]byte, 64)}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if sdp.Suites[i].Name != name {
			t.Errorf("DefaultSuites[%d] = %s, sdp.Suites[%d] = %s", i, name, i, sdp.Suites[i].Name)
		}
	}
}

// TestSuitesOrderTowardLeg: esbc's offer toward a leg carries exactly the
// leg's suites, tags 1..n in its order (the default: all four); the
// peer's choice of the first carries media both ways (pion peers).
func TestSuitesOrderTowardLeg(t *testing.T) {
	for _, tc := range []struct {
		suites []string
		want   []string
	}{
		{[]string{"AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"}, []string{"1 AEAD_AES_128_GCM", "2 AES_CM_128_HMAC_SHA1_80"}},
		{[]string{"AES_CM_128_HMAC_SHA1_32"}, []string{"1 AES_CM_128_HMAC_SHA1_32"}},
		{nil, []string{"1 AES_CM_128_HMAC_SHA1_80", "2 AES_CM_128_HMAC_SHA1_32", "3 AEAD_AES_128_GCM", "4 AEAD_AES_256_GCM"}},
	} {
		t.Run(strings.Join(tc.suites, ","), func(t *testing.T) {
			e, _ := newEngine(t, nil)
			wan := wanLeg
			wan.Suites = tc.suites
			s, err := e.NewSession("o", lanLeg, wan, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			pbx, trk := newPeer(t), newPeer(t)
			out, err := s.Offer(0, offerSDP(pbx.port(), pbx.rtcpPort(), "RTP/AVP"))
			if err != nil {
				t.Fatal(err)
			}
			m := mustParse(t, out).Media[0]
			if got := suitesOf(t, m); m.Proto != "RTP/SAVP" || !slices.Equal(got, tc.want) {
				t.Fatalf("offer toward the trunk has %q (%s), want %q", got, m.Proto, tc.want)
			}
			ours := cryptoByTag(t, m, 1)
			theirs, err := sdp.NewCrypto(1, ours.Suite)
			if err != nil {
				t.Fatal(err)
			}
			trk.dec, trk.enc = ctxFor(t, ours), ctxFor(t, theirs)
			trk.remote = esbcAddr(t, out)
			back, err := s.Answer(1, offerSDP(trk.port(), trk.rtcpPort(), "RTP/SAVP", "a=crypto:"+theirs.String()))
			if err != nil {
				t.Fatal(err)
			}
			pbx.remote = esbcAddr(t, back)
			c := &call{s: s, pbx: pbx, trunk: trk}
			exchange(t, c, "suites")
			if st := s.Stats(); st.Legs[1].Suite != ours.Suite {
				t.Fatalf("suite in use %q, want %q", st.Legs[1].Suite, ours.Suite)
			}
		})
	}
}

// TestSuitesAnswerPicksFromOffer: when the trunk offers (inbound), esbc
// answers with the first suite of the offer that the trunk leg's list
// allows (RFC 4568 §7.1.2), under the offer's tag; media flows with it.
func TestSuitesAnswerPicksFromOffer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		suites []string
		want   string
	}{
		{"list [_80] skips the offer's first (_32)", []string{"AES_CM_128_HMAC_SHA1_80"}, "2 AES_CM_128_HMAC_SHA1_80"},
		{"default takes the offer's first", nil, "1 AES_CM_128_HMAC_SHA1_32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newEngine(t, nil)
			wan := wanLeg
			wan.Suites = tc.suites
			s, err := e.NewSession("i", wan, lanLeg, nil) // inbound: leg a is the trunk
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			trk, pbx := newPeer(t), newPeer(t)
			c32, _ := sdp.NewCrypto(1, "AES_CM_128_HMAC_SHA1_32")
			c80, _ := sdp.NewCrypto(2, "AES_CM_128_HMAC_SHA1_80")
			out, err := s.Offer(0, offerSDP(trk.port(), trk.rtcpPort(), "RTP/SAVP", "a=crypto:"+c32.String(), "a=crypto:"+c80.String()))
			if err != nil {
				t.Fatal(err)
			}
			if m := mustParse(t, out).Media[0]; m.Proto != "RTP/AVP" || len(m.Attrs("crypto")) != 0 {
				t.Fatalf("offer toward the PBX: %s", out)
			}
			pbx.remote = esbcAddr(t, out)
			back, err := s.Answer(1, offerSDP(pbx.port(), pbx.rtcpPort(), "RTP/AVP"))
			if err != nil {
				t.Fatal(err)
			}
			am := mustParse(t, back).Media[0]
			got := suitesOf(t, am)
			if am.Proto != "RTP/SAVP" || len(got) != 1 || got[0] != tc.want {
				t.Fatalf("answer toward the trunk has %q (%s), want [%q]", got, am.Proto, tc.want)
			}
			chosen := c32
			if strings.HasPrefix(tc.want, "2 ") {
				chosen = c80
			}
			trk.enc = ctxFor(t, chosen)
			trk.dec = ctxFor(t, cryptoByTag(t, am, chosen.Tag))
			trk.remote = esbcAddr(t, back)
			// exchange's "pbx" is leg a's peer, its "trunk" leg b's: here
			// the trunk is leg a.
			exchange(t, &call{s: s, pbx: trk, trunk: pbx}, "inbound")
		})
	}
}

// TestSuitesNoneAllowed: an offer whose suites are all outside the leg's
// list is one without usable crypto: 488 (ErrNotAcceptable, no port kept)
// with SRTP mandatory or an RTP/SAVP offer, plain RTP when SRTP is
// optional and the offer is RTP/AVP (best-effort SDES declined), as with
// an offer that has no a=crypto at all.
func TestSuitesNoneAllowed(t *testing.T) {
	only80 := []string{"AES_CM_128_HMAC_SHA1_80"}
	c32, _ := sdp.NewCrypto(1, "AES_CM_128_HMAC_SHA1_32")
	for _, tc := range []struct {
		name   string
		policy SRTPPolicy
		proto  string
		want   string // "" = accepted as plain RTP
	}{
		{"mandatory", SRTPMandatory, "RTP/SAVP", "not in the leg's srtp suites"},
		{"optional, RTP/SAVP", SRTPOptional, "RTP/SAVP", "without a usable a=crypto"},
		{"optional, RTP/AVP", SRTPOptional, "RTP/AVP", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newEngine(t, nil)
			wan := LegConfig{Name: "wan", BindAddr: lo, SRTP: tc.policy, SignalingSecure: true, Suites: only80}
			s, err := e.NewSession("n", wan, lanLeg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			trk, pbx := newPeer(t), newPeer(t)
			out, err := s.Offer(0, offerSDP(trk.port(), 0, tc.proto, "a=crypto:"+c32.String()))
			if tc.want != "" {
				if !errors.Is(err, ErrNotAcceptable) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want ErrNotAcceptable containing %q", err, tc.want)
				}
				if e.pool.used() != 0 {
					t.Fatalf("a refused offer kept %d ports", e.pool.used())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m := mustParse(t, out).Media[0]; len(m.Attrs("crypto")) != 0 {
				t.Fatalf("offer toward the PBX: %s", out)
			}
			back, err := s.Answer(1, offerSDP(pbx.port(), 0, "RTP/AVP"))
			if err != nil {
				t.Fatal(err)
			}
			if am := mustParse(t, back).Media[0]; am.Proto != "RTP/AVP" || len(am.Attrs("crypto")) != 0 {
				t.Fatalf("answer toward the trunk: %s", back)
			}
			if st := s.Stats(); st.Legs[0].Suite != "" {
				t.Fatalf("suite %q on a plain leg", st.Legs[0].Suite)
			}
		})
	}
}

// TestSuitesReofferOutsideList: a trunk re-offer with no allowed suite is
// refused and leaves the call as it was (media keeps flowing).
func TestSuitesReofferOutsideList(t *testing.T) {
	e, _ := newEngine(t, nil)
	wan := wanLeg
	wan.Suites = []string{"AES_CM_128_HMAC_SHA1_80"}
	c := setupCallLegsN(t, e, lanLeg, wan, 1)
	exchange(t, c, "before")
	c32, _ := sdp.NewCrypto(1, "AES_CM_128_HMAC_SHA1_32")
	if _, err := c.s.Offer(1, offerSDP(c.trunk.port(), 0, "RTP/SAVP", "a=crypto:"+c32.String())); !errors.Is(err, ErrNotAcceptable) {
		t.Fatalf("re-offer outside the list: %v", err)
	}
	exchange(t, c, "after")
}

// setupCallLegsN is setupCallLegs for an offer toward leg b of n suites.
func setupCallLegsN(t testing.TB, e *Engine, a, b LegConfig, n int) *call {
	t.Helper()
	s, err := e.NewSession("c1", a, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c := &call{s: s, pbx: newPeer(t), trunk: newPeer(t)}
	out, err := s.Offer(0, offerSDP(c.pbx.port(), c.pbx.rtcpPort(), "RTP/AVP"))
	if err != nil {
		t.Fatal(err)
	}
	m := mustParse(t, out).Media[0]
	if len(m.Attrs("crypto")) != n {
		t.Fatalf("offer toward the trunk: %s", out)
	}
	ours := cryptoByTag(t, m, 1)
	theirs, _ := sdp.NewCrypto(1, ours.Suite)
	c.trunk.dec, c.trunk.enc = ctxFor(t, ours), ctxFor(t, theirs)
	c.trunk.decCrypto, c.trunk.encCrypto = ours, theirs
	c.trunk.remote = esbcAddr(t, out)
	back, err := s.Answer(1, offerSDP(c.trunk.port(), c.trunk.rtcpPort(), "RTP/SAVP", "a=crypto:"+theirs.String()))
	if err != nil {
		t.Fatal(err)
	}
	c.pbx.remote = esbcAddr(t, back)
	return c
}

func TestSuitesConfigRefused(t *testing.T) {
	e, _ := newEngine(t, nil)
	for _, suites := range [][]string{{"AES_256_CM_HMAC_SHA1_80"}, {"AEAD_AES_128_GCM", "AEAD_AES_128_GCM"}} {
		wan := wanLeg
		wan.Suites = suites
		if s, err := e.NewSession("x", lanLeg, wan, nil); err == nil {
			_ = s.Close()
			t.Fatalf("suites %q accepted", suites)
		}
	}
}

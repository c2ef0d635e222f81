package media

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/esbc/esbc/media/sdp"
)

// FuzzOfferAnswer feeds arbitrary SDP to Offer (from either leg) and then
// as the answer to a valid offer: no panic, refusals are ErrNotAcceptable
// (or ErrPortsExhausted), a refused offer keeps no port, and what esbc
// returns parses again.
func FuzzOfferAnswer(f *testing.F) {
	f.Add(offerSDP(30000, 0, "RTP/AVP", "a=rtcp-mux"), byte(0))
	f.Add(offerSDP(30000, 30001, "RTP/SAVP", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"), byte(1))
	f.Add([]byte("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=image 30000 udptl t38\r\nm=video 30002 RTP/AVP 96\r\n"), byte(0))
	f.Add([]byte("v=0\nm=audio 1 RTP/AVP\nc=IN IP6 ::1\n"), byte(1))
	// Parallel fuzz workers are processes: each takes its own slice.
	base := 19000 + os.Getpid()%10*100
	e, err := NewEngine(Config{PortMin: base, PortMax: base + 99, Quarantine: time.Nanosecond}, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	lan := lanLeg
	lan.T38, lan.Video = true, true
	f.Fuzz(func(t *testing.T, body []byte, from byte) {
		s, err := e.NewSession("fuzz", lan, wanLeg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		leg := int(from % 2)
		out, err := s.Offer(leg, body)
		if err != nil {
			if !errors.Is(err, ErrNotAcceptable) && !errors.Is(err, ErrPortsExhausted) {
				t.Fatalf("offer error %v is neither 488 nor 503", err)
			}
			if n := e.pool.used(); n != 0 {
				t.Fatalf("refused offer kept %d ports", n)
			}
		} else if _, err := sdp.Parse(out); err != nil {
			t.Fatalf("esbc's offer does not parse: %v\n%q", err, out)
		}
		// The body as the answer to a valid PBX offer.
		s2, err := e.NewSession("fuzz2", lan, wanLeg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		if _, err := s2.Offer(0, offerSDP(30000, 0, "RTP/AVP")); errors.Is(err, ErrPortsExhausted) {
			return // another process holds the ports: nothing to learn here
		} else if err != nil {
			t.Fatal(err)
		}
		if back, err := s2.Answer(1, body); err == nil {
			if _, err := sdp.Parse(back); err != nil {
				t.Fatalf("esbc's answer does not parse: %v\n%q", err, back)
			}
			if bytes.HasPrefix(back, []byte("a=crypto")) || bytes.Contains(back, []byte("\na=crypto")) {
				t.Fatalf("crypto toward the plain PBX leg:\n%s", back)
			}
		}
	})
}

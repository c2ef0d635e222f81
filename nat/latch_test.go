package nat

import (
	"net/netip"
	"testing"
)

func TestModeFor(t *testing.T) {
	tests := []struct {
		name      string
		farEndNAT bool
		expected  string // "" = none
		signal    string // "" = unknown
		want      LatchMode
	}{
		{"LAN PBX, SDP = SIP address", false, "10.0.0.10:4000", "10.0.0.10", LatchOff},
		{"public trunk", false, "198.51.100.20:30000", "198.51.100.9", LatchOff},
		{"far_end_nat set", true, "198.51.100.20:30000", "198.51.100.9", LatchIP},
		{"private SDP from public SIP source: NAT", false, "192.168.1.20:4000", "198.51.100.9", LatchIP},
		{"private SDP from private SIP source", false, "192.168.1.20:4000", "10.0.0.10", LatchOff},
		{"hold 0.0.0.0 with known source", false, "0.0.0.0:4000", "10.0.0.10", LatchIP},
		{"nothing known", false, "", "", LatchAny},
		{"port 0", false, "10.0.0.10:0", "", LatchAny},
	}
	for _, tc := range tests {
		var exp netip.AddrPort
		if tc.expected != "" {
			exp = ap(tc.expected)
		}
		var sig netip.Addr
		if tc.signal != "" {
			sig = netip.MustParseAddr(tc.signal)
		}
		if got := ModeFor(tc.farEndNAT, exp, sig); got != tc.want {
			t.Errorf("%s: ModeFor = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestLatchCheck(t *testing.T) {
	type pkt struct {
		src  string
		want Verdict
	}
	tests := []struct {
		name     string
		mode     LatchMode
		expected string
		signal   string
		packets  []pkt
		peer     string
	}{
		{"strict: only the SDP address", LatchOff, "10.0.0.10:4000", "10.0.0.10", []pkt{
			{"10.0.0.10:4002", Drop}, {"10.0.0.11:4000", Drop}, {"10.0.0.10:4000", Accept}, {"[::ffff:10.0.0.10]:4000", Accept},
		}, "10.0.0.10:4000"},
		{"strict with 0.0.0.0 drops all", LatchOff, "0.0.0.0:4000", "", []pkt{{"10.0.0.10:4000", Drop}}, ""},
		{"NAT: latch to first from the SIP source IP, then only it", LatchIP, "192.168.1.20:4000", "198.51.100.9", []pkt{
			{"203.0.113.66:4000", Drop}, {"198.51.100.9:61002", Latched}, {"198.51.100.9:61002", Accept},
			{"198.51.100.9:61004", Drop}, {"192.168.1.20:4000", Drop},
		}, "198.51.100.9:61002"},
		{"latch on the SDP IP, other port", LatchIP, "198.51.100.20:30000", "198.51.100.9", []pkt{
			{"198.51.100.20:30010", Latched}, {"198.51.100.9:61002", Drop},
		}, "198.51.100.20:30010"},
		{"any: first packet wins", LatchAny, "", "", []pkt{
			{"203.0.113.66:4000", Latched}, {"203.0.113.66:4000", Accept}, {"203.0.113.67:4000", Drop},
		}, "203.0.113.66:4000"},
		{"IPv6", LatchIP, "[2001:db8::20]:30000", "2001:db8::9", []pkt{
			{"[2001:db8::66]:30000", Drop}, {"[2001:db8::9]:40000", Latched},
		}, "[2001:db8::9]:40000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var exp netip.AddrPort
			if tc.expected != "" {
				exp = ap(tc.expected)
			}
			var sig netip.Addr
			if tc.signal != "" {
				sig = netip.MustParseAddr(tc.signal)
			}
			l := NewLatch(tc.mode, exp, sig)
			for i, p := range tc.packets {
				if got := l.Check(ap(p.src)); got != p.want {
					t.Fatalf("packet %d from %s: %s, want %s", i, p.src, got, p.want)
				}
			}
			var want netip.AddrPort
			if tc.peer != "" {
				want = ap(tc.peer)
			}
			if l.Peer != want {
				t.Errorf("peer %s, want %s", l.Peer, want)
			}
		})
	}
}

func TestLatchReset(t *testing.T) {
	l := NewLatch(LatchIP, ap("198.51.100.20:30000"), netip.MustParseAddr("198.51.100.9"))
	if l.Check(ap("198.51.100.20:30000")) != Latched {
		t.Fatal("no latch")
	}
	// re-INVITE moves the media: re-arm, the old peer is refused after the new one latches.
	l.Reset(ap("198.51.100.21:31000"))
	if l.Peer.IsValid() {
		t.Fatal("Reset kept the peer")
	}
	if l.Check(ap("198.51.100.21:31000")) != Latched || l.Check(ap("198.51.100.20:30000")) != Drop {
		t.Fatalf("after Reset: peer %s", l.Peer)
	}
	strict := NewLatch(LatchOff, ap("10.0.0.10:4000"), netip.Addr{})
	strict.Reset(ap("10.0.0.10:4100"))
	if strict.Check(ap("10.0.0.10:4100")) != Accept || strict.Check(ap("10.0.0.10:4000")) != Drop {
		t.Error("strict Reset")
	}
}

func TestLatchCheckAllocs(t *testing.T) {
	l := NewLatch(LatchIP, ap("198.51.100.20:30000"), netip.MustParseAddr("198.51.100.9"))
	src := ap("198.51.100.9:61002")
	other := ap("203.0.113.66:4000")
	if n := testing.AllocsPerRun(1000, func() { l.Check(src); l.Check(other) }); n != 0 {
		t.Errorf("Check allocates %v per run", n)
	}
}

func BenchmarkLatchCheck(b *testing.B) {
	l := NewLatch(LatchIP, ap("198.51.100.20:30000"), netip.MustParseAddr("198.51.100.9"))
	src := ap("198.51.100.9:61002")
	l.Check(src)
	b.ReportAllocs()
	for b.Loop() {
		l.Check(src)
	}
}

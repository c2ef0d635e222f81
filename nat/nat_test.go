package nat

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

var ap = netip.MustParseAddrPort

func TestParseAdvertiseAndAdvertised(t *testing.T) {
	tests := []struct {
		advertise, local, want string
		bad                    bool
	}{
		{"", "10.0.0.2:5060", "10.0.0.2:5060", false},
		{"203.0.113.5", "10.0.0.2:5061", "203.0.113.5:5061", false},
		{"203.0.113.5:15061", "10.0.0.2:5061", "203.0.113.5:15061", false},
		{"2001:db8::5", "[fd00::2]:5061", "[2001:db8::5]:5061", false},
		{"[2001:db8::5]", "[fd00::2]:5061", "[2001:db8::5]:5061", false},
		{"[2001:db8::5]:7000", "[fd00::2]:5061", "[2001:db8::5]:7000", false},
		{"::ffff:203.0.113.5", "10.0.0.2:5060", "203.0.113.5:5060", false},
		{"sbc.example.com", "10.0.0.2:5060", "10.0.0.2:5060", true},
		{"0.0.0.0", "10.0.0.2:5060", "10.0.0.2:5060", true},
		{"203.0.113.5:0", "10.0.0.2:5060", "10.0.0.2:5060", true},
		{"", "0.0.0.0:5060", "0.0.0.0:5060", false},
	}
	for _, tc := range tests {
		_, _, err := ParseAdvertise(tc.advertise)
		if (err != nil) != tc.bad {
			t.Errorf("ParseAdvertise(%q) err = %v, want bad=%v", tc.advertise, err, tc.bad)
		}
		if got := Advertised(tc.advertise, ap(tc.local)); got != ap(tc.want) {
			t.Errorf("Advertised(%q, %s) = %s, want %s", tc.advertise, tc.local, got, tc.want)
		}
	}
}

func TestIsPrivate(t *testing.T) {
	for addr, want := range map[string]bool{
		"10.1.2.3": true, "172.16.0.1": true, "172.32.0.1": false, "192.168.1.1": true,
		"100.64.0.1": true, "100.127.255.255": true, "100.128.0.1": false,
		"127.0.0.1": true, "169.254.1.1": true, "0.0.0.0": true,
		"203.0.113.5": false, "8.8.8.8": false,
		"::1": true, "fd00::1": true, "fe80::1": true, "2001:db8::1": false, "::ffff:10.0.0.1": true,
	} {
		if got := IsPrivate(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsPrivate(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestReceivedParamsAndResponseAddr(t *testing.T) {
	tests := []struct {
		name      string
		via       Via
		src       string
		received  string
		rport     int
		respHost  string
		respPort  int
		behind    bool // UDP
		behindTCP bool
	}{
		{"same address, no rport", Via{Host: "10.0.0.10", Port: 5060}, "10.0.0.10:5060", "", 0, "10.0.0.10", 5060, false, false},
		{"same address, rport asked", Via{Host: "10.0.0.10", Port: 5060, RPort: true}, "10.0.0.10:5060", "10.0.0.10", 5060, "10.0.0.10", 5060, false, false},
		{"NAT, rport (RFC 3581 example)", Via{Host: "10.1.1.1", Port: 4540, RPort: true}, "192.0.2.1:9988", "192.0.2.1", 9988, "192.0.2.1", 9988, true, true},
		{"NAT, no rport: received, sent-by port", Via{Host: "10.1.1.1", Port: 4540}, "192.0.2.1:9988", "192.0.2.1", 0, "192.0.2.1", 4540, true, true},
		{"host name", Via{Host: "pbx.lan"}, "10.0.0.10:5060", "10.0.0.10", 0, "10.0.0.10", 5060, true, true},
		{"port differs only (UDP NAT)", Via{Host: "198.51.100.7", Port: 5060}, "198.51.100.7:31000", "", 0, "198.51.100.7", 5060, true, false},
		{"default port", Via{Host: "198.51.100.7"}, "198.51.100.7:5060", "", 0, "198.51.100.7", 5060, false, false},
		{"IPv6 bracketed", Via{Host: "[2001:db8::7]", Port: 5062, RPort: true}, "[2001:db8::7]:5062", "2001:db8::7", 5062, "2001:db8::7", 5062, false, false},
		{"v4-mapped source", Via{Host: "10.0.0.10", Port: 5060}, "[::ffff:10.0.0.10]:5060", "", 0, "10.0.0.10", 5060, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := ap(tc.src)
			rec, rp := ReceivedParams(tc.via, src)
			if rec != tc.received || rp != tc.rport {
				t.Errorf("ReceivedParams = %q, %d; want %q, %d", rec, rp, tc.received, tc.rport)
			}
			h, p := ResponseAddr(tc.via, rec, rp)
			if h != tc.respHost || p != tc.respPort {
				t.Errorf("ResponseAddr = %s:%d; want %s:%d", h, p, tc.respHost, tc.respPort)
			}
			if got := BehindNAT(tc.via, src, false); got != tc.behind {
				t.Errorf("BehindNAT(udp) = %v, want %v", got, tc.behind)
			}
			if got := BehindNAT(tc.via, src, true); got != tc.behindTCP {
				t.Errorf("BehindNAT(tcp) = %v, want %v", got, tc.behindTCP)
			}
		})
	}
}

func TestReflexive(t *testing.T) {
	tests := []struct {
		name     string
		sent     Via
		received string
		rport    int
		mapped   string
		natted   bool
	}{
		{"no parameters", Via{Host: "203.0.113.5", Port: 5061}, "", 0, "", false},
		{"same as sent", Via{Host: "203.0.113.5", Port: 5061}, "203.0.113.5", 5061, "203.0.113.5:5061", false},
		{"address mapped", Via{Host: "10.0.0.2", Port: 5061}, "203.0.113.5", 5061, "203.0.113.5:5061", true},
		{"port mapped", Via{Host: "203.0.113.5", Port: 5060}, "203.0.113.5", 40000, "203.0.113.5:40000", true},
		{"received only", Via{Host: "10.0.0.2"}, "203.0.113.5", 0, "203.0.113.5:5060", true},
		{"rport only, differs", Via{Host: "10.0.0.2", Port: 5060}, "", 40000, "", true},
		{"garbage received", Via{Host: "10.0.0.2", Port: 5060}, "x;y", 0, "", false},
	}
	for _, tc := range tests {
		m, n := Reflexive(tc.sent, tc.received, tc.rport)
		want := netip.AddrPort{}
		if tc.mapped != "" {
			want = ap(tc.mapped)
		}
		if m != want || n != tc.natted {
			t.Errorf("%s: Reflexive = %s, %v; want %s, %v", tc.name, m, n, want, tc.natted)
		}
	}
}

func TestContactTargetAndFix(t *testing.T) {
	tests := []struct {
		name     string
		host     string
		port     int
		src      string
		reliable bool
		needsFix bool
		target   string // with fix = needsFix
	}{
		{"plain LAN PBX", "10.0.0.10", 5060, "10.0.0.10:5060", false, false, "10.0.0.10:5060"},
		{"default port", "10.0.0.10", 0, "10.0.0.10:5060", false, false, "10.0.0.10:5060"},
		{"private contact, public source (UDP)", "192.168.1.20", 5060, "198.51.100.9:61000", false, true, "198.51.100.9:61000"},
		{"private contact, public source (TLS)", "192.168.1.20", 5061, "198.51.100.9:61000", true, true, "198.51.100.9:61000"},
		{"same IP other port over UDP", "198.51.100.9", 5060, "198.51.100.9:61000", false, true, "198.51.100.9:61000"},
		{"same IP other port over TCP", "198.51.100.9", 5060, "198.51.100.9:61000", true, false, "198.51.100.9:5060"},
		{"public contact, other public source over TLS", "198.51.100.10", 5061, "198.51.100.9:61000", true, false, "198.51.100.10:5061"},
		{"host name", "pbx.lan", 5060, "10.0.0.10:5060", false, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := ap(tc.src)
			fix := NeedsContactFix(tc.host, tc.port, src, tc.reliable)
			if fix != tc.needsFix {
				t.Fatalf("NeedsContactFix = %v, want %v", fix, tc.needsFix)
			}
			want := netip.AddrPort{}
			if tc.target != "" {
				want = ap(tc.target)
			}
			if got := ContactTarget(tc.host, tc.port, src, fix); got != want {
				t.Errorf("ContactTarget = %s, want %s", got, want)
			}
		})
	}
}

func TestKeepaliveAndParsePort(t *testing.T) {
	for _, tc := range []struct {
		tr     string
		natted bool
		want   time.Duration
	}{{"tls", false, TCPKeepalive}, {"TCP", true, TCPKeepalive}, {"udp", true, UDPKeepalive}, {"udp", false, 0}, {"sctp", true, 0}} {
		if got := Keepalive(tc.tr, tc.natted); got != tc.want {
			t.Errorf("Keepalive(%s, %v) = %v, want %v", tc.tr, tc.natted, got, tc.want)
		}
	}
	for s, want := range map[string]int{"": 0, "5060": 5060, "65535": 65535} {
		if got, err := ParsePort(s); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d, %v", s, got, err)
		}
	}
	for _, s := range []string{"0", "65536", "-1", "50a"} {
		if _, err := ParsePort(s); !errors.Is(err, ErrBadPort) {
			t.Errorf("ParsePort(%q) err = %v", s, err)
		}
	}
}

// FuzzParseAdvertise: a configured advertise value either parses into a
// specific address that Advertised then uses, or is rejected.
func FuzzParseAdvertise(f *testing.F) {
	for _, s := range []string{"", "203.0.113.5", "203.0.113.5:15061", "[2001:db8::5]:7000", "2001:db8::5", "::ffff:1.2.3.4", "0.0.0.0", "host:1", "[::1]:0"} {
		f.Add(s)
	}
	local := ap("10.0.0.2:5061")
	f.Fuzz(func(t *testing.T, s string) {
		a, port, err := ParseAdvertise(s)
		got := Advertised(s, local)
		if err != nil || !a.IsValid() {
			if got != local {
				t.Fatalf("rejected %q but Advertised = %s", s, got)
			}
			return
		}
		if a.IsUnspecified() || a.Is4In6() || got.Addr() != a || (port != 0 && got.Port() != port) || (port == 0 && got.Port() != local.Port()) {
			t.Fatalf("%q: addr %s port %d, Advertised %s", s, a, port, got)
		}
	})
}

//go:build e2e

package test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCaptureTsharkTLSSRTPCall: the built esbc with capture mode "all"
// between a PBX (sipgo, UDP, plain RTP) and a trunk (sipgo, TLS with a
// certificate that carries only a DNS name — as real trunks' do — from a
// CA made here, SRTP/SDES checked with an independent pion/srtp context).
// An outbound call is placed, RTP flows both ways, the PBX hangs up. tshark
// then reads the capture file and must show the SIP ladder of both legs in
// clear text (the WAN leg after TLS decryption, esbc's own writes on the
// TLS connection it dialled included) and the RTP of both legs with the
// plain payloads (the WAN leg after SRTP decryption).
func TestCaptureTsharkTLSSRTPCall(t *testing.T) {
	tshark := e2eRequireTool(t, "tshark")
	e2eLeakCheck(t)
	dir := t.TempDir()
	capDir := filepath.Join(dir, "capture")
	ca := b2buaE2ECA(t, dir)
	ca.leaf(t, dir, "esbc", "127.0.0.1")
	trunkCert := ca.leaf(t, dir, "trunk", "trunk.example.test") // names only: no IP SAN

	k := newB2BUAE2ETLSTrunk(t, trunkCert)
	trunkPort, trk := k.port, k.srtp

	admin, lan, wan := e2eFreePort(t), e2eFreePort(t), e2eFreePort(t)
	pbx := newB2BUAE2EPBX(t)
	rtpLo := e2eFreeMediaPort(t)
	cdrPath := filepath.Join(dir, "cdr.jsonl")
	cfg := b2buaE2ETLSConfig(dir, admin, lan, wan, pbx.addr(), trunkPort, rtpLo, rtpLo+9, cdrPath,
		fmt.Sprintf("capture: { dir: %q, mode: all }\n", capDir))
	p := e2eStartESBC(t, dir, cfg, fmt.Sprintf("127.0.0.1:%d", admin))

	pbxPort := pbx.port()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, pbxRTP := pbx.call(t, ctx, p, lan, "call through esbc (trunk certificate with names only)")
	inv := k.lastInvite()
	lanMedia := b2buaE2ESDPAddr(t, s.InviteResponse.Body())
	wanMedia := b2buaE2ESDPAddr(t, inv.Body())
	b2buaE2EExchange(t, pbxRTP, lanMedia, trk, wanMedia)

	k.hungUp(t, ctx, s)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, _ := os.ReadFile(cdrPath); bytes.Contains(b, []byte(`"disposition":"answered"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CDR for the call\n%s", p.tail(20))
		}
	}
	p.stop(t) // the capture is flushed and closed at exit
	if os.Getenv("ESBC_KEEP_CAPTURE") != "" {
		defer func() { _ = exec.Command("cp", "-r", capDir, os.Getenv("ESBC_KEEP_CAPTURE")).Run() }()
	}

	files, _ := filepath.Glob(filepath.Join(capDir, "*.pcapng"))
	if len(files) != 1 {
		t.Fatalf("capture mode all: want one .pcapng file, got %v", files)
	}
	lanCallID, wanCallID := s.InviteRequest.CallID().Value(), inv.CallID().Value()

	// SIP: every message of both legs, decoded by tshark as SIP.
	decode := []string{}
	for _, port := range []int{lan, wan, trunkPort, pbxPort} {
		decode = append(decode, "-d", "udp.port=="+strconv.Itoa(port)+",sip")
	}
	args := append([]string{"-r", files[0]}, decode...)
	args = append(args, "-Y", "sip", "-T", "fields", "-E", "separator=|",
		"-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport",
		"-e", "sip.Call-ID", "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method")
	out, err := exec.Command(tshark, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -Y sip: %v\n%s", err, out)
	}
	type leg struct {
		name, callID string
		peerPort     int // the PBX's or the trunk's SIP port
	}
	ladder := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) < 8 {
			continue
		}
		what := f[5] // request method
		if what == "" {
			what = f[6] + " " + f[7] // response: code and CSeq method
		}
		ladder[f[4]] = append(ladder[f[4]], f[1]+">"+f[3]+" "+what)
	}
	for _, l := range []leg{{"LAN (PBX, UDP)", lanCallID, pbxPort}, {"WAN (trunk, TLS)", wanCallID, trunkPort}} {
		msgs := ladder[l.callID]
		peer := strconv.Itoa(l.peerPort)
		toPeer, fromPeer := func(w string) bool { return hasMsg(msgs, ">"+peer+" "+w) }, func(w string) bool { return hasMsg(msgs, peer+">", w) }
		var missing []string
		if l.peerPort == pbxPort { // leg A: the PBX calls esbc
			for w, ok := range map[string]bool{"INVITE from the PBX": fromPeer("INVITE"), "200 INVITE to the PBX": toPeer("200 INVITE"),
				"ACK from the PBX": fromPeer("ACK"), "BYE from the PBX": fromPeer("BYE"), "200 BYE to the PBX": toPeer("200 BYE")} {
				if !ok {
					missing = append(missing, w)
				}
			}
		} else { // leg B: esbc calls the trunk over the TLS connection it dialled
			for w, ok := range map[string]bool{"INVITE to the trunk": toPeer("INVITE"), "200 INVITE from the trunk": fromPeer("200 INVITE"),
				"ACK to the trunk": toPeer("ACK"), "BYE to the trunk": toPeer("BYE"), "200 BYE from the trunk": fromPeer("200 BYE")} {
				if !ok {
					missing = append(missing, w)
				}
			}
		}
		if len(missing) > 0 {
			t.Errorf("%s leg (Call-ID %s): tshark shows no %v; its messages: %v\nall SIP:\n%s", l.name, l.callID, missing, msgs, out)
		}
	}

	// RTP: both legs, the WAN one decrypted, with the plain payloads. SIP
	// is not dissected here: the WAN leg's SDP says RTP/SAVP, from which
	// Wireshark would take the (already decrypted) packets for SRTP and
	// show their payload as "SRTP Encrypted Payload" and auth tag.
	args = []string{"-r", files[0], "--disable-protocol", "sip", "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp", "-T", "fields", "-E", "separator=|",
		"-e", "udp.srcport", "-e", "udp.dstport", "-e", "rtp.payload"}
	out, err = exec.Command(tshark, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -Y rtp: %v\n%s", err, out)
	}
	fromPBX, fromTrunk := strings.Repeat("aa", 160), strings.Repeat("55", 160)
	pbxMediaPort := strconv.Itoa(pbxRTP.LocalAddr().(*net.UDPAddr).Port)
	trunkMediaPort := strconv.Itoa(trk.conn.LocalAddr().(*net.UDPAddr).Port)
	lanPort, wanPort := strconv.Itoa(int(lanMedia.Port())), strconv.Itoa(int(wanMedia.Port()))
	want := map[string]bool{ // src>dst payload → seen
		pbxMediaPort + ">" + lanPort + " " + fromPBX:     false, // PBX → esbc
		wanPort + ">" + trunkMediaPort + " " + fromPBX:   false, // esbc → trunk, before encryption
		trunkMediaPort + ">" + wanPort + " " + fromTrunk: false, // trunk → esbc, after decryption
		lanPort + ">" + pbxMediaPort + " " + fromTrunk:   false, // esbc → PBX
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) < 3 {
			continue
		}
		n++
		k := f[0] + ">" + f[1] + " " + strings.ReplaceAll(f[2], ":", "")
		if _, ok := want[k]; ok {
			want[k] = true
		}
	}
	for k, seen := range want {
		if !seen {
			src, rest, _ := strings.Cut(k, " ")
			t.Errorf("no RTP %s with the plain payload %s… in the capture (%d RTP packets decoded)", src, rest[:8], n)
		}
	}
	t.Logf("capture %s: %d SIP messages on the call's two Call-IDs, %d RTP packets", filepath.Base(files[0]),
		len(ladder[lanCallID])+len(ladder[wanCallID]), n)

}

// hasMsg reports whether one of msgs ("srcport>dstport what") contains
// every part.
func hasMsg(msgs []string, parts ...string) bool {
	for _, m := range msgs {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(m, p)
		}
		if ok {
			return true
		}
	}
	return false
}

package media

import (
	"net/netip"
	"reflect"
	"time"
)

// Tap receives every RTP and RTCP packet the relay forwards, in plain form,
// for diagnostic capture. *capture.Capture (media/capture) satisfies it;
// media does not import capture, so the composition root wires the two.
//
// For each relayed packet a Tap sees two calls, one per leg, with that
// leg's real addresses so that a capture shows the ladder on both sides:
//
//   - inbound: src is the peer, dst esbc's socket on that leg, payload the
//     packet as received, after SRTP/SRTCP decryption on an SRTP leg.
//     Packets dropped before that point (wrong source, failed
//     authentication, malformed) are not shown; a packet received with no
//     peer to forward it to is.
//   - outbound: src is esbc's socket on the other leg, dst the address the
//     packet is sent to, payload the packet as it is about to be sent,
//     before SRTP/SRTCP encryption (after transcoding and sequence
//     mapping).
//
// callID is the leg's LegConfig.CallID (the session id when empty); t is
// the arrival time of the packet (both calls get the same). T.38 UDPTL
// datagrams are passed the same way.
//
// WriteRTP is called on the packet loops, concurrently, per packet: it must
// not block, must not modify payload, and must copy payload if it keeps
// it (the buffer is reused for the next packet as soon as it returns).
type Tap interface {
	WriteRTP(callID string, src, dst netip.AddrPort, payload []byte, t time.Time)
}

// tapRef boxes a Tap so that the packet path reads it with one atomic load.
type tapRef struct{ t Tap }

// SetTap installs the tap every relayed packet is shown to; nil (or a nil
// pointer) removes it. Hot: packets read after the call see the new tap.
// Without a tap the packet path pays one atomic load and allocates nothing.
// A tap replaced here may still receive a few packets from loops that
// loaded it just before: close it after SetTap returns and make its
// WriteRTP safe after Close (capture's is).
func (e *Engine) SetTap(t Tap) {
	if t == nil || isNilPointer(t) {
		e.tap.Store(nil)
		return
	}
	e.tap.Store(&tapRef{t: t})
}

// isNilPointer catches a typed nil (a nil *capture.Capture in an
// interface): it would be called per packet for nothing.
func isNilPointer(t Tap) bool {
	v := reflect.ValueOf(t)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// Package sdp is a tolerant, line-based SDP editor for the media anchor and
// the SDES (RFC 4568) a=crypto parser/generator.
//
// The editor (Parse, Session, Media) splits a body into lines and only
// rewrites the lines esbc must own: o=, c=, the m= port/proto/format list,
// a=rtcp, a=crypto, a=rtcp-mux, direction attributes and the codec lines
// (a=rtpmap/a=fmtp/a=rtcp-fb of removed payload types). Every other line is
// kept byte for byte and in its place, so unknown attributes, T.38
// (m=image … udptl t38) and vendor extensions survive, which pion/sdp (it
// refuses T.38 and re-serialises in canonical order) does not allow.
// Line endings follow the body's first line (CRLF when unknown).
//
// pion/sdp is not used: every field esbc reads (c=, m=, rtpmap, fmtp,
// crypto, rtcp, rtcp-mux, direction) is read by this editor, and pion/sdp
// refuses exactly the bodies (T.38, vendor lines, odd order) where a
// fallback would be needed, so the fallback would be the main path.
//
// The package is pure: it imports only the standard library, holds no
// global state and does no I/O except reading crypto/rand in NewCrypto.
// A Session is not safe for concurrent mutation.
//
// RFCs: 4566/8866 (SDP), 3264 (offer/answer, direction), 3605 (a=rtcp),
// 5761 (a=rtcp-mux), 4568 (SDES a=crypto), 7714 (AEAD suites for SDES),
// 6188 (AES-256 CM suites).
package sdp

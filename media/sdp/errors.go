package sdp

import "errors"

// Errors returned by Parse and ParseCrypto; wrapped with detail.
var (
	// ErrMalformed is an SDP body or attribute that cannot be understood.
	ErrMalformed = errors.New("sdp: malformed")
	// ErrUnknownSuite is a crypto suite esbc does not implement.
	ErrUnknownSuite = errors.New("sdp: unknown crypto suite")
	// ErrUnsupportedKDR is a non-zero key derivation rate (RFC 4568 6.3.1)
	// which the SRTP library cannot do.
	ErrUnsupportedKDR = errors.New("sdp: unsupported key derivation rate")
	// ErrUnsupportedParam is an SDES session parameter esbc cannot honour
	// (UNENCRYPTED_SRTP, UNAUTHENTICATED_SRTP, FEC_ORDER…).
	ErrUnsupportedParam = errors.New("sdp: unsupported crypto session parameter")
)

package route

import "errors"

// Sentinel errors the B2BUA maps to SIP status codes. Errors returned by a
// Table wrap one of them and name the number.
var (
	// ErrNoRoute means no route matches the number (404 Not Found).
	ErrNoRoute = errors.New("no route")
	// ErrInvalidNumber means the number is not a valid number (484 Address Incomplete).
	ErrInvalidNumber = errors.New("invalid number")
	// ErrEmergencyBlocked means an emergency or special-service number has no
	// route to an emergency-capable trunk (403 Forbidden; log at warn).
	ErrEmergencyBlocked = errors.New("emergency number blocked")
)

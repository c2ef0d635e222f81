package b2bua

import (
	"context"
	"errors"

	"github.com/emiago/sipgo/sip"

	"github.com/esbc/esbc/b2bua/route"
	"github.com/esbc/esbc/media"
)

// ErrBadRequest is an INVITE without the headers a dialog needs.
var ErrBadRequest = errors.New("bad request")

// responseError carries a failure response from leg B.
type responseError struct{ res *sip.Response }

func (e *responseError) Error() string { return "leg B answered " + e.res.StartLine() }

// Status is the one place an error becomes a SIP status code and reason.
func Status(err error) (int, string) {
	var re *responseError
	switch {
	case err == nil:
		return 200, "OK"
	case errors.As(err, &re):
		return MapResponse(re.res.StatusCode), re.res.Reason
	case errors.Is(err, ErrBadRequest):
		return 400, "Bad Request"
	case errors.Is(err, ErrNoRoute), errors.Is(err, route.ErrNoRoute):
		return 404, "Not Found"
	case errors.Is(err, ErrInvalidNumber), errors.Is(err, route.ErrInvalidNumber):
		return 484, "Address Incomplete"
	case errors.Is(err, ErrEmergencyBlocked), errors.Is(err, route.ErrEmergencyBlocked), errors.Is(err, ErrNotTrunk):
		return 403, "Forbidden"
	case errors.Is(err, ErrChannels), errors.Is(err, ErrDraining), errors.Is(err, media.ErrPortsExhausted),
		errors.Is(err, errShutdown):
		return 503, "Service Unavailable"
	case errors.Is(err, ErrIntervalTooSmall):
		return 422, "Session Interval Too Small"
	case errors.Is(err, ErrBadExtension):
		return 420, "Bad Extension"
	case errors.Is(err, media.ErrNotAcceptable):
		return 488, "Not Acceptable Here"
	case errors.Is(err, errCancelled):
		return 487, "Request Terminated"
	case errors.Is(err, errNoPrack):
		return 500, "Server Internal Error" // RFC 3262 §3: no PRACK in 64*T1
	case errors.Is(err, errRemoteBye):
		return 480, "Temporarily Unavailable"
	case errors.Is(err, ErrNoTargets):
		// No trunk server reachable: 503 lets the PBX try another route.
		return 503, "Service Unavailable"
	case errors.Is(err, sip.ErrTransactionTimeout), errors.Is(err, context.DeadlineExceeded):
		return 408, "Request Timeout"
	case errors.Is(err, sip.ErrTransactionTransport):
		return 503, "Service Unavailable"
	}
	return 500, "Server Internal Error"
}

// MapResponse maps a failure status from one leg to the one sent on the
// other: codes that only make sense hop by hop are not passed on.
func MapResponse(code int) int {
	switch {
	case code == 401 || code == 407:
		return 403 // the trunk's challenge was not met; not the PBX's to answer
	case code == 408:
		return 408
	case code == 481 || code == 482 || code == 483:
		return 500
	case code == 503:
		return 503
	case code >= 300 && code < 400:
		return 480 // redirects are not followed toward the other side
	}
	return code
}

// resultFor is the metric/CDR disposition of a final status.
func resultFor(code int, cancelled bool) string {
	switch {
	case cancelled || code == 487:
		return "cancelled"
	case code >= 200 && code < 300:
		return "answered"
	case code == 486 || code == 600:
		return "busy"
	case code == 408 || code == 480:
		return "no-answer"
	case code == 403 || code == 404 || code == 484 || code == 488 || code == 405 || code == 400 || code == 420 || code == 422:
		return "rejected"
	}
	return "failed"
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 484:
		return "Address Incomplete"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 420:
		return "Bad Extension"
	case 422:
		return "Session Interval Too Small"
	case 488:
		return "Not Acceptable Here"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	}
	if code >= 600 {
		return "Global Failure"
	}
	return "Error"
}

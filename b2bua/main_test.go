package b2bua_test

import (
	"os"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Shorter SIP timers for the whole test binary (set once, before any
	// test runs): Timer B/F = 64*T1 = 6.4 s.
	sip.SetTimers(100*time.Millisecond, 400*time.Millisecond, 500*time.Millisecond)
	// No sipgo goroutine is ignored: the UDP socket sipgo v1.7.2 opened for
	// the ACK of a refused INVITE handled during UserAgent.Close (about 1
	// run in 4 of TestRoutingFailures) no longer appears, since the INVITE
	// handler reads that ACK itself before Close can return
	// (awaitNon2xxAck).
	goleak.VerifyTestMain(m)
	os.Exit(0)
}

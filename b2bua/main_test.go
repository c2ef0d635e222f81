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
	goleak.VerifyTestMain(m)
	os.Exit(0)
}

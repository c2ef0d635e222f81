package b2bua_test

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestMemoryPerCall holds N concurrent calls and reports the heap growth
// per call (ESBC_MEMTEST=1; a figure for BENCHMARKS.md, never asserted).
// The PBX and trunk UAs live in the same process, so the figure is an
// upper bound of esbc's own share.
func TestMemoryPerCall(t *testing.T) {
	if os.Getenv("ESBC_MEMTEST") != "1" {
		t.Skip("set ESBC_MEMTEST=1 to measure memory per call")
	}
	for _, withMediaEngine := range []bool{false, true} {
		name := "signalling"
		if withMediaEngine {
			name = "media"
		}
		t.Run(name, func(t *testing.T) {
			var e *env
			if withMediaEngine {
				e = withMedia(t, envOpts{})
			} else {
				e = newEnv(t, envOpts{})
			}
			n := 1000
			if withMediaEngine {
				n = 90 // the test media range has 400 ports: 4 per call (2 legs, RTP+RTCP)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			g0 := runtime.NumGoroutine()
			var calls []interface{ Context() context.Context }
			for i := 0; i < n; i++ {
				s, err := e.outbound(ctx, "94155550123")
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				calls = append(calls, s)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			t.Logf("%s: %d concurrent calls: heap +%.1f KiB per call (in-process PBX and trunk included), goroutines +%.1f per call",
				name, n, float64(after.HeapAlloc-before.HeapAlloc)/1024/float64(n), float64(runtime.NumGoroutine()-g0)/float64(n))
			if got := e.b.ActiveCalls(); got != n {
				t.Errorf("%d calls active, want %d", got, n)
			}
			_ = calls
		})
	}
}

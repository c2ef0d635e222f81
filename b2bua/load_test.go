package b2bua_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestThousandCalls runs 1,000 outbound calls (PBX UDP → esbc → trunk TLS,
// media anchored) with a bounded concurrency and checks that every call
// ended and nothing is left; TestMain's goleak then checks that no
// goroutine outlives the B2BUA. The calls/s figure is logged, never
// asserted.
func TestThousandCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
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
			const calls, workers = 1000, 16
			var failed atomic.Int32
			var next atomic.Int32
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= calls && ctx.Err() == nil {
						s, err := e.outbound(ctx, "94155550123")
						if err != nil {
							failed.Add(1)
							continue
						}
						if err := hangUp(ctx, s); err != nil {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			t.Logf("%s: %d calls in %s: %.0f calls/s (%d workers, -race=%v), %d failed",
				name, calls, elapsed.Round(time.Millisecond), float64(calls)/elapsed.Seconds(), workers, raceEnabled, failed.Load())
			if f := failed.Load(); f != 0 {
				t.Errorf("%d calls failed", f)
			}
			e.waitEnded(calls)
			waitFor(t, func() bool { return e.b.ActiveCalls() == 0 }, "calls left after the run")
			tr, _ := e.set.Get("itsp")
			if n := tr.Active(); n != 0 {
				t.Errorf("%d trunk channels still taken", n)
			}
		})
	}
}

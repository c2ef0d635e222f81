package locate

import (
	"sort"

	"github.com/miekg/dns"
)

// orderSRV returns rrs in RFC 2782 order: ascending priority and, within one
// priority, a weighted random permutation. intn(n) must return a uniform
// integer in [0, n). The input slice is not modified.
//
// RFC 2782 ("Usage rules"): place the zero-weight records first, draw a
// number in [0, sum of weights], pick the first record whose running sum is
// >= that number, remove it, repeat.
func orderSRV(rrs []*dns.SRV, intn func(n int) int) []*dns.SRV {
	out := make([]*dns.SRV, len(rrs))
	copy(out, rrs)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Priority < out[j].Priority })
	for lo := 0; lo < len(out); {
		hi := lo + 1
		for hi < len(out) && out[hi].Priority == out[lo].Priority {
			hi++
		}
		weightedShuffle(out[lo:hi], intn)
		lo = hi
	}
	return out
}

// weightedShuffle orders one priority group in place.
func weightedShuffle(g []*dns.SRV, intn func(n int) int) {
	// Zero weights first, otherwise keep the order the server gave.
	sort.SliceStable(g, func(i, j int) bool { return g[i].Weight == 0 && g[j].Weight != 0 })
	for i := 0; i < len(g)-1; i++ {
		sum := 0
		for _, rr := range g[i:] {
			sum += int(rr.Weight)
		}
		pick := intn(sum + 1)
		run := 0
		chosen := i
		for j := i; j < len(g); j++ {
			run += int(g[j].Weight)
			if run >= pick {
				chosen = j
				break
			}
		}
		// Move the chosen record to position i, keeping the rest in order
		// (so zero weights stay at the front of the remainder).
		rr := g[chosen]
		copy(g[i+1:chosen+1], g[i:chosen])
		g[i] = rr
	}
}

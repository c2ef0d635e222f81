package locate

import (
	"context"
	"testing"
)

// BenchmarkLookupCached is the per-call cost of target selection when the
// answers are cached (the common case: one Lookup per outgoing INVITE).
func BenchmarkLookupCached(b *testing.B) {
	s := startDNS(b, "127.0.0.1", trunkZone...)
	r := NewResolver(Config{Servers: []string{s.addr}}, nil, nil)
	defer r.Close()
	ctx := context.Background()
	if _, err := r.Lookup(ctx, "trunk.test", "tls", nil); err != nil {
		b.Fatal(err)
	}
	h := NewHealth(nil, nil)
	b.ReportAllocs()
	for b.Loop() {
		ts, err := r.Lookup(ctx, "trunk.test", "tls", nil)
		if err != nil || len(ts) != 3 {
			b.Fatal(err)
		}
		_ = h.Order("skype", ts)
	}
}

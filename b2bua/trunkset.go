package b2bua

import (
	"net/netip"

	"github.com/esbc/esbc/b2bua/trunk"
)

// TrunkSet adapts a *trunk.Set to Trunks.
func TrunkSet(s *trunk.Set) Trunks { return trunkSet{s} }

type trunkSet struct{ s *trunk.Set }

func (t trunkSet) Get(name string) (Trunk, bool) {
	x, ok := t.s.Get(name)
	if !ok {
		return nil, false
	}
	return x, true
}

func (t trunkSet) ByAddr(addr netip.Addr) (Trunk, bool) {
	x, ok := t.s.ByAddr(addr)
	if !ok {
		return nil, false
	}
	return x, true
}

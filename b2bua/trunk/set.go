package trunk

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync"
)

// Set holds all trunks by name and applies configuration reloads to them.
type Set struct {
	deps   Deps
	ctx    context.Context // parent of the trunks' loops
	cancel context.CancelFunc

	applyMu sync.Mutex // serialises Apply and Close

	mu     sync.RWMutex
	trunks map[string]*Trunk // guarded by mu
	closed bool              // guarded by mu
}

// NewSet returns an empty Set whose trunks will use deps.
func NewSet(deps Deps) *Set {
	ctx, cancel := context.WithCancel(context.Background())
	return &Set{deps: deps, ctx: ctx, cancel: cancel, trunks: map[string]*Trunk{}}
}

// Apply makes the running trunks match cfgs. Every config is checked first;
// on any error nothing changes. Then: a trunk whose config is unchanged keeps
// running untouched; a change of Channels only is applied in place; any other
// change replaces the trunk (the old one unregisters within ctx, the new one
// registers; calls up keep counting against the channels limit); trunks no
// longer listed are closed and forgotten in Health.
func (s *Set) Apply(ctx context.Context, cfgs []Config) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return errors.New("trunk set: closed")
	}

	next := make(map[string]*Trunk, len(cfgs))
	var errs []error
	for _, c := range cfgs {
		if _, dup := next[c.Name]; dup {
			errs = append(errs, fmt.Errorf("trunk %q: duplicate name", c.Name))
			continue
		}
		s.mu.RLock()
		old := s.trunks[c.Name]
		s.mu.RUnlock()
		nt, err := New(c, s.deps)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch {
		case old != nil && old.cfg.Equal(nt.cfg):
			next[c.Name] = old
		case old != nil && old.cfg.equalButChannels(nt.cfg):
			old.ch.limit.Store(int64(nt.cfg.Channels))
			next[c.Name] = old
		default:
			if old != nil {
				nt.ch = old.ch
				nt.ch.limit.Store(int64(nt.cfg.Channels))
			}
			next[c.Name] = nt
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("trunk set: %w", err)
	}

	s.mu.Lock()
	prev := s.trunks
	s.trunks = next
	s.mu.Unlock()

	var closeErrs []error
	for name, old := range prev {
		if next[name] == old {
			continue
		}
		if err := old.Close(ctx); err != nil {
			closeErrs = append(closeErrs, err)
		}
		if _, kept := next[name]; !kept {
			old.deps.Health.Forget(name)
		}
	}
	if s.deps.AddrsChanged != nil && !maps.EqualFunc(prev, next, func(a, b *Trunk) bool { return a == b }) {
		s.deps.AddrsChanged() // trunks (and so addresses) were removed or replaced
	}
	for name, t := range next {
		if prev[name] != t {
			t.Start(s.ctx)
		}
	}
	// Unregister failures of replaced trunks do not undo the reload.
	return errors.Join(closeErrs...)
}

// Get returns the trunk called name.
func (s *Set) Get(name string) (*Trunk, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.trunks[name]
	return t, ok
}

// All returns the trunks sorted by name.
func (s *Set) All() []*Trunk {
	s.mu.RLock()
	out := make([]*Trunk, 0, len(s.trunks))
	for _, t := range s.trunks {
		out = append(out, t)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].cfg.Name < out[j].cfg.Name })
	return out
}

// ByAddr returns the trunk one of whose servers has address addr (the
// first by name when several share it).
func (s *Set) ByAddr(addr netip.Addr) (*Trunk, bool) {
	for _, t := range s.All() {
		if t.Owns(addr) {
			return t, true
		}
	}
	return nil, false
}

// Addrs returns the server addresses of all trunks, sorted, without duplicates.
func (s *Set) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, t := range s.All() {
		out = append(out, t.Addrs()...)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

// Registrations returns the registration state of every trunk, by name.
func (s *Set) Registrations() []RegState {
	all := s.All()
	out := make([]RegState, 0, len(all))
	for _, t := range all {
		out = append(out, t.Registration())
	}
	return out
}

// Close closes every trunk (unregistering within ctx) and the Set. It is
// idempotent.
func (s *Set) Close(ctx context.Context) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	trunks := s.trunks
	s.mu.Unlock()

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, t := range trunks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := t.Close(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.cancel()
	return errors.Join(errs...)
}

package acl

import (
	"encoding/binary"
	"net/netip"
	"sync"
)

// shardCount spreads the per-source table over independent locks so that
// two sockets' read loops rarely contend.
const shardCount = 64

// evictSample is how many slots eviction looks at to pick a victim
// (sampled LRU, as Redis does): O(1) per insert whatever the flood.
const evictSample = 8

// entry is the state kept for one source address. All times are
// nanoseconds since the Unix epoch.
type entry struct {
	addr   netip.Addr
	seen   int64 // last message
	tokens float64
	refill int64 // last token refill

	excess      int32 // rate-limited messages since excessStart
	excessStart int64
	authFails   int32 // failed authentications since authStart
	authStart   int64

	conns       int32 // open TCP/TLS connections
	strikes     int32 // bans so far (doubles the next one)
	bannedUntil int64 // 0: not banned
	banReason   banReason
	bannedAt    int64
}

type banReason uint8

const (
	banRate banReason = iota
	banAuth
	banManual
)

func (r banReason) String() string {
	switch r {
	case banAuth:
		return "auth_failure"
	case banManual:
		return "manual"
	}
	return "rate_limit"
}

// shard is a fixed-capacity slice of entries indexed by a map. mu guards
// every field and every entry in slots.
type shard struct {
	mu    sync.Mutex
	idx   map[netip.Addr]int32
	slots []entry
	n     int // slots in use
	hand  int // next eviction sample start
}

// table bounds memory under a spoofed-source flood: its capacity is fixed
// at construction and a full shard evicts the least recently seen of a
// few sampled unbanned entries.
type table struct {
	shards [shardCount]shard
}

func newTable(size int) *table {
	per := max(size/shardCount, evictSample)
	t := &table{}
	for i := range t.shards {
		t.shards[i].idx = make(map[netip.Addr]int32, per)
		t.shards[i].slots = make([]entry, per)
	}
	return t
}

func (t *table) capacity() int { return len(t.shards) * len(t.shards[0].slots) }

func (t *table) shard(a netip.Addr) *shard {
	b := a.As16()
	h := binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])*0x9E3779B97F4A7C15
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 32
	return &t.shards[h%shardCount]
}

// get returns a's entry, creating it (and maybe evicting another) when
// create is set. The caller holds s.mu. evicted reports an eviction.
func (s *shard) get(a netip.Addr, now int64, create bool) (e *entry, evicted bool) {
	if i, ok := s.idx[a]; ok {
		return &s.slots[i], false
	}
	if !create {
		return nil, false
	}
	var i int
	if s.n < len(s.slots) {
		i = s.n
		s.n++
	} else {
		i = s.victim(now)
		delete(s.idx, s.slots[i].addr)
		evicted = true
	}
	s.slots[i] = entry{addr: a, seen: now}
	s.idx[a] = int32(i)
	return &s.slots[i], evicted
}

// victim picks the slot to reuse: the least recently seen entry without an
// active ban or open connections among evictSample slots; failing that,
// the one whose ban ends first.
func (s *shard) victim(now int64) int {
	best, bestBanned := -1, -1
	for k := 0; k < evictSample; k++ {
		i := (s.hand + k) % len(s.slots)
		e := &s.slots[i]
		if e.bannedUntil > now || e.conns > 0 {
			if bestBanned < 0 || e.bannedUntil < s.slots[bestBanned].bannedUntil {
				bestBanned = i
			}
			continue
		}
		if best < 0 || e.seen < s.slots[best].seen {
			best = i
		}
	}
	s.hand = (s.hand + evictSample) % len(s.slots)
	if best < 0 {
		best = bestBanned
	}
	return best
}

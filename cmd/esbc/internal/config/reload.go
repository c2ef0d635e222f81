package config

import (
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// RestartRequired lists the keys whose change from prev to next takes
// effect only after a restart (sockets and process-wide settings).
func RestartRequired(prev, next *Snapshot) []string {
	var keys []string
	if !slices.Equal(prev.LANListen, next.LANListen) {
		keys = append(keys, "lan.listen")
	}
	if !slices.Equal(prev.WANListen, next.WANListen) {
		keys = append(keys, "wan.listen")
	}
	if prev.RTPPortMin != next.RTPPortMin || prev.RTPPortMax != next.RTPPortMax {
		keys = append(keys, "media.rtp_ports")
	}
	if prev.Admin.Listen != next.Admin.Listen {
		keys = append(keys, "admin.listen")
	}
	if prev.Log.Format != next.Log.Format {
		keys = append(keys, "log.format")
	}
	if prev.Media.DSCP.SIP != next.Media.DSCP.SIP {
		keys = append(keys, "media.dscp.sip")
	}
	return keys
}

// Store holds the snapshot in force and notifies subscribers of swaps.
type Store struct {
	cur atomic.Pointer[Snapshot]
	gen atomic.Uint64

	mu   sync.Mutex // guards subs, serialises Swap's notifications
	subs []*sub
}

type sub struct{ fn func(prev, next *Snapshot) }

// NewStore returns a store holding first.
func NewStore(first *Snapshot) *Store {
	st := &Store{}
	first.Generation = st.gen.Add(1)
	st.cur.Store(first)
	return st
}

// Current returns the snapshot in force (never nil).
func (st *Store) Current() *Snapshot { return st.cur.Load() }

// Swap installs next and calls every subscriber with (prev, next), one
// at a time, in subscription order. next must not be shared yet: Swap
// sets its Generation.
func (st *Store) Swap(next *Snapshot) (prev *Snapshot) {
	st.mu.Lock()
	defer st.mu.Unlock()
	next.Generation = st.gen.Add(1)
	if next.LoadedAt.IsZero() {
		next.LoadedAt = time.Now()
	}
	prev = st.cur.Swap(next)
	for _, s := range slices.Clone(st.subs) {
		s.fn(prev, next)
	}
	return prev
}

// Subscribe calls fn after every Swap; the returned func unsubscribes.
func (st *Store) Subscribe(fn func(prev, next *Snapshot)) (unsubscribe func()) {
	s := &sub{fn: fn}
	st.mu.Lock()
	st.subs = append(st.subs, s)
	st.mu.Unlock()
	return func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.subs = slices.DeleteFunc(st.subs, func(x *sub) bool { return x == s })
	}
}

// Redacted returns the configuration as a map keyed like the YAML file,
// durations in Go syntax, with passwords replaced by "<redacted>".
func (s *Snapshot) Redacted() map[string]any {
	m, _ := toMap(reflect.ValueOf(s.Config)).(map[string]any)
	if trunks, ok := m["trunks"].([]any); ok {
		for _, t := range trunks {
			auth := t.(map[string]any)["auth"].(map[string]any)
			if auth["password"] != "" {
				auth["password"] = "<redacted>"
			}
		}
	}
	return m
}

func toMap(v reflect.Value) any {
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		return time.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.Struct:
		m := map[string]any{}
		for i := 0; i < v.NumField(); i++ {
			m[v.Type().Field(i).Tag.Get("mapstructure")] = toMap(v.Field(i))
		}
		return m
	case reflect.Slice:
		l := make([]any, v.Len())
		for i := range l {
			l[i] = toMap(v.Index(i))
		}
		return l
	}
	return v.Interface()
}

package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a configuration, tied to the key it is about
// (a full path such as "trunks[0].srtp").
type Error struct {
	Key string
	Msg string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return e.Msg
	}
	return e.Key + ": " + e.Msg
}

// Errors is every problem found in one configuration, in key order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es *Errors) add(key, format string, args ...any) {
	*es = append(*es, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool { return keyLess(es[i].Key, es[j].Key) })
	return es
}

// keyLess keeps file order for siblings of a list ("x[2]" < "x[10]").
func keyLess(a, b string) bool {
	for a != "" && b != "" {
		ai, bi := strings.IndexByte(a, '['), strings.IndexByte(b, '[')
		if ai < 0 || bi < 0 || a[:ai] != b[:bi] {
			return a < b
		}
		a, b = a[ai+1:], b[bi+1:]
		var na, nb int
		// An index that is not a number reads as 0: the rest of the key decides.
		_, _ = fmt.Sscanf(a, "%d", &na)
		_, _ = fmt.Sscanf(b, "%d", &nb)
		if na != nb {
			return na < nb
		}
		a, b = a[strings.IndexByte(a, ']')+1:], b[strings.IndexByte(b, ']')+1:]
	}
	return a < b
}

package config

import (
	"os"
	"testing"
)

// FuzzParse: any input either compiles to a snapshot or returns Errors;
// it never panics.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/full.yaml", "testdata/broken.yaml", "../../../../config.example.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(base))
	f.Add([]byte("trunks: [{name: a, header_rules: [{action: add}]}]\nroutes: {outbound: [{match: '(', trunk: a}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data, "fuzz")
		if (s == nil) == (err == nil) {
			t.Fatalf("Parse returned snapshot %v and error %v", s != nil, err)
		}
		if s != nil {
			_ = s.Redacted()
		}
	})
}

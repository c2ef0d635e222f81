package test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the house rule of STYLE.md: dependencies
// point inward. It reads the direct (non-test) imports of every package
// with `go list` and checks that
//   - only config imports viper, only locate imports miekg/dns;
//   - sipgo is touched only by the B2BUA (b2bua, b2bua/header,
//     b2bua/trunk) and the composition root that builds the user agents;
//   - the leaves (acl, nat, tls, route, header, media/sdp, cdr, capture)
//     import no esbc package.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/esbc/esbc"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, mod+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	only := map[string][]string{
		"github.com/spf13/viper": {mod + "/cmd/esbc/internal/config"},
		"github.com/miekg/dns":   {mod + "/b2bua/locate"},
		"github.com/emiago/sipgo": {mod + "/b2bua", mod + "/b2bua/trunk",
			mod + "/cmd/esbc/internal/app"},
		"github.com/emiago/sipgo/sip": {mod + "/b2bua", mod + "/b2bua/header",
			mod + "/b2bua/trunk", mod + "/cmd/esbc/internal/app"},
	}
	leaves := []string{"/acl", "/nat", "/tls", "/b2bua/route", "/b2bua/header", "/media/sdp", "/b2bua/cdr", "/media/capture"}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, imports := f[0], f[1:]
		seen++
		for _, imp := range imports {
			if allowed, ok := only[imp]; ok && !slices.Contains(allowed, pkg) {
				t.Errorf("%s imports %s; only %v may", pkg, imp, allowed)
			}
			if slices.Contains(leaves, strings.TrimPrefix(pkg, mod)) && strings.HasPrefix(imp, mod+"/") {
				t.Errorf("leaf %s imports %s: leaves know nothing of the packages above them", pkg, imp)
			}
		}
	}
	if seen < 15 {
		t.Fatalf("go list saw only %d packages:\n%s", seen, out)
	}
}

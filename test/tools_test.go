package test

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// The one check for external programs (SIPp, dnsmasq, stunnel, tshark,
// baresip) of every test in this package, tagged e2e or not.

// e2eRequireTool skips (or, with ESBC_REQUIRE_TOOLS=1, fails) when name is not
// on PATH, and returns its path.
func e2eRequireTool(t testing.TB, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e with external tools: skipped in -short mode")
	}
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not installed (apt-get install -y %s); set ESBC_REQUIRE_TOOLS=1 to make this a failure", name, e2eAptPackage(name))
		if os.Getenv("ESBC_REQUIRE_TOOLS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func e2eAptPackage(tool string) string {
	switch tool {
	case "sipp":
		return "sip-tester"
	case "stunnel", "stunnel4":
		return "stunnel4"
	case "dnsmasq":
		return "dnsmasq-base"
	case "baresip":
		return "baresip-core"
	}
	return tool
}

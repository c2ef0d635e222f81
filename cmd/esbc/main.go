// Command esbc is an Enterprise Session Border Controller: a B2BUA
// between a company IP-PBX (LAN) and SIP-TLS/SRTP trunks (WAN).
package main

import (
	"os"

	"github.com/esbc/esbc/cmd/esbc/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}

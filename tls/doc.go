// Package tls owns esbc's TLS material and profiles: a certificate store
// with hot rotation (new handshakes get the new certificate, open
// connections keep theirs), the server profile used by tls:// listeners
// (min_version enforced, only AEAD ECDHE cipher suites on TLS 1.2), the
// client profile used toward trunks (server certificate verified against
// a CA file and the trunk's name, optional client certificate for mutual
// TLS), a listener that completes handshakes off the accept loop and
// reports failures, and an in-memory self-signed certificate for the
// embedded default configuration.
//
// Import it as esbctls; inside, crypto/tls is cryptotls. It imports no
// esbc package (a leaf). Metrics: esbc_tls_handshake_failures_total{side,reason}.
//
// Concurrency: Store is safe for concurrent use (atomic pointer); the
// configs returned by ServerConfig/ClientConfig are immutable.
// RFC 8446 (TLS 1.3), RFC 5246 (TLS 1.2), RFC 5280 path validation via
// crypto/x509, RFC 5630 (SIP over TLS server-name checks).
package tls

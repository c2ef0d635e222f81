// Package app is esbc's composition root: it parses the command line,
// loads the configuration, builds the logger, metrics, admin HTTP
// endpoint, TLS store, edge filters and the two sides' sipgo stacks,
// opens every SIP socket itself, installs call handling (calls.go) and
// runs until SIGTERM, reloading on SIGHUP and on a change of the file.
//
// It is the only package that wires others together; nothing imports it.
// Seams handed to other issues: calls.go (installCalls, SIP handlers)
// and edge.go (socket wrappers); their contracts are in those files and
// the types in seams.go.
//
// Process-wide side effect: importing app installs sipgo's debug tracer
// (sip.SIPDebugTracer, sip.SIPDebug, at init; captrace.go), the only place
// where sipgo shows what it writes on the TCP/TLS connections it dialled
// itself: those writes are counted (esbc_sip_messages_total) and captured.
//
// Start order: sockets bound and wrapped, handlers installed (installCalls),
// sockets served, then — once sipgo holds the UDP listeners (waitServing) —
// the trunk runtimes started, then "esbc ready" / READY=1.
//
// Concurrency: the configuration is an immutable *config.Snapshot behind
// config.Store (atomic swap); reloads are serialised by reloadMu and run
// on the main loop; subscribers are called on that goroutine.
// Every goroutine app starts (serve loops, admin HTTP, file watcher,
// drain hooks) ends before Run returns.
package app

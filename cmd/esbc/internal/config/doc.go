// Package config owns esbc's YAML configuration: the schema (typed
// structs with defaults, SPEC §4 plus documented extras), strict decoding
// (an unknown key is an error naming its full path, e.g. trunks[0].srtpp),
// ${ENV} expansion in every string, validation that reports every error
// at once (one line per key), and compilation into an immutable *Snapshot.
//
// It is the only package of esbc that imports viper. A fresh viper is
// made for every load (viper is not safe for concurrent use); viper's
// own watcher is not used: app watches the file itself.
//
// Concurrency: a *Snapshot is immutable and shared freely. Store holds
// the snapshot in force behind an atomic pointer; Swap and Subscribe are
// safe for concurrent use, and subscribers are called one at a time.
//
// Lifecycle of a reload: Load (decode → validate → compile) and, only on
// success, Store.Swap. On failure the caller keeps the old snapshot.
package config

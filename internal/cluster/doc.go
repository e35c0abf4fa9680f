// Package cluster holds the tests of a throng cluster run as separate
// `throng serve` processes (docs/cluster.md). The cluster itself is the
// engine's (internal/engine/cluster.go) and the app's
// (internal/app/cluster.go); this package has no code of its own.
package cluster

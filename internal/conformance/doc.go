// Package conformance holds throng's conformance suite (issue 10): real
// third-party clients — Debian's Qpid Proton for AMQP 1.0, paho and the
// mosquitto command-line clients for MQTT — each role on its own
// connection and in its own process, against a whole platform started by
// internal/testkit. Every MQTT scenario also runs against Debian's
// mosquitto broker in the same test, so the test itself is known to be
// right. The package has only tests; docs/conformance.md lists every
// scenario, the issue item it covers and where throng deliberately
// differs from mosquitto.
//
// A test written before its fix goes in a *_pending_test.go file behind the build
// tag conformance_pending until the fix lands; none is pending now.
package conformance

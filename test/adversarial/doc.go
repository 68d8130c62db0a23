// Package adversarial holds tests that run the real server (pkg/server) on
// loopback and attack it the way a hostile client on the internet would:
// unfinished headers, idle keep-alive, half-sent frames, many connections
// from one address. Each test bounds its claims with the server's own
// counters or runtime figures, never with sleeps.
package adversarial

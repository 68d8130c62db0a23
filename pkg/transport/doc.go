// Package transport turns sockets into framed connections: the TCP accept loop,
// the stream framer, and the bounded outbound queue whose writer coalesces
// everything queued into one write. It knows nothing of sessions.
package transport

// Package transport turns sockets into framed connections: the TCP accept
// loop (with an admission gate and connection tracking), PROXY protocol
// header reading, the stream and WebSocket framers (charging partly received
// frames to a process-wide protocol.Budget), the reader loop that runs
// inside a TCP socket's wait for input (FramePump), parking idle readers
// (Poller), and the bounded outbound queue whose writer writes in pieces
// under a no-progress deadline. It knows nothing of sessions.
package transport

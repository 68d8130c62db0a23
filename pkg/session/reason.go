package session

// CloseReason says why a session or connection ended. Every close has one; it
// is logged, counted (the "reason" metric label) and passed to
// Handler.OnDisconnect.
type CloseReason uint8

// Close reasons.
const (
	// ReasonNone: still open.
	ReasonNone CloseReason = iota
	// ClientClosed: the client closed the connection.
	ClientClosed
	// ServerShutdown: the server stopped (or the drain timeout passed).
	ServerShutdown
	// IdleTimeout: a heartbeating session sent nothing for HeartbeatTimeout,
	// or the peer of a silent one stopped answering TCP keepalive or
	// WebSocket pings.
	IdleTimeout
	// AuthTimeout: not authenticated within AuthTimeout.
	AuthTimeout
	// AuthFailed: MaxAuthAttempts failed authentications.
	AuthFailed
	// Unauthenticated: a non-heartbeat packet other than the authenticate
	// message arrived before authentication.
	Unauthenticated
	// Superseded: the account authenticated on a newer session.
	Superseded
	// Kicked: the application kicked the session.
	Kicked
	// FrameTooLarge: a frame claimed more than MaxPacketSize bytes.
	FrameTooLarge
	// MalformedFrame: an invalid length prefix or partial frame.
	MalformedFrame
	// MalformedHeader: a body too short for its header or with invalid fields.
	MalformedHeader
	// BadCompression: an LZ4 request payload was invalid or of the wrong size.
	BadCompression
	// SlowConsumer: pending outbound bytes over the limit, or a write missed its deadline.
	SlowConsumer
	// RateLimited: sustained packets over the rate limit.
	RateLimited
	// Refused: Handler.OnConnect refused the session.
	Refused
	// ReadError: the connection failed while reading.
	ReadError
	// WriteError: the connection failed while writing.
	WriteError
	// ProtocolError: a transport-level violation (e.g. a WebSocket text message).
	ProtocolError
	// TLSHandshakeTimeout: the TLS handshake did not finish in time.
	TLSHandshakeTimeout
	// TLSHandshakeFailed: the TLS handshake failed.
	TLSHandshakeFailed
	// AppClosed: the application closed the session.
	AppClosed
	// HandlerPanic: the application's handler panicked; the panic was
	// recovered and logged with its stack, and only this session ended.
	HandlerPanic
	// InboundBudgetExceeded: a partly received frame would have passed the
	// process-wide budget of bytes held for partial frames.
	InboundBudgetExceeded
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone: "None", ClientClosed: "ClientClosed", ServerShutdown: "ServerShutdown",
	IdleTimeout: "IdleTimeout", AuthTimeout: "AuthTimeout", AuthFailed: "AuthFailed",
	Unauthenticated: "Unauthenticated", Superseded: "Superseded", Kicked: "Kicked",
	FrameTooLarge: "FrameTooLarge", MalformedFrame: "MalformedFrame", MalformedHeader: "MalformedHeader",
	BadCompression: "BadCompression", SlowConsumer: "SlowConsumer", RateLimited: "RateLimited",
	Refused: "Refused", ReadError: "ReadError", WriteError: "WriteError", ProtocolError: "ProtocolError",
	TLSHandshakeTimeout: "TLSHandshakeTimeout", TLSHandshakeFailed: "TLSHandshakeFailed", AppClosed: "AppClosed", HandlerPanic: "HandlerPanic",
	InboundBudgetExceeded: "InboundBudgetExceeded",
}

// String returns the reason's name, e.g. "FrameTooLarge".
func (r CloseReason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "Unknown"
}

// AllReasons lists every close reason other than ReasonNone, for metrics that
// pre-register their label values.
func AllReasons() []CloseReason {
	out := make([]CloseReason, 0, numReasons-1)
	for r := ClientClosed; r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}

// RejectReason says why a connection was refused before it became a session.
type RejectReason uint8

// Reject reasons (the "reason" label of playhouse_connections_rejected_total).
const (
	// RejectMaxConnections: the server holds MaxConnections already.
	RejectMaxConnections RejectReason = iota
	// RejectPerIP: the client address holds MaxConnectionsPerIP already.
	RejectPerIP
	// RejectDraining: the server is draining.
	RejectDraining
	// RejectTLS: the TLS handshake failed or timed out.
	RejectTLS
	// RejectProxyProtocol: a bad PROXY header, or one from an untrusted peer.
	RejectProxyProtocol
	// RejectAuthCooldown: the client address used up its failed-authentication
	// budget and is cooling down.
	RejectAuthCooldown
	// RejectUpgrade: an admitted WebSocket connection never completed a valid
	// upgrade (bad request, refused origin, header too large, timeout).
	RejectUpgrade
	numRejects
)

var rejectNames = [numRejects]string{
	RejectMaxConnections: "max_connections", RejectPerIP: "per_ip", RejectDraining: "draining", RejectTLS: "tls", RejectProxyProtocol: "proxy_protocol",
	RejectAuthCooldown: "auth_cooldown", RejectUpgrade: "upgrade",
}

// String returns the metric label value, e.g. "per_ip".
func (r RejectReason) String() string {
	if r < numRejects {
		return rejectNames[r]
	}
	return "unknown"
}

// AllRejectReasons lists every reject reason.
func AllRejectReasons() []RejectReason {
	out := make([]RejectReason, 0, numRejects)
	for r := RejectReason(0); r < numRejects; r++ {
		out = append(out, r)
	}
	return out
}

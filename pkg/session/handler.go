package session

import (
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Handler is the application plugged into the engine. The engine calls a
// session's methods from that session's reader goroutine, one at a time and in
// arrival order; a slow handler slows only its own session. A panic in a
// handler method is recovered: it is logged with its stack and ends only
// that session (reason HandlerPanic; a request gets ErrorCode InternalError).
type Handler interface {
	// OnConnect is called when a connection becomes a session, before any
	// packet. A non-nil error refuses it (closed with reason Refused).
	OnConnect(s *Session) error
	// Authenticate decides an authentication request (one of the configured
	// AuthenticateMsgIDs). Return an AuthResult with a non-empty AccountID to
	// accept. It is also called for a second authentication on an
	// authenticated session (another account rebinds the session); return
	// ErrorCode AlreadyAuthenticated to refuse that.
	Authenticate(s *Session, p *Packet) AuthResult
	// OnPacket receives every packet of an authenticated session other than
	// heartbeats. p and p.Payload are valid only until OnPacket returns; use
	// p.Clone to keep them.
	OnPacket(s *Session, p *Packet)
	// OnDisconnect is called once, last, with the reason the session ended.
	OnDisconnect(s *Session, reason CloseReason)
}

// AuthResult is the application's authentication decision.
type AuthResult struct {
	// AccountID names the authenticated account; empty means failure.
	AccountID string
	// ErrorCode is sent on failure (default protocol.AuthenticationFailed).
	ErrorCode protocol.ErrorCode
	// ReplyMsgID overrides the reply's MsgId (default: the request's with
	// "Request" replaced by "Reply").
	ReplyMsgID string
	// ReplyPayload is the reply's payload.
	ReplyPayload []byte
	// panicked marks the result of a recovered Authenticate panic.
	panicked bool
}

// Packet is one decoded client packet.
type Packet struct {
	// MsgID is the message name.
	MsgID string
	// MsgSeq is 0 for a one-way packet, else the sequence its reply must echo.
	MsgSeq uint16
	// StageID is the stage the packet addresses (0: none).
	StageID int64
	// Payload is the decompressed payload; it aliases the read buffer.
	Payload []byte
	// replyID caches ReplyMsgID(MsgID).
	replyID string
}

// IsRequest reports whether the packet expects a reply.
func (p *Packet) IsRequest() bool { return p.MsgSeq != 0 }

// ReplyMsgID is the MsgId a reply to p carries by default.
func (p *Packet) ReplyMsgID() string {
	if p.replyID == "" {
		return protocol.ReplyMsgID(p.MsgID)
	}
	return p.replyID
}

// Clone returns a copy of p that owns its payload, safe to keep after the
// handler returns (for a reply sent later).
func (p *Packet) Clone() *Packet {
	c := *p
	c.Payload = append([]byte(nil), p.Payload...)
	return &c
}

// HandlerFuncs adapts functions to a Handler; nil fields accept connections,
// refuse authentication, and ignore packets and disconnects.
type HandlerFuncs struct {
	// Connect implements OnConnect.
	Connect func(s *Session) error
	// Auth implements Authenticate.
	Auth func(s *Session, p *Packet) AuthResult
	// Packet implements OnPacket.
	Packet func(s *Session, p *Packet)
	// Disconnect implements OnDisconnect.
	Disconnect func(s *Session, reason CloseReason)
}

// OnConnect implements Handler.
func (h HandlerFuncs) OnConnect(s *Session) error {
	if h.Connect == nil {
		return nil
	}
	return h.Connect(s)
}

// Authenticate implements Handler.
func (h HandlerFuncs) Authenticate(s *Session, p *Packet) AuthResult {
	if h.Auth == nil {
		return AuthResult{}
	}
	return h.Auth(s, p)
}

// OnPacket implements Handler.
func (h HandlerFuncs) OnPacket(s *Session, p *Packet) {
	if h.Packet != nil {
		h.Packet(s, p)
	}
}

// OnDisconnect implements Handler.
func (h HandlerFuncs) OnDisconnect(s *Session, reason CloseReason) {
	if h.Disconnect != nil {
		h.Disconnect(s, reason)
	}
}

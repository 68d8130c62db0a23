package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Server notice message ids (protocol.md section 3).
const (
	// KickMsgID is pushed before the server closes a session on purpose.
	KickMsgID = "@Kick@"
	// DrainMsgID is pushed when the server starts draining.
	DrainMsgID = "@Drain@"
)

// maxInterned bounds the per-session table of message names, so a client
// sending random names cannot grow it.
const maxInterned = 64

// ErrSessionClosed is returned when sending on a closed session.
var ErrSessionClosed = errors.New("session closed")

// Session is one client connection after admission. Its methods are safe for
// concurrent use.
type Session struct {
	id          uint64
	m           *Manager
	conn        transport.Conn
	out         *transport.Outbox
	kind        transport.Kind
	ks          *kindStats
	remote      net.Addr
	connectedAt time.Time
	lastActive  atomic.Int64 // unix nanoseconds

	authenticated atomic.Bool
	stageID       atomic.Int64

	mu      sync.Mutex
	account string
	reason  CloseReason
	data    any

	closing chan struct{} // closed when Close is first called

	// Reader-goroutine state.
	authAttempts   int
	rateViolations int
	limiter        *rate.Limiter
	pkt            Packet
	scratch        []byte
	names          map[string]names
}

type names struct{ id, reply string }

func (m *Manager) newSession(c transport.Conn) *Session {
	s := &Session{
		id:          m.nextID.Add(1),
		m:           m,
		conn:        c,
		out:         transport.NewOutbox(m.opts.MaxPendingOutboundBytes),
		kind:        c.Kind(),
		ks:          m.stats.kind(c.Kind()),
		remote:      c.RemoteAddr(),
		connectedAt: time.Now(),
		closing:     make(chan struct{}),
	}
	s.lastActive.Store(s.connectedAt.UnixNano())
	if m.opts.RatePerSecond > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(m.opts.RatePerSecond), m.opts.RateBurst)
	}
	ks := s.ks
	s.out.SetOnWrite(func(frames, bytes int) {
		ks.packetsOut.Add(uint64(frames))
		ks.bytesOut.Add(uint64(bytes))
	})
	return s
}

// ID is unique among the sessions of this process, across transports.
func (s *Session) ID() uint64 { return s.id }

// Transport names the transport the client connected with.
func (s *Session) Transport() transport.Kind { return s.kind }

// RemoteAddr is the client address.
func (s *Session) RemoteAddr() net.Addr { return s.remote }

// ConnectedAt is when the session started.
func (s *Session) ConnectedAt() time.Time { return s.connectedAt }

// LastActivity is when the last inbound frame arrived.
func (s *Session) LastActivity() time.Time { return time.Unix(0, s.lastActive.Load()) }

// Authenticated reports whether the session has authenticated.
func (s *Session) Authenticated() bool { return s.authenticated.Load() }

// AccountID is the authenticated account ("" before authentication).
func (s *Session) AccountID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.account
}

// StageID is the stage the application placed the session in (0: none).
func (s *Session) StageID() int64 { return s.stageID.Load() }

// SetStageID places the session in a stage (0: none). Manager.Broadcast
// reaches the sessions of a stage, and reconnect tokens carry it.
func (s *Session) SetStageID(id int64) { s.m.setStage(s, id) }

// Data returns the value stored with SetData.
func (s *Session) Data() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data
}

// SetData stores an application value with the session.
func (s *Session) SetData(v any) {
	s.mu.Lock()
	s.data = v
	s.mu.Unlock()
}

// CloseReason is why the session ended, or ReasonNone while it is open.
func (s *Session) CloseReason() CloseReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Done is closed when the session starts closing.
func (s *Session) Done() <-chan struct{} { return s.closing }

// PendingBytes reports the outbound bytes queued and not yet written.
func (s *Session) PendingBytes() int { return s.out.Pending() }

// Reply answers a request with the default reply MsgId (the request's with
// "Request" replaced by "Reply"), the request's MsgSeq and StageId.
func (s *Session) Reply(req *Packet, code protocol.ErrorCode, payload []byte) error {
	return s.send(req.ReplyMsgID(), req.MsgSeq, req.StageID, code, payload)
}

// ReplyAs answers a request with the given MsgId.
func (s *Session) ReplyAs(req *Packet, msgID string, code protocol.ErrorCode, payload []byte) error {
	return s.send(msgID, req.MsgSeq, req.StageID, code, payload)
}

// Push sends a server-initiated packet (MsgSeq 0).
func (s *Session) Push(msgID string, stageID int64, payload []byte) error {
	return s.send(msgID, 0, stageID, protocol.Success, payload)
}

// send queues one response frame. A full queue closes the session as a slow
// consumer; the caller never blocks on the socket.
func (s *Session) send(msgID string, seq uint16, stage int64, code protocol.ErrorCode, payload []byte) error {
	var comp *protocol.Compressor
	if s.m.opts.Compression && len(payload) >= s.m.opts.CompressionThreshold {
		comp = s.m.compPool.Get().(*protocol.Compressor)
		defer s.m.compPool.Put(comp)
	}
	return s.enqueue(func(dst []byte) ([]byte, error) {
		h := protocol.Header{MsgSeq: seq, StageID: stage, ErrorCode: code}
		body := payload
		if comp != nil {
			body, h.OriginalSize = comp.Compress(payload)
		}
		if n := protocol.ResponseSize(len(msgID), len(body)) - protocol.LengthSize; n > s.m.opts.MaxPacketSize {
			return dst, fmt.Errorf("send %s: %d-byte body exceeds MaxPacketSize %d", msgID, n, s.m.opts.MaxPacketSize)
		}
		return protocol.AppendFull(dst, h, msgID, body)
	})
}

// sendFrame queues a frame already encoded (by Manager.Broadcast).
func (s *Session) sendFrame(frame []byte) error {
	return s.enqueue(func(dst []byte) ([]byte, error) { return append(dst, frame...), nil })
}

// enqueue appends one encoded frame to the outbox; a full outbox closes the
// session as a slow consumer, and the caller never blocks on the socket.
func (s *Session) enqueue(encode func(dst []byte) ([]byte, error)) error {
	size := 0
	err := s.out.Append(func(dst []byte) ([]byte, error) {
		out, err := encode(dst)
		size = len(out) - len(dst)
		return out, err
	})
	switch {
	case err == nil:
		if obs := s.m.opts.Observer; obs != nil {
			obs.PacketSent(size)
		}
		return nil
	case errors.Is(err, transport.ErrSlowConsumer):
		s.abort(SlowConsumer, err)
		return fmt.Errorf("session %d: %w", s.id, err)
	case errors.Is(err, transport.ErrOutboxClosed):
		return fmt.Errorf("session %d: %w", s.id, ErrSessionClosed)
	default:
		return fmt.Errorf("session %d: %w", s.id, err)
	}
}

// Kick pushes @Kick@ with the reason, then closes the session (reason Kicked)
// once the push is written.
func (s *Session) Kick(reason string) {
	s.kick(reason, Kicked)
}

func (s *Session) kick(text string, reason CloseReason) {
	payload, _ := json.Marshal(struct {
		Reason string `json:"reason"`
	}{text})
	_ = s.Push(KickMsgID, s.StageID(), payload)
	s.Close(reason)
}

// Close ends the session with reason: it stops accepting outbound packets,
// writes what is already queued (bounded by the write timeout), then closes the
// connection. The first reason given wins. It does not wait.
func (s *Session) Close(reason CloseReason) {
	if s.setReason(reason) {
		s.out.Close()
	}
}

// abort ends the session at once, dropping what is queued.
func (s *Session) abort(reason CloseReason, err error) {
	if s.setReason(reason) {
		s.m.opts.Logger.Debug("session aborted", "session", s.id, "reason", reason.String(), "err", err)
	}
	s.out.Abort()
	s.conn.Close()
}

// setReason records the close reason once and reports whether this call did.
func (s *Session) setReason(reason CloseReason) bool {
	if reason == ReasonNone {
		reason = AppClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason != ReasonNone {
		return false
	}
	s.reason = reason
	close(s.closing)
	return true
}

// run is the session's life: writer goroutine, reader loop, then teardown.
func (s *Session) run() {
	m := s.m
	log := m.opts.Logger
	var refused error
	if !s.guard("OnConnect", nil, func() { refused = m.opts.Handler.OnConnect(s) }) {
		s.conn.Close()
		s.ks.closed[HandlerPanic].Add(1)
		return
	}
	if refused != nil {
		log.Info("session refused by handler", "session", s.id, "remote", s.remote.String(), "err", refused)
		s.setReason(Refused)
		s.conn.Close()
		s.ks.closed[Refused].Add(1)
		return
	}
	m.register(s)
	s.ks.active.Add(1)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		err := s.out.Run(s.conn, m.opts.WriteTimeout)
		switch {
		case errors.Is(err, transport.ErrSlowConsumer):
			s.abort(SlowConsumer, err)
		case err != nil:
			s.abort(WriteError, err)
		}
		// After a flush-and-close, or any write failure, the connection goes.
		s.conn.Close()
	}()
	authTimer := time.AfterFunc(m.opts.AuthTimeout, func() {
		if !s.authenticated.Load() {
			s.Close(AuthTimeout)
		}
	})

	s.readLoop()

	authTimer.Stop()
	// The reader has stopped: make sure the writer stops too. Close flushes
	// what is queued when the session ended on a read error (the peer may
	// still read); an aborted session has already dropped it.
	s.Close(ClientClosed)
	<-writerDone
	// Count the close before the session leaves the registry, so a caller
	// that sees Count() drop also sees the close counted.
	reason := s.CloseReason()
	s.ks.closed[reason].Add(1)
	s.ks.active.Add(-1)
	m.unregister(s)
	log.Debug("session closed", "session", s.id, "transport", string(s.kind), "remote", s.remote.String(),
		"account", s.AccountID(), "reason", reason.String(), "duration", time.Since(s.connectedAt).String())
	s.guard("OnDisconnect", nil, func() { m.opts.Handler.OnDisconnect(s, reason) })
}

// guard runs one handler call. A panic is recovered: it is logged with its
// stack, a request being handled is answered with ErrorCode InternalError,
// and the session closes with HandlerPanic; the process and the other
// sessions go on. It reports whether fn returned normally.
func (s *Session) guard(what string, req *Packet, fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ok = false
			s.m.opts.Logger.Error("handler panicked; closing its session", "handler", what, "session", s.id,
				"remote", s.remote.String(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			if req != nil && req.IsRequest() {
				_ = s.Reply(req, protocol.InternalError, nil)
			}
			if s.setReason(HandlerPanic) {
				s.out.Close()
			}
		}
	}()
	fn()
	return true
}

// readLoop reads and dispatches frames until the connection fails or the
// session is closed.
func (s *Session) readLoop() {
	idle := s.m.opts.HeartbeatTimeout
	for {
		if err := s.conn.SetReadDeadline(time.Now().Add(idle)); err != nil {
			s.Close(ReadError)
			return
		}
		body, err := s.conn.ReadFrame()
		if err != nil {
			s.readFailed(err)
			return
		}
		s.lastActive.Store(time.Now().UnixNano())
		s.ks.packetsIn.Add(1)
		s.ks.bytesIn.Add(uint64(len(body) + protocol.LengthSize))
		if obs := s.m.opts.Observer; obs != nil {
			obs.PacketReceived(len(body) + protocol.LengthSize)
		}
		if !s.dispatch(body) {
			return
		}
		select {
		case <-s.closing:
			return
		default:
		}
	}
}

// readFailed maps a read error to a close reason. When the session was
// already closing, its reason stands.
func (s *Session) readFailed(err error) {
	var reason CloseReason
	switch {
	case errors.Is(err, protocol.ErrFrameTooLarge):
		reason = FrameTooLarge
	case errors.Is(err, protocol.ErrMalformedFrame):
		reason = MalformedFrame
	case errors.Is(err, transport.ErrProtocol):
		reason = ProtocolError
	case errors.Is(err, os.ErrDeadlineExceeded):
		reason = IdleTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), isConnReset(err):
		reason = ClientClosed
	default:
		reason = ReadError
	}
	if s.setReason(reason) {
		if reason != ClientClosed {
			s.m.opts.Logger.Info("session closed on read", "session", s.id, "remote", s.remote.String(), "reason", reason.String(), "err", err)
		}
		s.out.Close()
	}
}

// dispatch handles one frame; it returns false when the session must stop reading.
func (s *Session) dispatch(body []byte) bool {
	m := s.m
	h, payload, err := protocol.ParseRequest(body, m.opts.RequestHeader)
	if err != nil {
		s.protocolViolation(MalformedHeader, err)
		return false
	}
	if h.OriginalSize > 0 {
		payload, err = protocol.DecompressPayload(s.scratch[:0], payload, int(h.OriginalSize), m.opts.MaxPacketSize)
		if err != nil {
			s.protocolViolation(BadCompression, err)
			return false
		}
		if cap(payload) <= 64<<10 {
			s.scratch = payload[:0]
		}
	}
	n := s.intern(h.MsgID)
	p := &s.pkt
	*p = Packet{MsgID: n.id, MsgSeq: h.MsgSeq, StageID: h.StageID, Payload: payload, replyID: n.reply}

	if s.limiter != nil && !s.limiter.Allow() {
		m.stats.rateLimited.Add(1)
		if s.rateViolations++; s.rateViolations >= m.opts.MaxRateViolations {
			s.m.opts.Logger.Info("session rate limited", "session", s.id, "remote", s.remote.String())
			s.Close(RateLimited)
			return false
		}
		if p.IsRequest() {
			_ = s.Reply(p, protocol.RateLimitExceeded, nil)
		}
		return true
	}
	s.rateViolations = 0

	if p.MsgID == m.opts.HeartbeatMsgID {
		_ = s.send(p.MsgID, p.MsgSeq, p.StageID, protocol.Success, nil)
		return true
	}
	if p.MsgID == m.opts.AuthenticateMsgID {
		return s.authenticate(p)
	}
	if !s.authenticated.Load() {
		s.protocolViolation(Unauthenticated, fmt.Errorf("%q before authentication", p.MsgID))
		return false
	}
	obs := m.opts.Observer
	var start time.Time
	if obs != nil {
		start = time.Now()
	}
	ok := s.guard("OnPacket", p, func() { m.opts.Handler.OnPacket(s, p) })
	if obs != nil {
		obs.HandlerDone(time.Since(start))
	}
	return ok
}

// authenticate runs the auth gate for one authenticate request.
func (s *Session) authenticate(p *Packet) bool {
	m := s.m
	if s.authenticated.Load() {
		_ = s.Reply(p, protocol.AlreadyAuthenticated, nil)
		return true
	}
	res := s.authenticateWith(p)
	if res.panicked {
		return false // guard answered and closed the session
	}
	replyID := res.ReplyMsgID
	if replyID == "" {
		replyID = p.ReplyMsgID()
	}
	if res.AccountID == "" {
		m.stats.authFailed.Add(1)
		s.authAttempts++
		code := res.ErrorCode
		if code == protocol.Success {
			code = protocol.AuthenticationFailed
		}
		_ = s.ReplyAs(p, replyID, code, res.ReplyPayload)
		if s.authAttempts >= m.opts.MaxAuthAttempts {
			m.opts.Logger.Info("session closed after failed authentication", "session", s.id, "remote", s.remote.String(), "attempts", s.authAttempts)
			s.Close(AuthFailed)
			return false
		}
		return true
	}
	s.mu.Lock()
	s.account = res.AccountID
	s.mu.Unlock()
	if old := m.bind(s, res.AccountID); old != nil {
		m.opts.Logger.Info("session superseded", "account", res.AccountID, "old", old.id, "new", s.id)
		old.kick(Superseded.String(), Superseded)
	}
	s.authenticated.Store(true)
	_ = s.ReplyAs(p, replyID, protocol.Success, res.ReplyPayload)
	return true
}

// authenticateWith decides an authenticate request: signed tokens are checked
// by the engine, anything else goes to the application (unless TokenAuth).
func (s *Session) authenticateWith(p *Packet) AuthResult {
	m := s.m
	if m.opts.Tokens != nil && (m.opts.TokenAuth || looksLikeToken(p.Payload)) {
		claims, err := m.opts.Tokens.Verify(string(p.Payload))
		if err != nil {
			m.opts.Logger.Info("token rejected", "session", s.id, "remote", s.remote.String(), "err", err)
			return AuthResult{ErrorCode: protocol.AuthenticationFailed}
		}
		s.SetStageID(claims.StageID)
		return AuthResult{AccountID: claims.Account}
	}
	var res AuthResult
	if !s.guard("Authenticate", p, func() { res = m.opts.Handler.Authenticate(s, p) }) {
		return AuthResult{ErrorCode: protocol.InternalError, panicked: true}
	}
	return res
}

// looksLikeToken reports whether payload has the shape of a JWT (three
// base64url segments whose header names an algorithm), so a stale or forged
// token is refused rather than handed to the application as credentials.
func looksLikeToken(payload []byte) bool {
	if len(payload) < 16 || len(payload) > maxTokenSize || bytes.Count(payload, []byte{'.'}) != 2 || !bytes.HasPrefix(payload, []byte("eyJ")) {
		return false
	}
	for _, c := range payload {
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// protocolViolation closes the session for bad client input.
func (s *Session) protocolViolation(reason CloseReason, err error) {
	if s.setReason(reason) {
		s.m.opts.Logger.Info("session closed: protocol violation", "session", s.id, "remote", s.remote.String(), "reason", reason.String(), "err", err)
		s.out.Close()
	}
}

// intern returns stable strings for a message name and its reply name,
// without allocating for names already seen on this session.
func (s *Session) intern(b []byte) names {
	if n, ok := s.names[string(b)]; ok {
		return n
	}
	id := string(b)
	n := names{id: id, reply: protocol.ReplyMsgID(id)}
	if s.names == nil {
		s.names = make(map[string]names, 8)
	}
	if len(s.names) < maxInterned {
		s.names[id] = n
	}
	return n
}

package session

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
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

// maxInterned bounds the manager's table of message names (shared by every
// session), so clients sending random names cannot grow it: once full, a
// name not in it costs an allocation whenever it differs from the session's
// previous packet's, as it would without a table.
const maxInterned = 1024

// ErrSessionClosed is returned when sending on a closed session.
var ErrSessionClosed = errors.New("session closed")

// Session is one client connection after admission. Its methods are safe for
// concurrent use.
type Session struct {
	// Touched for every packet, kept together in the first cache lines
	// (fewer lines to load per packet when many sessions take turns).
	m             *Manager
	conn          transport.Conn
	out           *transport.Outbox // application traffic, until the close point (&outbox)
	ks            *kindStats
	lastActive    atomic.Int64 // unix nanoseconds
	closed        atomic.Bool  // set just before closing is closed (cheap to poll per packet)
	authenticated atomic.Bool
	heartbeating  atomic.Bool // the client has sent a heartbeat: idle deadline applies
	aborted       atomic.Bool
	// Reader-goroutine state.
	limiter        *rate.Limiter // packets
	byteLimiter    *rate.Limiter // inbound bytes
	byteBurst      int           // byteLimiter's burst (fixed)
	rateViolations int
	lastNames      names // the names of the last packet read
	pkt            Packet
	readDeadline   bool      // a read deadline is set on the conn (readLoop's own state)
	keepDeadline   bool      // the next read keeps idleDeadline (the read was parked)
	held           bool      // replies are held while buffered frames are read (see frame)
	stop           readState // how the read loop ends when frame says stop
	fb             transport.FrameBufferer
	idleWatched    bool             // the idle timer cuts reads without input (see watchIdle)
	outbox         transport.Outbox // out points here: one allocation with the session

	holdTimer    *time.Timer // ends a hold of replies (see hold)
	authAttempts int

	id          uint64
	tail        *transport.Outbox // answers written after the close point (see linger); made by late()
	kind        transport.Kind
	remote      net.Addr
	connectedAt time.Time
	stageID     atomic.Int64

	mu      sync.Mutex
	account string
	reason  CloseReason
	data    any

	closing chan struct{} // closed when Close is first called

	// Lingering close state (see startClosing and linger).
	lmu      sync.Mutex
	closeAt  time.Time   // the close point
	lastIn   time.Time   // last request read after the close point
	quiet    *time.Timer // closes tail once the input is quiet
	finSent  bool        // the writer has half-closed
	finUntil time.Time   // end of the linger after the half-close

	pingTimer *time.Timer // WebSocket liveness (see watchLiveness)

	// Parking (see park.go); parking and the timer's arming are under lmu.
	adm          *Admission    // released when the session ends
	writerDone   chan struct{} // closed once the writer has half-closed or failed
	canPark      bool          // started by Manager.Go on a connection that can park
	detached     bool          // started by Manager.Go: the reader may go on on another goroutine
	hop          bool          // reader: go on on a fresh goroutine after this frame (see frame)
	idleTimer    *time.Timer   // asks an idle reader to park; wakes a parked one at its idle deadline
	parking      *transport.Parking
	parkReq      atomic.Bool // the idle timer has cut the read short so the reader parks
	idleDeadline time.Time   // reader: the idle deadline of the current read (heartbeating sessions)

	authTimer *time.Timer
}

type names struct{ id, reply string }

func (m *Manager) newSession(c transport.Conn) *Session {
	s := &Session{
		id:          m.nextID.Add(1),
		m:           m,
		conn:        c,
		kind:        c.Kind(),
		ks:          m.stats.kind(c.Kind()),
		remote:      c.RemoteAddr(),
		connectedAt: time.Now(),
		closing:     make(chan struct{}),
		// Unknown: the first read clears whatever deadline the prelude
		// (PROXY header, TLS handshake, HTTP upgrade) left.
		readDeadline: true,
	}
	s.lastActive.Store(s.connectedAt.UnixNano())
	s.fb, _ = c.(transport.FrameBufferer)
	s.outbox.Init(m.opts.MaxPendingOutboundBytes)
	s.out = &s.outbox
	s.out.SetWriteObserver((*writeCounter)(s))
	if m.opts.RatePerSecond > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(m.opts.RatePerSecond), m.opts.RateBurst)
	}
	if m.opts.BytesPerSecond > 0 {
		s.byteLimiter = rate.NewLimiter(rate.Limit(m.opts.BytesPerSecond), m.opts.BytesBurst)
		s.byteBurst = m.opts.BytesBurst
	}
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
// consumer; the caller never blocks on the socket. After the close point
// pushes are refused, while a reply (MsgSeq > 0) still goes out through the
// lingering close (see linger), so a request being handled when the session
// closed is still answered. A reply that cannot be encoded (it would exceed
// MaxPacketSize) is answered with ErrorCode InternalError instead and counted.
func (s *Session) send(msgID string, seq uint16, stage int64, code protocol.ErrorCode, payload []byte) error {
	var comp *protocol.Compressor
	if s.m.opts.Compression && len(payload) >= s.m.opts.CompressionThreshold {
		comp = s.m.compPool.Get().(*protocol.Compressor)
		defer s.m.compPool.Put(comp)
	}
	tooLarge := false
	err := s.enqueue(seq != 0, func(dst []byte) ([]byte, error) {
		h := protocol.Header{MsgSeq: seq, StageID: stage, ErrorCode: code}
		body := payload
		if comp != nil {
			body, h.OriginalSize = comp.Compress(payload)
		}
		if n := protocol.ResponseSize(len(msgID), len(body)) - protocol.LengthSize; n > s.m.opts.MaxPacketSize {
			tooLarge = true
			return dst, s.tooLarge(msgID, n)
		}
		return protocol.AppendFull(dst, h, msgID, body)
	})
	if tooLarge {
		s.unencodable(msgID, seq, stage, err)
	}
	return err
}

// tooLarge is the error for a packet of msgID whose body would be n bytes.
func (s *Session) tooLarge(msgID string, n int) error {
	return fmt.Errorf("send %s: %d-byte body exceeds MaxPacketSize %d: %w", msgID, n, s.m.opts.MaxPacketSize, ErrReplyTooLarge)
}

// unencodable counts and logs a packet too large to encode; a request is
// answered InternalError in the application's place (exactly one answer).
func (s *Session) unencodable(msgID string, seq uint16, stage int64, err error) {
	s.m.stats.unencodable.Add(1)
	s.m.opts.Logger.Warn("packet too large to encode", "session", s.id, "msgId", msgID, "msgSeq", seq, "err", err)
	if seq != 0 {
		_ = s.enqueue(true, func(dst []byte) ([]byte, error) {
			return protocol.AppendFull(dst, protocol.Header{MsgSeq: seq, StageID: stage, ErrorCode: protocol.InternalError}, msgID, nil)
		})
	}
}

// ErrReplyTooLarge is returned by Reply, ReplyAs and Push for a packet whose
// body would exceed MaxPacketSize; a request is then answered with ErrorCode
// InternalError by the engine.
var ErrReplyTooLarge = errors.New("packet exceeds MaxPacketSize")

// sendFrame queues a frame already encoded (by Manager.Broadcast).
func (s *Session) sendFrame(frame []byte) error {
	return s.enqueue(false, func(dst []byte) ([]byte, error) { return append(dst, frame...), nil })
}

// enqueue appends one encoded frame to the outbox; a full outbox closes the
// session as a slow consumer, and the caller never blocks on the socket. An
// answer (a reply or an engine error for a request) goes to the lingering
// close's queue once the application queue is closed.
func (s *Session) enqueue(answer bool, encode func(dst []byte) ([]byte, error)) error {
	err := s.out.Append(encode)
	if answer && errors.Is(err, transport.ErrOutboxClosed) {
		err = s.late().Append(encode)
	}
	switch {
	case err == nil:
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

// Close ends the session with reason. This is its close point: the
// application can no longer push (a reply to a request still goes out), what
// is queued is written, each request read from then on is answered with
// ErrorCode ServerDraining, and the connection is closed the lingering way of
// protocol.md section 3 (half-close, then read and discard until the peer
// closes or CloseLinger passes). The first reason given wins. It does not wait.
func (s *Session) Close(reason CloseReason) {
	if s.setReason(reason) {
		s.startClosing()
	}
}

// startClosing runs once, at the close point.
func (s *Session) startClosing() {
	s.out.Close()
	s.lmu.Lock()
	s.closeAt = time.Now()
	s.lastIn = s.closeAt
	s.quiet = time.AfterFunc(s.m.opts.CloseQuiet, s.quietCheck)
	s.lmu.Unlock()
	s.unpark() // a parked reader goes on with the lingering close
}

// quietCheck ends the answering phase of a lingering close once no request
// has arrived for CloseQuiet (the client has seen the close and stopped), or
// CloseLinger after the close point for a client that never stops: the
// writer then flushes the answers and half-closes.
func (s *Session) quietCheck() {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	due := s.lastIn.Add(s.m.opts.CloseQuiet)
	if limit := s.closeAt.Add(s.m.opts.CloseLinger); limit.Before(due) {
		due = limit
	}
	if d := time.Until(due); d > 0 {
		s.quiet.Reset(d)
		return
	}
	s.late().Close()
}

// abort ends the session at once, dropping what is queued.
func (s *Session) abort(reason CloseReason, err error) {
	if s.setReason(reason) {
		s.m.opts.Logger.Debug("session aborted", "session", s.id, "reason", reason.String(), "err", err)
	}
	s.aborted.Store(true)
	s.out.Abort()
	s.late().Abort()
	s.unpark()
	s.conn.Close()
}

// late returns the lingering close's answer queue, made on first use: only
// sessions that reach their close point need one.
func (s *Session) late() *transport.Outbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tail == nil {
		s.tail = transport.NewOutbox(s.m.opts.MaxPendingOutboundBytes)
		s.tail.SetWriteObserver((*writeCounter)(s))
	}
	return s.tail
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
	s.closed.Store(true)
	close(s.closing)
	return true
}

// isClosing reports whether the session is past its close point.
func (s *Session) isClosing() bool { return s.closed.Load() }

// writeCounter is a Session as its outboxes' transport.WriteObserver.
type writeCounter Session

// FramesWritten counts outbound traffic in one place with one rule: a frame
// counts (transport counters and Observer) once the transport has written
// it. Both outboxes call it with the whole frames they wrote.
func (w *writeCounter) FramesWritten(b []byte) {
	s := (*Session)(w)
	obs := s.m.opts.Observer
	frames := 0
	for rest := b; len(rest) >= protocol.LengthSize; frames++ {
		n := protocol.LengthSize + int(binary.LittleEndian.Uint32(rest))
		if n > len(rest) {
			break
		}
		if obs != nil {
			obs.PacketSent(n)
		}
		rest = rest[n:]
	}
	s.ks.packetsOut.Add(uint64(frames))
	s.ks.bytesOut.Add(uint64(len(b)))
}

// run is the session's life: writer, reader loop, lingering close, then
// teardown. It returns early when the reader parks (see park.go): a fresh
// goroutine then goes on with read.
func (s *Session) run() {
	if !s.open() {
		s.end()
		return
	}
	s.read()
}

// read runs the reader loop and, unless the reader parks, the end of the
// session. Only read and readLoop are on the stack while the reader waits:
// open and teardown keep their frames (handler calls, log arguments) off it,
// so the garbage collector can shrink an idle session's stack.
func (s *Session) read() {
	state := s.readLoop()
	switch state {
	case readParked:
		return
	case readHop:
		go s.read()
		return
	}
	s.teardown(state == readClosing)
	s.end()
}

// end gives back what Manager.serve took for the session.
func (s *Session) end() {
	s.m.leave()
	s.adm.Release()
}

// open runs OnConnect, starts the writer and registers the session. It
// reports false when the session ends at once (refused or panicked).
//
//go:noinline
func (s *Session) open() (ok bool) {
	m := s.m
	// Before authentication frames are bounded by PreAuthMaxPacketSize.
	s.conn.SetReadLimit(min(m.opts.PreAuthMaxPacketSize, m.opts.MaxPacketSize))
	s.conn.SetControlHook(s.controlFrame)
	var refused error
	if !s.guard("OnConnect", nil, func() { refused = m.opts.Handler.OnConnect(s) }) {
		s.conn.Close()
		s.ks.closed[HandlerPanic].Add(1)
		return false
	}
	if refused != nil {
		m.opts.Logger.Info("session refused by handler", "session", s.id, "remote", s.remote.String(), "err", refused)
		s.setReason(Refused)
		s.conn.Close()
		s.ks.closed[Refused].Add(1)
		return false
	}
	s.ks.active.Add(1)
	s.writerDone = make(chan struct{})
	s.startWriting(s.writerDone)
	s.authTimer = time.AfterFunc(m.opts.AuthTimeout, s.authExpired)
	m.register(s)
	s.watchLiveness()
	s.watchIdle()
	return true
}

// teardown is the end of the session's life: lingering close, counters,
// registry, OnDisconnect.
//
//go:noinline
func (s *Session) teardown(inputOK bool) {
	m := s.m
	s.linger(inputOK)

	s.authTimer.Stop()
	s.stopLiveness()
	s.stopIdle()
	s.lmu.Lock()
	if s.quiet != nil {
		s.quiet.Stop()
	}
	s.lmu.Unlock()
	// Count the close before the session leaves the registry, so a caller
	// that sees Count() drop also sees the close counted.
	reason := s.CloseReason()
	s.ks.closed[reason].Add(1)
	s.ks.active.Add(-1)
	m.unregister(s)
	m.opts.Logger.Debug("session closed", "session", s.id, "transport", string(s.kind), "remote", s.remote.String(),
		"account", s.AccountID(), "reason", reason.String(), "duration", time.Since(s.connectedAt).String())
	s.guard("OnDisconnect", nil, func() { m.opts.Handler.OnDisconnect(s, reason) })
}

// authExpired closes a session not authenticated within AuthTimeout. It
// decides under the manager's lock, as bind does, so a session is either
// authenticated or closed by the timeout, never both.
func (s *Session) authExpired() {
	s.m.mu.Lock()
	expired := !s.authenticated.Load() && s.setReason(AuthTimeout)
	s.m.mu.Unlock()
	if expired {
		s.startClosing()
	}
}

// startWriting lets the writer run: application traffic until the close
// point, then the lingering close's answers, then the half-close. A writer
// goroutine runs only while frames are queued (see transport.Outbox); done
// is closed once the half-close is sent or the writing failed.
func (s *Session) startWriting(done chan<- struct{}) {
	wt := s.m.opts.WriteTimeout
	s.out.Start(s.conn, wt, func(err error) {
		if err == nil && !s.aborted.Load() {
			s.late().Start(s.conn, wt, func(err error) { s.writingEnded(err, done) })
			return
		}
		s.writingEnded(err, done)
	})
}

// writingEnded runs on the last writer goroutine: it maps a write error to
// the session's close, or half-closes the connection after the last answer.
func (s *Session) writingEnded(err error, done chan<- struct{}) {
	defer close(done)
	switch {
	case errors.Is(err, transport.ErrSlowConsumer):
		s.abort(SlowConsumer, err)
		return
	case err != nil:
		s.abort(WriteError, err)
		return
	case s.aborted.Load():
		return
	}
	reason := s.CloseReason()
	if err := s.conn.CloseWrite(wsCloseCode(reason), reason.String()); err != nil {
		s.m.opts.Logger.Debug("half-close failed", "session", s.id, "err", err)
	}
	s.lmu.Lock()
	s.finSent = true
	s.finUntil = time.Now().Add(s.m.opts.CloseLinger)
	_ = s.conn.SetReadDeadline(s.finUntil)
	s.lmu.Unlock()
}

// wsCloseCode is the WebSocket close code sent for reason (protocol.md section 3).
func wsCloseCode(r CloseReason) int {
	switch r {
	case ServerShutdown:
		return 1001
	case MalformedFrame, MalformedHeader, ProtocolError, BadCompression:
		return 1002
	case Unauthenticated, AuthFailed, AuthTimeout, Superseded, RateLimited, Kicked, Refused:
		return 1008
	case FrameTooLarge:
		return 1009
	case HandlerPanic, ReadError, WriteError:
		return 1011
	case SlowConsumer, InboundBudgetExceeded:
		return 1013
	default: // ClientClosed, AppClosed, IdleTimeout
		return 1000
	}
}

// linger is the reader's part of the lingering close (protocol.md section 3).
// While the input still parses (inputOK), it keeps reading: until the writer
// half-closes, each request read is answered with ErrorCode ServerDraining
// and other packets are dropped; after the half-close everything is read and
// discarded until the peer closes or CloseLinger passes. Only then is the
// connection released. When the input is broken (a framing error), what is
// queued is flushed, the writer half-closes, and the raw input is discarded
// for up to CloseLinger.
func (s *Session) linger(inputOK bool) {
	if !inputOK {
		s.late().Close()
	}
	for inputOK {
		s.lmu.Lock()
		if s.finSent {
			_ = s.conn.SetReadDeadline(s.finUntil)
		} else {
			// The writer sets the deadline when it half-closes.
			_ = s.conn.SetReadDeadline(time.Time{})
		}
		s.lmu.Unlock()
		body, err := s.conn.ReadFrame()
		if err != nil {
			if s.parkCut(err) {
				continue // the idle timer cut the read just before the close point
			}
			break
		}
		s.countIn(len(body), time.Now())
		s.answerClosed(body)
	}
	s.late().Close()
	<-s.writerDone
	if !inputOK && !s.aborted.Load() {
		if d, ok := s.conn.(transport.InputDiscarder); ok {
			_ = d.DiscardInput(time.Now().Add(s.m.opts.CloseLinger))
		}
	}
	s.conn.Close()
}

// answerClosed handles a frame read after the close point: a request gets
// ErrorCode ServerDraining (exactly one answer), anything else is dropped.
func (s *Session) answerClosed(body []byte) {
	h, _, err := protocol.ParseRequest(body, s.m.opts.RequestHeader)
	if err != nil || h.MsgSeq == 0 {
		return
	}
	// Only requests need answers: they keep the answering phase open.
	s.lmu.Lock()
	s.lastIn = time.Now()
	s.lmu.Unlock()
	n := s.intern(h.MsgID)
	_ = s.enqueue(true, func(dst []byte) ([]byte, error) {
		return protocol.AppendFull(dst, protocol.Header{MsgSeq: h.MsgSeq, StageID: h.StageID, ErrorCode: protocol.ServerDraining}, n.reply, nil)
	})
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
			s.Close(HandlerPanic)
		}
	}()
	fn()
	return true
}

// countIn counts one inbound frame.
func (s *Session) countIn(bodyLen int, now time.Time) {
	s.lastActive.Store(now.UnixNano())
	s.ks.packetsIn.Add(1)
	s.ks.bytesIn.Add(uint64(bodyLen + protocol.LengthSize))
	if obs := s.m.opts.Observer; obs != nil {
		obs.PacketReceived(bodyLen + protocol.LengthSize)
	}
}

// readState is how readLoop ended.
type readState uint8

const (
	readClosing readState = iota // at the close point, input still parses: linger reads on
	readFailed                   // the input failed or no longer parses
	readParked                   // the reader parked: another goroutine goes on
	readHop                      // the reader goes on on a fresh goroutine (see frame)
)

// readLoop reads and dispatches frames until the connection fails, the
// session reaches its close point, or the reader parks. Frames are handed to
// frame by the connection's own loop when it has one (transport.FramePump:
// a plain TCP socket is then read without the read(2) that finds nothing),
// else by ReadFrame in a loop.
func (s *Session) readLoop() readState {
	defer func() {
		if s.held {
			s.flushHeld()
			s.held = false
		}
	}()
	for {
		if s.isClosing() {
			return readClosing
		}
		if !s.setDeadline() {
			return readFailed
		}
		err := transport.PumpFrames(s.conn, (*frameSink)(s), s.idleWatched)
		if err == nil {
			return s.stop // frame said stop
		}
		if s.parkCut(err) {
			// Cut short by the idle timer, not by the idle deadline
			// (heartbeating sessions check theirs here).
			deadline := s.idleDeadline
			s.readDeadline = true
			if !s.heartbeating.Load() || time.Now().Before(deadline) {
				if s.held {
					s.flushHeld()
					s.held = false
				}
				if s.park() {
					return readParked
				}
				continue
			}
		}
		s.readFailed(err)
		return readFailed
	}
}

// setDeadline sets the read deadline for the next read (reader goroutine).
// The idle deadline applies to sessions that have shown they heartbeat; the
// others are watched by watchLiveness. A parked read keeps the deadline it
// had. It reports false, having closed the session, when the deadline
// cannot be set.
func (s *Session) setDeadline() bool {
	var deadline time.Time
	if s.heartbeating.Load() {
		if !s.keepDeadline {
			s.idleDeadline = time.Now().Add(s.m.opts.HeartbeatTimeout)
		}
		deadline = s.idleDeadline
	}
	s.keepDeadline = false
	// No deadline before and none now: nothing to change (the common case
	// of a client that does not heartbeat).
	if deadline.IsZero() && !s.readDeadline {
		return true
	}
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		s.Close(ReadError)
		return false
	}
	s.readDeadline = !deadline.IsZero()
	return true
}

// frameSink is the session as the transport's frame handler (reader
// goroutine): a conversion, not an object of its own.
type frameSink Session

// Frame implements transport.FrameHandler.
func (f *frameSink) Frame(body []byte) bool { return (*Session)(f).frame(body) }

// frame handles one frame read (reader goroutine) and reports whether to go
// on reading; when not, s.stop says how the loop ends.
func (s *Session) frame(body []byte) bool {
	now := time.Now()
	s.countIn(len(body), now)
	// A Close from another goroutine may have come while reading: such a
	// packet never reaches the application.
	if s.isClosing() {
		s.answerClosed(body)
		s.stop = readClosing
		return false
	}
	// While more frames are buffered, replies are held, so the replies to
	// frames that arrived together leave in one write (as a plain server
	// answers one read with one write); the last frame's dispatch flushes,
	// or a timer after Options.ReplyHold (a slow handler in the batch).
	more := s.fb != nil && s.fb.FrameBuffered()
	if more && !s.held {
		s.hold()
		s.held = true
	}
	ok := s.dispatch(body, now)
	if s.held && !more {
		s.flushHeld()
		s.held = false
	}
	// The packet's payload points into the read buffer: drop it, so an
	// idle session does not keep a large frame's buffer alive.
	s.pkt.Payload = nil
	if !ok || s.isClosing() {
		s.stop = readClosing
		return false
	}
	if s.hop {
		// Authenticated: go on reading on a fresh goroutine, whose stack
		// has not grown with the connection's set-up and authentication
		// (a goroutine's stack hardly ever shrinks back to its first
		// size), so that a session idle after its authentication holds
		// the smallest stack until it parks.
		s.hop = false
		s.stop = readHop
		return false
	}
	if !s.setDeadline() {
		s.stop = readFailed
		return false
	}
	return true
}

// hold starts holding replies (reader goroutine), with the timer that ends
// the hold after Options.ReplyHold; the timer is made on first use, so only
// sessions whose requests arrive together have one.
func (s *Session) hold() {
	s.out.Hold()
	if s.holdTimer == nil {
		s.holdTimer = time.AfterFunc(s.m.opts.ReplyHold, s.out.Flush)
		return
	}
	s.holdTimer.Reset(s.m.opts.ReplyHold)
}

// flushHeld ends a hold (reader goroutine).
func (s *Session) flushHeld() {
	s.holdTimer.Stop()
	s.out.Flush()
}

// readFailed maps a read error to a close reason. When the session was
// already closing, its reason stands.
func (s *Session) readFailed(err error) {
	var reason CloseReason
	switch {
	case errors.Is(err, protocol.ErrBudgetExceeded):
		reason = InboundBudgetExceeded
	case errors.Is(err, protocol.ErrFrameTooLarge):
		reason = FrameTooLarge
	case errors.Is(err, protocol.ErrMalformedFrame):
		reason = MalformedFrame
	case errors.Is(err, transport.ErrProtocol):
		reason = ProtocolError
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		reason = IdleTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), isConnReset(err):
		reason = ClientClosed
	default:
		reason = ReadError
	}
	if reason == InboundBudgetExceeded {
		s.m.stats.budgetExceeded.Add(1)
	}
	if s.setReason(reason) {
		if reason != ClientClosed {
			s.m.opts.Logger.Info("session closed on read", "session", s.id, "remote", s.remote.String(), "reason", reason.String(), "err", err)
		}
		s.startClosing()
	}
}

// charge takes one packet and size bytes from the session's limits and
// reports whether they were within them. It runs on the reader goroutine.
func (s *Session) charge(size int, now time.Time) bool {
	ok := true
	if s.limiter != nil && !s.limiter.AllowN(now, 1) { // the packet's clock read: no second one
		ok = false
	}
	if s.byteLimiter != nil {
		// A frame larger than the burst would never fit: charge the burst.
		if !s.byteLimiter.AllowN(now, min(size, s.byteBurst)) {
			ok = false
		}
	}
	return ok
}

// violation counts one packet over the rate limit and reports whether the
// session must close (MaxRateViolations consecutive violations).
func (s *Session) violation() bool {
	s.m.stats.rateLimited.Add(1)
	s.rateViolations++
	return s.rateViolations >= s.m.opts.MaxRateViolations
}

// controlFrame charges a WebSocket control frame (ping or pong) the
// transport consumed to the session's rate limits; sustained abuse closes
// the session RateLimited. It does not fail the read: the WebSocket stays
// readable, so the lingering close can still read the peer's Close frame.
func (s *Session) controlFrame(size int) error {
	now := time.Now()
	s.lastActive.Store(now.UnixNano())
	if s.isClosing() {
		return nil
	}
	if s.charge(size, now) {
		s.rateViolations = 0
		return nil
	}
	if s.violation() {
		s.m.opts.Logger.Info("session rate limited (control frames)", "session", s.id, "remote", s.remote.String())
		s.Close(RateLimited)
	}
	return nil
}

// dispatch handles one frame; it returns false when the session must stop reading.
func (s *Session) dispatch(body []byte, now time.Time) bool {
	m := s.m
	h, payload, err := protocol.ParseRequest(body, m.opts.RequestHeader)
	if err != nil {
		s.protocolViolation(MalformedHeader, err)
		return false
	}
	n := s.intern(h.MsgID)
	p := &s.pkt
	*p = Packet{MsgID: n.id, MsgSeq: h.MsgSeq, StageID: h.StageID, replyID: n.reply}

	size := len(body)
	if h.OriginalSize > 0 {
		size += int(h.OriginalSize) // decompressed bytes count too
	}
	if !s.charge(size, now) {
		return s.overLimit(p)
	}
	s.rateViolations = 0

	if h.OriginalSize > 0 {
		return s.dispatchCompressed(p, payload, int(h.OriginalSize))
	}
	p.Payload = payload
	return s.deliver(p, now)
}

// overLimit answers a packet over the session's rate limits and reports
// whether the session goes on (MaxRateViolations in a row close it).
func (s *Session) overLimit(p *Packet) bool {
	if s.violation() {
		s.m.opts.Logger.Info("session rate limited", "session", s.id, "remote", s.remote.String())
		if p.IsRequest() {
			_ = s.Reply(p, protocol.RateLimitExceeded, nil)
		}
		s.Close(RateLimited)
		return false
	}
	if p.IsRequest() {
		_ = s.Reply(p, protocol.RateLimitExceeded, nil)
	}
	return true
}

// dispatchCompressed decompresses an LZ4 request payload, then delivers the
// packet; the buffer is given back once it has been handled.
func (s *Session) dispatchCompressed(p *Packet, payload []byte, size int) bool {
	payload, release, err := s.decompress(payload, size)
	if err != nil {
		if errors.Is(err, protocol.ErrBudgetExceeded) {
			s.m.stats.budgetExceeded.Add(1)
			s.protocolViolation(InboundBudgetExceeded, err)
		} else {
			s.protocolViolation(BadCompression, err)
		}
		return false
	}
	defer release()
	p.Payload = payload
	var at time.Time
	if s.m.opts.Observer != nil {
		at = time.Now() // the handler's time starts after the decompression
	}
	return s.deliver(p, at)
}

// deliver hands a parsed, charged packet to the heartbeat, the auth gate or
// the application. at is the packet's clock read, where the handler's time
// (Observer.HandlerDone) starts: one clock read per packet less.
func (s *Session) deliver(p *Packet, at time.Time) bool {
	m := s.m

	if p.MsgID == m.opts.HeartbeatMsgID {
		return s.heartbeat(p)
	}
	if m.isAuthMsgID(p.MsgID) {
		return s.authenticate(p)
	}
	if !s.authenticated.Load() {
		return s.unauthenticated(p)
	}
	ok := s.guard("OnPacket", p, func() { m.opts.Handler.OnPacket(s, p) })
	if obs := m.opts.Observer; obs != nil {
		obs.HandlerDone(time.Since(at))
	}
	return ok
}

// heartbeat answers a heartbeat; from now on the idle deadline applies.
func (s *Session) heartbeat(p *Packet) bool {
	s.heartbeating.Store(true)
	_ = s.send(p.MsgID, p.MsgSeq, p.StageID, protocol.Success, nil)
	return true
}

// unauthenticated refuses an application packet before authentication:
// the request is answered NotAuthenticated and the session closes.
func (s *Session) unauthenticated(p *Packet) bool {
	if p.IsRequest() {
		_ = s.Reply(p, protocol.NotAuthenticated, nil)
	}
	s.protocolViolation(Unauthenticated, fmt.Errorf("%q before authentication", p.MsgID))
	return false
}

// decompress decodes an LZ4 request payload into a buffer from the manager's
// pool, after taking its size from the inbound budget. release gives both
// back once the packet has been handled.
func (s *Session) decompress(src []byte, size int) ([]byte, func(), error) {
	m := s.m
	if size <= 0 || size > m.opts.MaxPacketSize {
		return nil, nil, fmt.Errorf("%w: OriginalSize %d not in 1..%d", protocol.ErrBadCompression, size, m.opts.MaxPacketSize)
	}
	if !m.opts.InboundBudget.Acquire(size) {
		return nil, nil, fmt.Errorf("decompress %d bytes: %w", size, protocol.ErrBudgetExceeded)
	}
	bp := m.decompPool.Get().(*[]byte)
	out, err := protocol.DecompressPayload((*bp)[:0], src, size, m.opts.MaxPacketSize)
	release := func() {
		m.opts.InboundBudget.Release(size)
		if cap(out) > cap(*bp) {
			*bp = out[:0]
		}
		m.decompPool.Put(bp)
	}
	if err != nil {
		release()
		return nil, nil, err
	}
	return out, release, nil
}

// authenticate runs the auth gate for one authenticate request. On an
// authenticated session it authenticates again, as the official server does:
// the same account is fine, another account rebinds the session.
func (s *Session) authenticate(p *Packet) bool {
	m := s.m
	res := s.authenticateWith(p)
	if res.panicked {
		return false // guard answered and closed the session
	}
	replyID := res.ReplyMsgID
	if replyID == "" {
		replyID = p.ReplyMsgID()
	}
	if res.AccountID == "" && res.ErrorCode == protocol.AlreadyAuthenticated && s.authenticated.Load() {
		// The application refuses a second authentication: not a failure.
		_ = s.ReplyAs(p, replyID, res.ErrorCode, res.ReplyPayload)
		return true
	}
	if res.AccountID == "" {
		m.stats.authFailed.Add(1)
		s.authAttempts++
		code := res.ErrorCode
		if code == protocol.Success {
			code = protocol.AuthenticationFailed
		}
		// Charge the address before answering, so a client that reconnects
		// on the answer already meets its cool-down.
		m.authFailed(s.remote)
		_ = s.ReplyAs(p, replyID, code, res.ReplyPayload)
		if s.authAttempts >= m.opts.MaxAuthAttempts {
			m.opts.Logger.Info("session closed after failed authentication", "session", s.id, "remote", s.remote.String(), "attempts", s.authAttempts)
			s.Close(AuthFailed)
			return false
		}
		return true
	}
	old, ok := m.bind(s, res.AccountID)
	if !ok {
		// The session reached its close point (auth timeout, drain, kick)
		// while the application decided: it must not take the account.
		_ = s.ReplyAs(p, replyID, protocol.ServerDraining, nil)
		return false
	}
	s.authTimer.Stop()
	s.conn.SetReadLimit(m.opts.MaxPacketSize)
	s.hop = s.detached
	if old != nil {
		m.opts.Logger.Info("session superseded", "account", res.AccountID, "old", old.id, "new", s.id)
		old.kick(Superseded.String(), Superseded)
	}
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
		s.startClosing()
	}
}

// intern returns stable strings for a message name and its reply name,
// without allocating for names already in the manager's table.
func (s *Session) intern(b []byte) names {
	// A client mostly sends one kind of packet after another: the last
	// names, on the session's own line, save the table lookup.
	if len(b) > 0 && string(b) == s.lastNames.id {
		return s.lastNames
	}
	s.lastNames = s.m.names.intern(b)
	return s.lastNames
}

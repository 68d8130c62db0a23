// Package rawecho is the baseline that playhouse-bench compares the session
// engine with: the smallest plain Go server that speaks the PlayHouse framing
// (protocol.md sections 1 and 2) well enough to serve the benchmark clients.
//
// Per TCP connection it holds one goroutine and one 4 KiB read buffer (grown
// only while a larger frame is being read); replies to the frames of one read
// are collected in a pooled buffer and written with one Write. Per WebSocket
// connection it holds the goroutine that ran the gorilla upgrade, gorilla's
// default buffers and the same 4 KiB message buffer; each reply is one binary
// message.
//
// It understands just enough: every request (MsgSeq > 0) is answered with
// ErrorCode 0, the reply MsgId (protocol.ReplyMsgID) and the request's payload,
// so AuthenticateRequest, EchoRequest and JoinStageRequest all succeed; a
// JoinStageRequest also places the connection in the request's stage (its
// reply carries no payload); a
// heartbeat is answered; any other one-way packet is pushed to the other
// members of the sender's stage by writing the same frame to each member's
// socket in a plain loop, on the sender's goroutine. There is no
// authentication check, no limit other than MaxPacketSize, no idle timeout
// and no lingering close: it is a yardstick, not a server to deploy.
package rawecho

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// readBuffer is the per-connection read buffer.
const readBuffer = 4 << 10

// Message names the baseline treats specially.
const (
	heartbeatMsgID = "@Heart@Beat@"
	joinStageMsgID = "JoinStageRequest"
)

// Server is a baseline echo/relay server. The zero value is not usable; call New.
type Server struct {
	maxPacket int
	outPool   sync.Pool // *[]byte reply batches
	upgrader  websocket.Upgrader

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[*peer]struct{}
	stages map[int64]map[*peer]struct{}
	wg     sync.WaitGroup
}

// New returns a server that accepts frame bodies of at most maxPacketSize
// bytes (<= 0: protocol.DefaultMaxPacketSize).
func New(maxPacketSize int) *Server {
	if maxPacketSize <= 0 {
		maxPacketSize = protocol.DefaultMaxPacketSize
	}
	return &Server{
		maxPacket: maxPacketSize,
		outPool:   sync.Pool{New: func() any { b := make([]byte, 0, readBuffer); return &b }},
		upgrader:  websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
		lns:       map[net.Listener]struct{}{},
		conns:     map[*peer]struct{}{},
		stages:    map[int64]map[*peer]struct{}{},
	}
}

// peer is one connection: a raw socket or a WebSocket.
type peer struct {
	wmu   sync.Mutex // serialises writes: the peer's own replies and broadcasts
	conn  net.Conn   // TCP, nil for WebSocket
	ws    *websocket.Conn
	stage int64 // guarded by Server.mu
}

// write sends frames (whole frames, length prefixes included). On a
// WebSocket each frame is one binary message.
func (p *peer) write(frames []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.conn != nil {
		_, err := p.conn.Write(frames)
		return err
	}
	for len(frames) >= protocol.LengthSize {
		n := protocol.LengthSize + int(binary.LittleEndian.Uint32(frames))
		if err := p.ws.WriteMessage(websocket.BinaryMessage, frames[:n]); err != nil {
			return err
		}
		frames = frames[n:]
	}
	return nil
}

func (p *peer) close() {
	if p.conn != nil {
		_ = p.conn.Close()
	} else {
		_ = p.ws.Close()
	}
}

// Count returns the number of open connections.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) add(p *peer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[p] = struct{}{}
	return true
}

func (s *Server) remove(p *peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, p)
	s.leaveLocked(p)
}

func (s *Server) leaveLocked(p *peer) {
	if m := s.stages[p.stage]; m != nil {
		delete(m, p)
		if len(m) == 0 {
			delete(s.stages, p.stage)
		}
	}
	p.stage = 0
}

func (s *Server) join(p *peer, stage int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaveLocked(p)
	if stage == 0 {
		return
	}
	m := s.stages[stage]
	if m == nil {
		m = map[*peer]struct{}{}
		s.stages[stage] = m
	}
	m[p] = struct{}{}
	p.stage = stage
}

// members returns the other members of p's stage.
func (s *Server) members(p *peer) []*peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.stage == 0 {
		return nil
	}
	out := make([]*peer, 0, len(s.stages[p.stage]))
	for m := range s.stages[p.stage] {
		if m != p {
			out = append(out, m)
		}
	}
	return out
}

// handle processes one frame body and appends any reply frame to out.
func (s *Server) handle(p *peer, body, out []byte) ([]byte, error) {
	h, payload, err := protocol.ParseRequest(body, protocol.CompactHeader)
	if err != nil {
		return out, fmt.Errorf("rawecho: %w", err)
	}
	switch {
	case h.MsgSeq > 0:
		name := replyName(h.MsgID)
		if string(h.MsgID) == joinStageMsgID {
			s.join(p, h.StageID)
			payload = nil
		}
		return protocol.AppendFull(out, protocol.Header{MsgSeq: h.MsgSeq, StageID: h.StageID}, name, payload)
	case string(h.MsgID) == heartbeatMsgID:
		return protocol.AppendFull(out, protocol.Header{StageID: h.StageID}, heartbeatMsgID, nil)
	default:
		members := s.members(p)
		if len(members) == 0 {
			return out, nil
		}
		frame, err := protocol.AppendFull(nil, protocol.Header{StageID: p.stage}, string(h.MsgID), payload)
		if err != nil {
			return out, fmt.Errorf("rawecho: %w", err)
		}
		for _, m := range members { // the plain loop the engine's broadcast is compared with
			_ = m.write(frame)
		}
		return out, nil
	}
}

// replyName avoids an allocation for the names the benchmarks use.
func replyName(msgID []byte) string {
	switch string(msgID) {
	case "EchoRequest":
		return "EchoReply"
	case "AuthenticateRequest":
		return "AuthenticateReply"
	case joinStageMsgID:
		return "JoinStageReply"
	}
	return protocol.ReplyMsgID(string(msgID))
}

// ServeTCP accepts connections on ln until ln is closed or Close is called.
// It returns nil after Close.
func (s *Server) ServeTCP(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("rawecho: accept: %w", err)
		}
		p := &peer{conn: c}
		if !s.add(p) {
			_ = c.Close()
			return nil
		}
		s.wg.Add(1)
		go s.serveTCP(p)
	}
}

func (s *Server) serveTCP(p *peer) {
	defer s.wg.Done()
	defer s.remove(p)
	defer p.close()
	buf := make([]byte, readBuffer)
	start, end := 0, 0
	for {
		n, rerr := p.conn.Read(buf[end:])
		end += n
		outp := s.outPool.Get().(*[]byte)
		out := (*outp)[:0]
		var err error
		for err == nil && end-start >= protocol.LengthSize {
			l := int(binary.LittleEndian.Uint32(buf[start:]))
			if l == 0 || l > s.maxPacket {
				err = fmt.Errorf("rawecho: frame length %d", l)
				break
			}
			if end-start < protocol.LengthSize+l {
				if protocol.LengthSize+l > len(buf)-start {
					// Make room: move the partial frame to the front and grow
					// only for a frame larger than the buffer.
					nb := buf
					if protocol.LengthSize+l > len(buf) {
						nb = make([]byte, protocol.LengthSize+l)
					}
					end = copy(nb, buf[start:end])
					start, buf = 0, nb
				}
				break
			}
			out, err = s.handle(p, buf[start+protocol.LengthSize:start+protocol.LengthSize+l], out)
			start += protocol.LengthSize + l
		}
		if len(out) > 0 && err == nil {
			err = p.write(out)
		}
		*outp = out[:0]
		s.outPool.Put(outp)
		if start == end {
			start, end = 0, 0
			if len(buf) > readBuffer {
				buf = make([]byte, readBuffer) // a large frame has passed
			}
		} else if end == len(buf) {
			end = copy(buf, buf[start:end])
			start = 0
		}
		if err != nil || rerr != nil {
			return
		}
	}
}

// WebSocketHandler upgrades requests to WebSocket and serves the protocol
// over binary messages.
func (s *Server) WebSocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := s.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader has answered
		}
		p := &peer{ws: ws}
		if !s.add(p) {
			_ = ws.Close()
			return
		}
		s.wg.Add(1)
		s.serveWS(p)
	})
}

func (s *Server) serveWS(p *peer) {
	defer s.wg.Done()
	defer s.remove(p)
	defer p.close()
	p.ws.SetReadLimit(int64(s.maxPacket) + protocol.LengthSize)
	buf := make([]byte, readBuffer)
	for {
		mt, r, err := p.ws.NextReader()
		if err != nil || mt != websocket.BinaryMessage {
			return
		}
		msg := buf[:0]
		for {
			if len(msg) == cap(msg) {
				msg = append(msg, 0)[:len(msg)]
			}
			n, err := r.Read(msg[len(msg):cap(msg)])
			msg = msg[:len(msg)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
		}
		if cap(msg) <= readBuffer {
			buf = msg[:cap(msg)]
		}
		outp := s.outPool.Get().(*[]byte)
		out := (*outp)[:0]
		err = protocol.SplitFrames(msg, s.maxPacket, func(body []byte) error {
			var herr error
			out, herr = s.handle(p, body, out)
			return herr
		})
		if err == nil && len(out) > 0 {
			err = p.write(out)
		}
		*outp = out[:0]
		s.outPool.Put(outp)
		if err != nil {
			return
		}
	}
}

// Close stops every listener given to ServeTCP, closes every connection and
// waits for their goroutines. Listeners serving WebSocketHandler belong to
// the caller's http.Server.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		_ = ln.Close()
	}
	peers := make([]*peer, 0, len(s.conns))
	for p := range s.conns {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	for _, p := range peers {
		p.close()
	}
	s.wg.Wait()
}

package client

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// serverReq is a request as the fake server decoded it.
type serverReq struct {
	MsgID        string
	MsgSeq       uint16
	StageID      int64
	OriginalSize int32  // as sent; Payload is already decompressed
	Payload      []byte // owned copy
}

// fakeServer is a minimal PlayHouse server for tests: it accepts connections,
// reads requests in its configured header format, echoes heartbeats (and
// counts them) and hands every other request to handle.
type fakeServer struct {
	t      *testing.T
	ln     net.Listener
	format protocol.HeaderFormat
	// handle is called on the connection's read goroutine; nil means echo.
	handle func(sc *serverConn, req serverReq)
	// noHeartbeatEcho makes the server count heartbeats without answering.
	noHeartbeatEcho bool

	heartbeats atomic.Int64
	requests   atomic.Int64
	accepted   chan *serverConn
	reqs       chan serverReq // filled by the forward handler

	mu    sync.Mutex
	conns []*serverConn
	wg    sync.WaitGroup
}

// serverConn is one accepted connection; its writes are serialized.
type serverConn struct {
	net.Conn
	wmu sync.Mutex
}

type serverOption func(*fakeServer)

func withHandler(h func(sc *serverConn, req serverReq)) serverOption {
	return func(s *fakeServer) { s.handle = h }
}

// forwarding makes the server queue requests for the test (see forward).
func forwarding(s *fakeServer) { s.handle = s.forward }

func withFormat(f protocol.HeaderFormat) serverOption {
	return func(s *fakeServer) { s.format = f }
}

func withTLS(cfg *tls.Config) serverOption {
	return func(s *fakeServer) { s.ln = tls.NewListener(s.ln, cfg) }
}

func newFakeServer(t *testing.T, opts ...serverOption) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &fakeServer{
		t:        t,
		ln:       ln,
		accepted: make(chan *serverConn, 16),
		reqs:     make(chan serverReq, 1024),
	}
	for _, o := range opts {
		o(s)
	}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.shutdown)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) shutdown() {
	s.ln.Close()
	s.mu.Lock()
	for _, sc := range s.conns {
		sc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *fakeServer) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		sc := &serverConn{Conn: conn}
		s.mu.Lock()
		s.conns = append(s.conns, sc)
		s.mu.Unlock()
		select {
		case s.accepted <- sc:
		default:
		}
		s.wg.Add(1)
		go s.serve(sc)
	}
}

func (s *fakeServer) serve(sc *serverConn) {
	defer s.wg.Done()
	defer sc.Close()
	fr := protocol.NewFrameReader(sc, protocol.DefaultMaxPacketSize)
	for {
		body, err := fr.Next()
		if err != nil {
			return
		}
		h, payload, err := protocol.ParseRequest(body, s.format)
		if err != nil {
			s.t.Errorf("fake server: bad request: %v", err)
			return
		}
		req := serverReq{MsgID: string(h.MsgID), MsgSeq: h.MsgSeq, StageID: h.StageID, OriginalSize: h.OriginalSize}
		if h.OriginalSize > 0 {
			req.Payload, err = protocol.DecompressPayload(nil, payload, int(h.OriginalSize), protocol.DefaultMaxPacketSize)
			if err != nil {
				s.t.Errorf("fake server: bad compressed request: %v", err)
				return
			}
		} else {
			req.Payload = bytes.Clone(payload)
		}
		if req.MsgID == DefaultHeartbeatMsgID && req.MsgSeq == 0 {
			s.heartbeats.Add(1)
			if !s.noHeartbeatEcho {
				_ = sc.send(req.MsgID, 0, req.StageID, 0, nil)
			}
			continue
		}
		s.requests.Add(1)
		if s.handle == nil {
			echo(sc, req)
		} else {
			s.handle(sc, req)
		}
	}
}

// waitConn returns the next accepted connection.
func (s *fakeServer) waitConn() *serverConn {
	s.t.Helper()
	select {
	case sc := <-s.accepted:
		return sc
	case <-time.After(5 * time.Second):
		s.t.Fatal("fake server: no connection accepted")
		return nil
	}
}

// nextReq returns the next request queued by the forward handler.
func (s *fakeServer) nextReq() serverReq {
	s.t.Helper()
	select {
	case r := <-s.reqs:
		return r
	case <-time.After(5 * time.Second):
		s.t.Fatal("fake server: no request arrived")
		return serverReq{}
	}
}

// forward queues every request on s.reqs for the test to answer (or not):
// "swallow" and "reply after a delay the test controls".
func (s *fakeServer) forward(_ *serverConn, req serverReq) {
	s.reqs <- req
}

func echo(sc *serverConn, req serverReq) {
	_ = sc.send(protocol.ReplyMsgID(req.MsgID), req.MsgSeq, req.StageID, 0, req.Payload)
}

// send writes a full-header packet with a raw payload.
func (sc *serverConn) send(msgID string, seq uint16, stageID int64, code protocol.ErrorCode, payload []byte) error {
	frame, err := protocol.AppendFull(nil, protocol.Header{MsgSeq: seq, StageID: stageID, ErrorCode: code}, msgID, payload)
	if err != nil {
		return err
	}
	return sc.writeRaw(frame)
}

// sendCompressed writes a full-header packet whose payload is one LZ4 block.
func (sc *serverConn) sendCompressed(msgID string, seq uint16, stageID int64, payload []byte) error {
	comp := protocol.Compressor{Threshold: 1}
	block, orig := comp.Compress(payload)
	if orig == 0 {
		return fmt.Errorf("payload of %d bytes did not compress", len(payload))
	}
	frame, err := protocol.AppendFull(nil, protocol.Header{MsgSeq: seq, StageID: stageID, OriginalSize: orig}, msgID, block)
	if err != nil {
		return err
	}
	return sc.writeRaw(frame)
}

func (sc *serverConn) writeRaw(b []byte) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	_, err := sc.Write(b)
	return err
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// clientGoroutines returns the stacks of goroutines running Client methods.
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("client.(*Client).")) {
			out = append(out, string(g))
		}
	}
	return out
}

// errorsIs is errors.Is with a readable failure.
func requireErrorIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v does not wrap %v", err, target)
	}
}

var _ io.Closer = (*serverConn)(nil)

package adversarial

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// sized answers every request with a reply of its payload's length in
// KiB, after a 16-byte push when push is set. Requests stay small, so the
// inbound rate limits never matter.
type sized struct{ push bool }

func (sized) OnConnect(*session.Session) error { return nil }
func (sized) Authenticate(_ *session.Session, p *session.Packet) session.AuthResult {
	return session.AuthResult{AccountID: string(p.Payload)}
}
func (sized) OnDisconnect(*session.Session, session.CloseReason) {}
func (h sized) OnPacket(s *session.Session, p *session.Packet) {
	if h.push {
		_ = s.Push("Tick", 0, make([]byte, 16))
	}
	_ = s.Reply(p, 0, bytes.Repeat([]byte{7}, len(p.Payload)<<10))
}

// Issue 7 point 5: a 16-byte push followed by a legal 1.5 MiB reply is not
// a slow consumer, with the default limits.
func TestPushThenLargeReplyIsNotSlow(t *testing.T) {
	e := startWith(t, sized{push: true}, nil)
	for i := range 5 {
		c := dialFrom(t, "127.0.0.2", e.addr(transport.KindTCP))
		f := newFrames(t, c)
		f.auth("big" + itoa(uint64(i)))
		f.send("BigRequest", 2, make([]byte, 1536)) // 1.5 MiB reply
		if h, _ := f.recv(); string(h.MsgID) != "Tick" {
			t.Fatalf("first packet %q", h.MsgID)
		}
		h, p := f.recv()
		if h.MsgSeq != 2 || len(p) != 1536<<10 {
			t.Fatalf("reply %+v with %d bytes", h, len(p))
		}
		c.Close()
	}
	if n := e.closed(session.SlowConsumer); n != 0 {
		t.Fatalf("%d sessions closed SlowConsumer", n)
	}
}

// Issue 7 point 5: three 1 MiB replies to three requests in flight reach a
// client that reads at a normal pace, every time.
func TestThreeLargeRepliesInFlight(t *testing.T) {
	e := startWith(t, sized{}, nil)
	for round := range 8 {
		c := dialFrom(t, "127.0.0.2", e.addr(transport.KindTCP))
		f := newFrames(t, c)
		f.auth("three" + itoa(uint64(round)))
		for seq := uint16(2); seq < 5; seq++ {
			f.send("BigRequest", seq, make([]byte, 1024)) // 1 MiB reply
		}
		seen := map[uint16]bool{}
		for range 3 {
			h, p := f.recv()
			if h.ErrorCode != 0 || len(p) != 1<<20 {
				t.Fatalf("round %d: reply %+v with %d bytes", round, h, len(p))
			}
			seen[h.MsgSeq] = true
		}
		if len(seen) != 3 {
			t.Fatalf("round %d: replies %v", round, seen)
		}
		c.Close()
	}
	if n := e.closed(session.SlowConsumer); n != 0 {
		t.Fatalf("%d sessions closed SlowConsumer", n)
	}
}

// A client that never reads is cut as a slow consumer (by the pending
// bound or the no-progress deadline), and nothing else is held for it.
func TestNeverReadingClientIsCut(t *testing.T) {
	e := startWith(t, sized{}, func(c *config.Config) { c.Limits.WriteTimeout = config.D(time.Second) })
	c := dialFrom(t, "127.0.0.2", e.addr(transport.KindTCP))
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10)
	}
	f := newFrames(t, c)
	f.auth("sleeper")
	go func() {
		for seq := uint16(2); seq < 40; seq++ { // 38 replies of 1 MiB
			b, _ := protocol.AppendRequest(nil, "BigRequest", seq, 0, make([]byte, 1024))
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	testutil.WaitFor(t, "SlowConsumer close", func() bool { return e.closed(session.SlowConsumer) == 1 })
}

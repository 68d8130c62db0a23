package session

import (
	"testing"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// A panicking handler ends only its own session, with a typed reason; the
// client of a request gets ErrorCode InternalError first.
func TestHandlerPanicIsContained(t *testing.T) {
	h, _ := newHarness(t, Options{})
	victim := h.dial()
	vs := h.auth(victim, "victim")
	other := h.dial()
	h.auth(other, "other")

	victim.send("PanicRequest", 5, 0, nil)
	if r := victim.read(); r.MsgSeq != 5 || r.ErrorCode != protocol.InternalError {
		t.Fatalf("reply to the panicking request = %+v", r)
	}
	victim.expectClosed()
	if got := h.waitReason(vs.ID()); got != HandlerPanic {
		t.Fatalf("reason = %s", got)
	}
	other.send("EchoRequest", 2, 0, []byte("still fine"))
	if r := other.read(); string(r.Payload) != "still fine" {
		t.Fatalf("other session = %+v", r)
	}

	// A panic in Authenticate: the same outcome.
	rc := h.dial()
	rc.send("AuthenticateRequest", 1, 0, []byte("panic"))
	if r := rc.read(); r.ErrorCode != protocol.InternalError || r.MsgSeq != 1 {
		t.Fatalf("auth panic reply = %+v", r)
	}
	rc.expectClosed()
	waitFor(t, "two HandlerPanic closes", func() bool { return h.mgr.Stats().Closed[HandlerPanic] == 2 })
}

func TestPanicInConnectAndDisconnect(t *testing.T) {
	h, _ := newHarness(t, Options{Handler: HandlerFuncs{
		Connect: func(s *Session) error {
			if s.ID() == 1 {
				panic("connect bug")
			}
			return nil
		},
		Auth:       func(*Session, *Packet) AuthResult { return AuthResult{AccountID: "a"} },
		Disconnect: func(*Session, CloseReason) { panic("disconnect bug") },
	}})
	first := h.dial()
	first.expectClosed()
	waitFor(t, "the OnConnect panic counted", func() bool { return h.mgr.Stats().Closed[HandlerPanic] == 1 })
	// The next session works, and its OnDisconnect panic is contained too.
	second := h.dial()
	h.auth(second, "a")
	second.c.Close()
	waitFor(t, "the second session to end", func() bool { return h.mgr.Stats().Closed[ClientClosed] == 1 })
	third := h.dial()
	h.auth(third, "a")
}

package session

import (
	"context"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// TestNameTableSharedAndBounded checks that sessions of one manager share
// interned message names (one table, not one per session) and that random
// names cannot grow the table past maxInterned.
func TestNameTableSharedAndBounded(t *testing.T) {
	m, err := NewManager(Options{Handler: echoHandler{}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	a, b := m.newSession(nullConn{}), m.newSession(nullConn{})
	na, nb := a.intern([]byte("MoveRequest")), b.intern([]byte("MoveRequest"))
	if na.id != "MoveRequest" || na.reply != "MoveReply" {
		t.Fatalf("interned %+v", na)
	}
	if unsafe.StringData(na.id) != unsafe.StringData(nb.id) || unsafe.StringData(na.reply) != unsafe.StringData(nb.reply) {
		t.Fatal("two sessions got separate copies of the same name")
	}
	for i := range 3 * maxInterned {
		n := a.intern([]byte("Junk" + strconv.Itoa(i) + "Request"))
		if want := "Junk" + strconv.Itoa(i) + "Reply"; n.reply != want {
			t.Fatalf("reply name %q, want %q", n.reply, want)
		}
	}
	if got := m.names.size(); got > maxInterned {
		t.Fatalf("table holds %d names, bound %d", got, maxInterned)
	}
	if a.intern([]byte("MoveRequest")).id != "MoveRequest" {
		t.Fatal("known name lost")
	}
}

// A session remembers the names of its last packet: alternating names get
// their own replies, and a name repeated after the table is full costs no
// allocation per packet (it did before the session kept its last names).
func TestInternLastNames(t *testing.T) {
	m, err := NewManager(Options{Handler: echoHandler{}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s := m.newSession(nullConn{})
	for i := range 6 {
		id, reply := "MoveRequest", "MoveReply"
		if i%3 == 2 {
			id, reply = "ChatRequest", "ChatReply"
		}
		if n := s.intern([]byte(id)); n.id != id || n.reply != reply {
			t.Fatalf("packet %d: names %+v, want %s/%s", i, n, id, reply)
		}
	}
	for i := range maxInterned {
		m.names.intern([]byte("Fill" + strconv.Itoa(i) + "Request"))
	}
	late := []byte("LateRequest")
	if n := s.intern(late); n.reply != "LateReply" {
		t.Fatalf("names %+v", n)
	}
	if raceEnabled {
		return // the race detector allocates
	}
	if n := totalAllocs(100, func() { s.intern(late) }); n != 0 {
		t.Fatalf("100 packets named outside the full table allocated %d times, want 0", n)
	}
}

// An idle authenticated session keeps no writer goroutine and no outbound
// buffer once its answers are written; the next request still gets its
// answer, in order.
func TestIdleSessionHoldsNoWriter(t *testing.T) {
	h, _ := newHarness(t, Options{})
	rc := h.dial()
	s := h.auth(rc, "idle")
	waitFor(t, "writer gone after the auth reply", func() bool { return !s.out.Running() && s.out.Retained() == 0 })
	for i := range 3 {
		rc.send("EchoRequest", uint16(10+i), 0, []byte{byte(i)})
	}
	for i := range 3 {
		if r := rc.read(); r.MsgSeq != uint16(10+i) || r.Payload[0] != byte(i) {
			t.Fatalf("answer %d: %+v", i, r)
		}
	}
	waitFor(t, "writer gone after the echoes", func() bool { return !s.out.Running() && s.out.Retained() == 0 })
}

// Go returns at once and runs the session on a goroutine of its own; Wait
// counts the session from the moment Go returns.
func TestManagerGoReturnsAtOnce(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	m, err := NewManager(Options{Logger: quietLogger(), Handler: HandlerFuncs{Connect: func(*Session) error {
		close(entered)
		<-release
		return nil
	}}})
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := loopbackPair(t)
	m.Go(transport.NewStreamConn(srv, transport.KindTCP, 0), nil) // returns while OnConnect blocks
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.Wait(ctx); err == nil {
		t.Fatal("Wait returned while the session started by Go was still in OnConnect")
	}
	<-entered
	close(release)
	waitFor(t, "session registered", func() bool { return m.Count() == 1 })
	cli.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), testTimeout)
	defer wcancel()
	if err := m.Wait(wctx); err != nil {
		t.Fatal(err)
	}
}

// Replies to requests that arrived together are held for one write, but a
// slow handler in the batch does not hold back the replies before it: they
// go out within ReplyHold while it runs.
func TestHeldReplyNotDelayedBySlowHandler(t *testing.T) {
	h, th := newHarness(t, Options{ReplyHold: 5 * time.Millisecond})
	rc := h.dial()
	h.auth(rc, "batch")
	// Two requests in one write: the echo's reply is held while the slow
	// request, buffered behind it, is dispatched.
	batch := frame(t, "EchoRequest", 2, 0, []byte("first"))
	batch = append(batch, frame(t, "SlowRequest", 3, 0, nil)...)
	rc.write(batch)
	select {
	case <-th.entered:
	case <-time.After(testTimeout):
		t.Fatal("slow handler not entered")
	}
	// The slow handler is still running: the first reply must arrive anyway.
	r := rc.read()
	if r.MsgSeq != 2 || string(r.Payload) != "first" {
		t.Fatalf("first reply = %+v", r)
	}
	close(th.release)
	if r := rc.read(); r.MsgSeq != 3 {
		t.Fatalf("second reply = %+v", r)
	}
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// connReq is a request with the connection it came on.
type connReq struct {
	sc  *serverConn
	req serverReq
}

// scripted makes the fake server queue every request, with its connection,
// on the returned channel for the test to answer (or not).
func scripted(ch chan connReq) serverOption {
	return withHandler(func(sc *serverConn, req serverReq) { ch <- connReq{sc, req} })
}

func nextConnReq(t *testing.T, ch chan connReq) connReq {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("fake server: no request arrived")
		return connReq{}
	}
}

func drainPayload(t *testing.T, token string, retryAfterMs int64) []byte {
	t.Helper()
	b, err := json.Marshal(drainNotice{ReconnectToken: token, RetryAfterMs: retryAfterMs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countingReconnect dials addr for a resume, failing the first failFirst
// calls, and counts the calls.
func countingReconnect(addr string, failFirst int64, calls *atomic.Int64) func(context.Context) (io.ReadWriteCloser, error) {
	return func(ctx context.Context) (io.ReadWriteCloser, error) {
		if n := calls.Add(1); n <= failFirst {
			return nil, fmt.Errorf("test: dial %d refused", n)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func nextEvent(t *testing.T, c *Client) Event {
	t.Helper()
	select {
	case ev, ok := <-c.Events():
		if !ok {
			t.Fatalf("Events closed (client error: %v)", c.Err())
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
		return Event{}
	}
}

type reqResult struct {
	r   *Response
	err error
}

func requestAsync(c *Client, msgID string, payload string) chan reqResult {
	ch := make(chan reqResult, 1)
	go func() {
		r, err := c.Request(context.Background(), msgID, 7, []byte(payload))
		ch <- reqResult{r, err}
	}()
	return ch
}

func waitResult(t *testing.T, ch chan reqResult) reqResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("request not answered")
		return reqResult{}
	}
}

// TestResumeResendsUnansweredAndDrainingRequests: a drained connection
// answers one request, answers another ServerDraining (past its close point)
// and leaves a third unanswered when it closes; the client reconnects,
// authenticates with the token and sends the last two again on the new
// connection. Each Request returns exactly one answer, a success.
func TestResumeResendsUnansweredAndDrainingRequests(t *testing.T) {
	reqs := make(chan connReq, 64)
	s := newFakeServer(t, scripted(reqs))
	var calls atomic.Int64
	c := dial(t, s, Options{HeartbeatInterval: -1, Reconnect: countingReconnect(s.addr(), 0, &calls)})
	first := s.waitConn()

	answered := requestAsync(c, "EchoRequest", "answered")
	draining := requestAsync(c, "EchoRequest", "draining")
	unanswered := requestAsync(c, "EchoRequest", "unanswered")
	got := map[string]connReq{}
	for range 3 {
		r := nextConnReq(t, reqs)
		if r.sc != first {
			t.Fatal("request on an unexpected connection")
		}
		got[string(r.req.Payload)] = r
	}
	echo(first, got["answered"].req)
	if err := first.send(DrainMsgID, 0, 0, 0, drainPayload(t, "token-1", 60_000)); err != nil {
		t.Fatal(err)
	}
	d := got["draining"].req
	if err := first.send("EchoReply", d.MsgSeq, d.StageID, protocol.ServerDraining, nil); err != nil {
		t.Fatal(err)
	}
	// The ServerDraining answer shows the close point has passed: the client
	// reconnects now rather than after retryAfterMs (60 s).
	second := s.waitConn()
	auth := nextConnReq(t, reqs)
	if auth.sc != second || auth.req.MsgID != DefaultAuthenticateMsgID || string(auth.req.Payload) != "token-1" || auth.req.StageID != 0 {
		t.Fatalf("resume authentication: %+v", auth.req)
	}
	// A request made while the client is between connections waits for the
	// new one.
	waiting := requestAsync(c, "EchoRequest", "waiting")
	eventually(t, 10*time.Second, "the request to wait for the new connection", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.parked) == 2 // it and the one answered ServerDraining
	})
	echo(second, auth.req)
	if ev := nextEvent(t, c); ev.Kind != EventResumed || ev.Attempts != 1 || ev.Err != nil {
		t.Fatalf("event %v", ev)
	}
	// Both are sent on the new connection; the one answered ServerDraining
	// keeps its MsgSeq.
	for range 2 {
		again := nextConnReq(t, reqs)
		if again.sc != second {
			t.Fatalf("%+v not on the new connection", again.req)
		}
		switch string(again.req.Payload) {
		case "draining":
			if again.req.MsgSeq != d.MsgSeq {
				t.Fatalf("resent with MsgSeq %d, want %d", again.req.MsgSeq, d.MsgSeq)
			}
		case "waiting":
		default:
			t.Fatalf("unexpected %+v", again.req)
		}
		echo(second, again.req)
	}
	// A new request goes to the new connection.
	fresh := requestAsync(c, "EchoRequest", "fresh")
	r := nextConnReq(t, reqs)
	if r.sc != second || string(r.req.Payload) != "fresh" {
		t.Fatalf("new request %+v not on the new connection", r.req)
	}
	echo(second, r.req)
	// The drained server closes (half-close, as it does after flushing): the
	// request it never answered is sent again.
	if err := first.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r = nextConnReq(t, reqs)
	if r.sc != second || string(r.req.Payload) != "unanswered" || r.req.MsgSeq != got["unanswered"].req.MsgSeq {
		t.Fatalf("resent %+v, want the unanswered request", r.req)
	}
	echo(second, r.req)

	for name, ch := range map[string]chan reqResult{"answered": answered, "draining": draining, "unanswered": unanswered, "waiting": waiting, "fresh": fresh} {
		res := waitResult(t, ch)
		if res.err != nil || res.r.ErrorCode != 0 || string(res.r.Payload) != name {
			t.Fatalf("%s: %+v %v", name, res.r, res.err)
		}
	}
	if n := c.ResentRequests(); n != 2 {
		t.Fatalf("ResentRequests = %d, want 2", n)
	}
	if n := c.DiscardedReplies(); n != 0 {
		t.Fatalf("DiscardedReplies = %d", n)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d reconnects, want 1", n)
	}
	select {
	case p := <-c.Pushes():
		t.Fatalf("push %s reached the application", p.MsgID)
	default:
	}
	if c.Err() != nil || c.RemoteAddr().String() != s.addr() {
		t.Fatalf("after resume: err %v, remote %v", c.Err(), c.RemoteAddr())
	}
	// Heartbeats and one-way packets use the new connection.
	if err := c.Send("Notify", 0, []byte("one-way")); err != nil {
		t.Fatal(err)
	}
	if r := nextConnReq(t, reqs); r.sc != second || r.req.MsgID != "Notify" {
		t.Fatalf("one-way packet %+v", r.req)
	}
	if _, err := c.Heartbeat(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TestResumeAfterRetryDelay: with nothing in flight, the client reconnects
// no earlier than retryAfterMs, uses the new connection from then on, and
// the drained connection closing later does not end the client.
func TestResumeAfterRetryDelay(t *testing.T) {
	s := newFakeServer(t) // echo
	c := dial(t, s, quiet)
	first := s.waitConn()
	if _, err := c.Authenticate(ctxT(t), "AuthenticateRequest", []byte("player-1")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := first.send(DrainMsgID, 0, 0, 0, drainPayload(t, "token-2", 100)); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, c)
	if ev.Kind != EventResumed {
		t.Fatalf("event %v", ev)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("resumed after %s, before retryAfterMs", waited)
	}
	s.waitConn()
	r, err := c.Request(ctxT(t), "EchoRequest", 0, []byte("after"))
	if err != nil || string(r.Payload) != "after" {
		t.Fatalf("request after resume: %+v %v", r, err)
	}
	// The drained connection stays the server's to close.
	first.Close()
	r, err = c.Request(ctxT(t), "EchoRequest", 0, []byte("still"))
	if err != nil || string(r.Payload) != "still" || c.Err() != nil {
		t.Fatalf("request after the old connection closed: %+v %v (client %v)", r, err, c.Err())
	}
}

// TestResumeDisabled: the application gets the @Drain@ push, as before, and
// the client does not reconnect.
func TestResumeDisabled(t *testing.T) {
	s := newFakeServer(t)
	var calls atomic.Int64
	c := dial(t, s, Options{HeartbeatInterval: -1, DisableResume: true, Reconnect: countingReconnect(s.addr(), 0, &calls)})
	sc := s.waitConn()
	payload := drainPayload(t, "token-3", 1)
	if err := sc.send(DrainMsgID, 0, 0, 0, payload); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-c.Pushes():
		if p.MsgID != DrainMsgID || string(p.Payload) != string(payload) {
			t.Fatalf("push %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("@Drain@ not delivered")
	}
	sc.Close()
	<-c.Done()
	if c.Err() != io.EOF {
		t.Fatalf("Err = %v, want io.EOF", c.Err())
	}
	c.Close() // waits for every goroutine: no resume can still be on its way
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d reconnects with resume disabled", n)
	}
	if _, ok := <-c.Events(); ok {
		t.Fatal("an event with resume disabled")
	}
}

// TestDrainWithoutTokenIsAPush: an unauthenticated session's notice has no
// token; there is nothing to resume, so the application gets it.
func TestDrainWithoutTokenIsAPush(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, quiet)
	sc := s.waitConn()
	if err := sc.send(DrainMsgID, 0, 0, 0, drainPayload(t, "", 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-c.Pushes():
		if p.MsgID != DrainMsgID {
			t.Fatalf("push %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("@Drain@ without a token not delivered")
	}
}

// TestResumeRefusedToken: a refused token ends the resume at once (no retry
// loop) with an error naming the cause, as an event and as Err; a request
// waiting for the new connection fails with it.
func TestResumeRefusedToken(t *testing.T) {
	reqs := make(chan connReq, 64)
	s := newFakeServer(t, scripted(reqs))
	var calls atomic.Int64
	c := dial(t, s, Options{HeartbeatInterval: -1, ResumeBackoff: time.Millisecond, Reconnect: countingReconnect(s.addr(), 0, &calls)})
	first := s.waitConn()
	pending := requestAsync(c, "EchoRequest", "in flight")
	nextConnReq(t, reqs)
	if err := first.send(DrainMsgID, 0, 0, 0, drainPayload(t, "stale-token", 1)); err != nil {
		t.Fatal(err)
	}
	first.Conn.(*net.TCPConn).CloseWrite()
	auth := nextConnReq(t, reqs)
	if string(auth.req.Payload) != "stale-token" {
		t.Fatalf("authentication %+v", auth.req)
	}
	if err := auth.sc.send("AuthenticateReply", auth.req.MsgSeq, 0, protocol.AuthenticationFailed, nil); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, c)
	if ev.Kind != EventResumeFailed || ev.Attempts != 1 {
		t.Fatalf("event %v", ev)
	}
	requireErrorIs(t, ev.Err, ErrResumeFailed)
	requireErrorIs(t, ev.Err, &ErrorCodeError{Code: protocol.AuthenticationFailed})
	<-c.Done()
	requireErrorIs(t, c.Err(), ErrResumeFailed)
	res := waitResult(t, pending)
	requireErrorIs(t, res.err, ErrResumeFailed)
	c.Close()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d reconnects after a refused token, want 1", n)
	}
	if _, err := c.Request(ctxT(t), "EchoRequest", 0, nil); !errors.Is(err, ErrResumeFailed) {
		t.Fatalf("request after a failed resume: %v", err)
	}
}

// TestResumeRetriesWithBackoff: failed connections are retried, a bounded
// number of times.
func TestResumeRetriesWithBackoff(t *testing.T) {
	s := newFakeServer(t)
	var calls atomic.Int64
	opts := Options{HeartbeatInterval: -1, ResumeAttempts: 4, ResumeBackoff: time.Millisecond, ResumeMaxBackoff: 4 * time.Millisecond}

	// Two failures, then success.
	opts.Reconnect = countingReconnect(s.addr(), 2, &calls)
	c := dial(t, s, opts)
	sc := s.waitConn()
	if err := sc.send(DrainMsgID, 0, 0, 0, drainPayload(t, "token-4", 0)); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, c); ev.Kind != EventResumed || ev.Attempts != 3 {
		t.Fatalf("event %v", ev)
	}
	s.waitConn() // the resumed connection
	if r, err := c.Request(ctxT(t), "EchoRequest", 0, []byte("x")); err != nil || string(r.Payload) != "x" {
		t.Fatalf("after resume: %+v %v", r, err)
	}

	// Every attempt fails: the resume gives up after ResumeAttempts.
	var failing atomic.Int64
	opts.Reconnect = countingReconnect(s.addr(), 1000, &failing)
	c2 := dial(t, s, opts)
	sc2 := s.waitConn()
	if err := sc2.send(DrainMsgID, 0, 0, 0, drainPayload(t, "token-5", 0)); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, c2)
	if ev.Kind != EventResumeFailed || ev.Attempts != 4 {
		t.Fatalf("event %v", ev)
	}
	requireErrorIs(t, ev.Err, ErrResumeFailed)
	<-c2.Done()
	c2.Close()
	if n := failing.Load(); n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
}

// TestDrainedConnTimeout: a drained connection the server never closes is
// closed by the client after DrainedConnTimeout; its unanswered request fails
// (it may have been handled, so it is not sent again).
func TestDrainedConnTimeout(t *testing.T) {
	reqs := make(chan connReq, 64)
	s := newFakeServer(t, scripted(reqs))
	c := dial(t, s, Options{HeartbeatInterval: -1, DrainedConnTimeout: 50 * time.Millisecond})
	first := s.waitConn()
	stuck := requestAsync(c, "EchoRequest", "stuck")
	nextConnReq(t, reqs)
	if err := first.send(DrainMsgID, 0, 0, 0, drainPayload(t, "token-6", 1)); err != nil {
		t.Fatal(err)
	}
	auth := nextConnReq(t, reqs)
	echo(auth.sc, auth.req)
	res := waitResult(t, stuck)
	requireErrorIs(t, res.err, ErrDrainedConnTimeout)
	if c.Err() != nil || c.ResentRequests() != 0 {
		t.Fatalf("client %v, resent %d", c.Err(), c.ResentRequests())
	}
}

// TestCloseDuringResume: Close while a resume waits (retryAfterMs) or while
// requests are parked ends everything, with no goroutine left.
func TestCloseDuringResume(t *testing.T) {
	eventually(t, 10*time.Second, "earlier tests' client goroutines to exit", func() bool { return len(clientGoroutines()) == 0 })
	reqs := make(chan connReq, 64)
	s := newFakeServer(t, scripted(reqs))
	var calls atomic.Int64
	// The reconnect blocks until the test lets it go (or the client ends).
	release := make(chan struct{})
	c := dial(t, s, Options{HeartbeatInterval: -1, Reconnect: func(ctx context.Context) (io.ReadWriteCloser, error) {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return nil, errors.New("released")
	}})
	first := s.waitConn()
	if err := first.send(DrainMsgID, 0, 0, 0, drainPayload(t, "token-7", 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the resume to dial", func() bool { return calls.Load() == 1 })
	// Between connections, a request waits for the new one.
	parked := requestAsync(c, "EchoRequest", "parked")
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	wg.Wait()
	res := waitResult(t, parked)
	requireErrorIs(t, res.err, ErrClosed)
	if _, ok := <-c.Events(); ok {
		t.Fatal("event after Close")
	}
	eventually(t, 10*time.Second, "client goroutines to exit after Close", func() bool { return len(clientGoroutines()) == 0 })
	close(release)
}

// TestResumeFollowsASecondDrain: the server the client resumed on drains
// too, even before answering the resume's authentication; the client follows
// that drain with the newer token.
func TestResumeFollowsASecondDrain(t *testing.T) {
	reqs := make(chan connReq, 64)
	s := newFakeServer(t, scripted(reqs))
	c := dial(t, s, quiet)
	first := s.waitConn()
	if err := first.send(DrainMsgID, 0, 0, 0, drainPayload(t, "token-a", 0)); err != nil {
		t.Fatal(err)
	}
	auth := nextConnReq(t, reqs)
	if string(auth.req.Payload) != "token-a" {
		t.Fatalf("first resume: %+v", auth.req)
	}
	if err := auth.sc.send(DrainMsgID, 0, 0, 0, drainPayload(t, "token-b", 0)); err != nil {
		t.Fatal(err)
	}
	echo(auth.sc, auth.req)
	auth2 := nextConnReq(t, reqs)
	if string(auth2.req.Payload) != "token-b" || auth2.sc == auth.sc {
		t.Fatalf("second resume: %+v", auth2.req)
	}
	echo(auth2.sc, auth2.req)
	for range 2 {
		if ev := nextEvent(t, c); ev.Kind != EventResumed {
			t.Fatalf("event %v", ev)
		}
	}
	res := requestAsync(c, "EchoRequest", "third")
	r := nextConnReq(t, reqs)
	if r.sc != auth2.sc {
		t.Fatal("request not on the latest connection")
	}
	echo(r.sc, r.req)
	if got := waitResult(t, res); got.err != nil || string(got.r.Payload) != "third" {
		t.Fatalf("%+v %v", got.r, got.err)
	}
}

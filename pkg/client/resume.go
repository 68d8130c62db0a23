package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// DrainMsgID is the server notice that the server is shutting down
// (protocol.md section 3): {"reconnectToken": "...", "retryAfterMs": N}.
const DrainMsgID = "@Drain@"

// drainNotice is the payload of an @Drain@ push.
type drainNotice struct {
	ReconnectToken string `json:"reconnectToken"`
	RetryAfterMs   int64  `json:"retryAfterMs"`
}

// EventKind says what an Event reports.
type EventKind int

const (
	// EventResumed: the client followed a drain onto a new connection, whose
	// session the server authenticated with the reconnect token (same
	// account and stage). Requests in flight were carried over.
	EventResumed EventKind = iota + 1
	// EventResumeFailed: the client could not follow a drain and has ended;
	// Event.Err (also Client.Err) wraps ErrResumeFailed and the cause.
	EventResumeFailed
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventResumed:
		return "Resumed"
	case EventResumeFailed:
		return "ResumeFailed"
	default:
		return fmt.Sprintf("EventKind(%d)", int(k))
	}
}

// Event reports what the client did on its own: following a drain. Read them
// from Client.Events.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// Attempts is how many connections the resume tried.
	Attempts int
	// RemoteAddr is the new connection's remote address (EventResumed), or
	// nil when the stream has none.
	RemoteAddr net.Addr
	// Err is why the resume failed (EventResumeFailed).
	Err error
}

// String describes the event.
func (e Event) String() string {
	if e.Err != nil {
		return fmt.Sprintf("%s after %d attempt(s): %v", e.Kind, e.Attempts, e.Err)
	}
	return fmt.Sprintf("%s after %d attempt(s) (remote %v)", e.Kind, e.Attempts, e.RemoteAddr)
}

// Events returns the channel of the client's own events: EventResumed after
// each drain it followed, EventResumeFailed when it could not (the client
// then ends; Err says why). Reading it is optional: when its buffer
// (Options.EventBuffer) is full the oldest event is dropped. It is closed
// after the client ends.
func (c *Client) Events() <-chan Event { return c.events }

// DroppedEvents reports how many events were dropped because Events was full.
func (c *Client) DroppedEvents() uint64 { return c.droppedEvents.Load() }

// emit delivers ev on Events, dropping the oldest event when full.
func (c *Client) emit(ev Event) {
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case <-c.events:
			c.droppedEvents.Add(1)
		default:
		}
	}
}

// followDrain takes over an @Drain@ notice received on l when the client can
// follow it (resume enabled, a way to reconnect, a token): it reports false
// when the notice should go to the application as a push instead.
func (c *Client) followDrain(l *link, r *Response) bool {
	if c.opts.DisableResume || c.opts.Reconnect == nil {
		return false
	}
	var n drainNotice
	if json.Unmarshal(r.Payload, &n) != nil || n.ReconnectToken == "" {
		return false // unauthenticated session: nothing to resume
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || l.drain != nil {
		return true
	}
	l.drain = &n
	// A notice on a link a resume is still authenticating is taken up by
	// that resume once it has switched to the link.
	if l == c.active && !c.resuming {
		c.resuming = true
		c.wg.Add(1)
		go c.resume(l)
	}
	return true
}

// resume follows the drain of l: it waits for the notice's retryAfterMs (or
// the server's close point, if that comes first), connects again,
// authenticates with the reconnect token, makes the new link the client's
// connection and sends the parked requests on it. It loops when the new link
// was itself drained meanwhile.
func (c *Client) resume(l *link) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		n := *l.drain
		c.mu.Unlock()
		delay := min(max(time.Duration(n.RetryAfterMs)*time.Millisecond, 0), c.opts.ResumeMaxDelay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.closing:
			t.Stop()
		case <-c.done:
			t.Stop()
			return
		}
		c.mu.Lock()
		if c.active == l {
			c.active = nil // from now on new requests wait for the new connection
		}
		c.mu.Unlock()

		nl, attempts, err := c.reconnect(n.ReconnectToken)
		if err != nil {
			if c.ctx.Err() != nil {
				return // closed meanwhile
			}
			err = fmt.Errorf("%w after %d attempt(s): %w", ErrResumeFailed, attempts, err)
			c.emit(Event{Kind: EventResumeFailed, Attempts: attempts, Err: err})
			c.end(err)
			return
		}
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return // end closed nl with the others
		}
		c.active, c.last = nl, nl
		close(c.linkUp)
		c.linkUp = make(chan struct{})
		again := nl.drain != nil
		c.resuming = again
		if !l.ended {
			old := l
			old.abandonTimer = time.AfterFunc(c.opts.DrainedConnTimeout, func() { c.abandon(old) })
		}
		c.mu.Unlock()
		c.emit(Event{Kind: EventResumed, Attempts: attempts, RemoteAddr: remoteAddr(nl.conn)})
		c.flushParked()
		if !again {
			return
		}
		l = nl
	}
}

// abandon closes a drained link the server has kept open too long after a
// resume; linkEnded fails its unanswered requests.
func (c *Client) abandon(l *link) {
	c.mu.Lock()
	if l.ended || c.err != nil {
		c.mu.Unlock()
		return
	}
	l.abandoned = true
	c.mu.Unlock()
	l.closeConn()
}

// reconnect tries up to ResumeAttempts connections, with backoff, and
// returns the first one authenticated with token. A refused token ends the
// attempts at once.
func (c *Client) reconnect(token string) (*link, int, error) {
	backoff := c.opts.ResumeBackoff
	var last error
	attempt := 0
	for attempt < c.opts.ResumeAttempts {
		attempt++
		nl, err := c.tryResume(token)
		if err == nil {
			return nl, attempt, nil
		}
		last = err
		if errors.Is(err, &ErrorCodeError{Code: protocol.AuthenticationFailed}) || c.ctx.Err() != nil {
			break
		}
		if attempt == c.opts.ResumeAttempts {
			break
		}
		wait := backoff + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.done:
			t.Stop()
			return nil, attempt, last
		}
		backoff = min(backoff*2, c.opts.ResumeMaxBackoff)
	}
	return nil, attempt, last
}

// tryResume opens one connection and authenticates it with token, within
// RequestTimeout (or DefaultRequestTimeout when that is off).
func (c *Client) tryResume(token string) (*link, error) {
	limit := c.opts.RequestTimeout
	if limit <= 0 {
		limit = DefaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(c.ctx, limit)
	defer cancel()
	conn, err := c.opts.Reconnect(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconnect: %w", err)
	}
	nl := c.newLink(conn)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		conn.Close()
		return nil, fmt.Errorf("connection ended: %w", err)
	}
	c.links[nl] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	go c.readLoop(nl)

	fail := func(err error) (*link, error) {
		nl.closeConn() // its reader ends the link
		return nil, err
	}
	cl, err := c.allocCall(c.opts.AuthenticateMsgID, 0, []byte(token), true)
	if err != nil {
		return fail(fmt.Errorf("authenticate with reconnect token: %w", err))
	}
	if err := c.writeCall(nl, cl); err != nil {
		c.releaseCall(cl)
		return fail(fmt.Errorf("authenticate with reconnect token: %w", err))
	}
	select {
	case a := <-cl.ch:
		if a.err == nil {
			a.err = a.r.Err()
		}
		if a.err != nil {
			return fail(fmt.Errorf("authenticate with reconnect token: %w", a.err))
		}
		return nl, nil
	case <-ctx.Done():
		c.releaseCall(cl)
		return fail(fmt.Errorf("authenticate with reconnect token: %w", ctx.Err()))
	}
}

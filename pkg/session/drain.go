package session

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// DrainSpread is the share of the drain timeout over which the sessions that
// stay are closed; the rest of the window is left for their last flush.
const DrainSpread = 0.8

// abortWait bounds the wait, after sessions are aborted, for their readers to
// finish (a handler that never returns keeps one busy).
const abortWait = 2 * time.Second

// DrainNotice is the JSON payload of the @Drain@ push.
type DrainNotice struct {
	// ReconnectToken authenticates the account (and stage) once on any server
	// holding the same signing key; empty before authentication. Its lifetime
	// counts from RetryAfterMs, so it is never dead on arrival.
	ReconnectToken string `json:"reconnectToken"`
	// RetryAfterMs is when the client should reconnect; the server closes the
	// session about then. Spread over the drain window so the clients of a
	// draining pod do not all land on the others at once.
	RetryAfterMs int64 `json:"retryAfterMs"`
}

// drainState is a drain in progress: sessions registering during it join it.
type drainState struct {
	m      *Manager
	start  time.Time
	spread time.Duration

	mu      sync.Mutex
	timers  []*time.Timer
	stopped bool
}

// schedule pushes @Drain@ to s (with a reconnect token when authenticated)
// and closes it with ServerShutdown after offset.
func (d *drainState) schedule(s *Session, offset time.Duration) {
	m := d.m
	notice := DrainNotice{RetryAfterMs: offset.Milliseconds()}
	if acct := s.AccountID(); acct != "" && m.opts.Tokens != nil {
		tok, err := m.opts.Tokens.IssueFrom(acct, s.StageID(), time.Now().Add(offset))
		if err != nil {
			m.opts.Logger.Error("drain: cannot issue reconnect token", "session", s.id, "err", err)
		}
		notice.ReconnectToken = tok
	}
	payload, err := json.Marshal(notice)
	if err != nil {
		m.opts.Logger.Error("drain notice", "session", s.id, "err", err)
	}
	_ = s.Push(DrainMsgID, s.StageID(), payload)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		s.Close(ServerShutdown)
		return
	}
	d.timers = append(d.timers, time.AfterFunc(offset, func() { s.Close(ServerShutdown) }))
}

// add joins a session that registered during the drain: it gets its @Drain@
// at once and a close point at a random moment in what is left of the spread.
func (d *drainState) add(s *Session) {
	left := d.spread - time.Since(d.start)
	var offset time.Duration
	if left > 0 {
		offset = time.Duration(rand.Int64N(int64(left)) + 1)
	}
	d.schedule(s, offset)
}

// stop cancels the pending close timers.
func (d *drainState) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	for _, t := range d.timers {
		t.Stop()
	}
}

// Drain takes the manager out of service gracefully: it refuses new
// connections, pushes @Drain@ (with a reconnect token for authenticated
// sessions) to every session, lets sessions leave on their own, and closes
// the rest with ServerShutdown at random points spread over DrainSpread of
// timeout, each with a lingering close after what is queued for it is
// written. A session still in OnConnect when the drain starts gets the same
// treatment when it registers. Sessions still open at timeout, or when ctx
// is canceled, are aborted. It returns once every session has ended; the
// error says when the timeout or ctx cut the drain short.
func (m *Manager) Drain(ctx context.Context, timeout time.Duration) error {
	d := &drainState{m: m, start: time.Now(), spread: time.Duration(float64(timeout) * DrainSpread)}
	m.mu.Lock()
	m.draining = true
	m.drain = d
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	m.mu.Unlock()
	defer d.stop()
	rand.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	for i, s := range list {
		d.schedule(s, d.spread*time.Duration(i+1)/time.Duration(len(list)))
	}
	m.opts.Logger.Info("draining", "sessions", len(list), "timeout", timeout.String())
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := m.Wait(dctx)
	if err == nil {
		return nil
	}
	remaining := m.Count()
	m.AbortAll(ServerShutdown)
	return fmt.Errorf("drain cut short with %d sessions open: %w", remaining, err)
}

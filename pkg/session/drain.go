package session

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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
	// ReconnectToken authenticates the account (and stage) on any server
	// holding the same signing key; empty before authentication.
	ReconnectToken string `json:"reconnectToken"`
	// RetryAfterMs is when the client should reconnect; the server closes the
	// session about then. Spread over the drain window so the clients of a
	// draining pod do not all land on the others at once.
	RetryAfterMs int64 `json:"retryAfterMs"`
}

// Drain takes the manager out of service gracefully: it refuses new
// connections, pushes @Drain@ (with a reconnect token for authenticated
// sessions) to every session, lets sessions leave on their own, and closes
// the rest with ServerShutdown at random points spread over DrainSpread of
// timeout, each after what is queued for it is written. Sessions still open at
// timeout, or when ctx is canceled, are aborted. It returns once every session
// has ended; the error says when the timeout or ctx cut the drain short.
func (m *Manager) Drain(ctx context.Context, timeout time.Duration) error {
	m.SetDraining(true)
	var list []*Session
	m.Range(func(s *Session) bool {
		list = append(list, s)
		return true
	})
	rand.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	spread := time.Duration(float64(timeout) * DrainSpread)
	timers := make([]*time.Timer, 0, len(list))
	defer func() {
		for _, t := range timers {
			t.Stop()
		}
	}()
	for i, s := range list {
		offset := spread * time.Duration(i+1) / time.Duration(len(list))
		notice := DrainNotice{RetryAfterMs: offset.Milliseconds()}
		if acct := s.AccountID(); acct != "" && m.opts.Tokens != nil {
			tok, err := m.opts.Tokens.Issue(acct, s.StageID())
			if err != nil {
				m.opts.Logger.Error("drain: cannot issue reconnect token", "session", s.id, "err", err)
			}
			notice.ReconnectToken = tok
		}
		payload, err := json.Marshal(notice)
		if err != nil {
			return fmt.Errorf("drain notice: %w", err)
		}
		_ = s.Push(DrainMsgID, s.StageID(), payload)
		timers = append(timers, time.AfterFunc(offset, func() { s.Close(ServerShutdown) }))
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

package session

import (
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// watchLiveness finds dead peers among sessions that do not heartbeat
// (protocol.md section 3): the idle read deadline applies only once a
// session has sent a heartbeat, so a live client that never does stays
// connected, while a dead one is found within about HeartbeatTimeout by TCP
// keepalive with a TCP user timeout (stream transports) or by server-sent
// WebSocket pings whose pongs count as activity.
func (s *Session) watchLiveness() {
	timeout := s.m.opts.HeartbeatTimeout
	if ka, ok := s.conn.(transport.KeepAliver); ok {
		if err := ka.EnableKeepAlive(timeout); err != nil {
			s.m.opts.Logger.Debug("tcp keepalive not enabled", "session", s.id, "err", err)
		}
		return
	}
	if _, ok := s.conn.(transport.Pinger); ok {
		s.lmu.Lock()
		s.pingTimer = time.AfterFunc(timeout/3, s.pingCheck)
		s.lmu.Unlock()
	}
}

// pingCheck runs every third of HeartbeatTimeout on a WebSocket session
// that has not heartbeated, on the timer's own goroutine, so no goroutine
// waits for it in between: it closes the session IdleTimeout when nothing
// (frame, pong) has arrived for HeartbeatTimeout, pings the peer otherwise,
// and re-arms the timer. It stops at the session's close point, and once
// the session heartbeats (the idle read deadline then watches it, and a
// session never stops being a heartbeating one).
func (s *Session) pingCheck() {
	if s.isClosing() || s.heartbeating.Load() {
		return
	}
	timeout := s.m.opts.HeartbeatTimeout
	if time.Since(s.LastActivity()) >= timeout {
		s.Close(IdleTimeout)
		return
	}
	if err := s.conn.(transport.Pinger).Ping(time.Now().Add(s.m.opts.WriteTimeout)); err != nil {
		s.m.opts.Logger.Debug("websocket ping failed", "session", s.id, "err", err)
	}
	// Re-armed after the ping returns, so checks of one session never
	// overlap. Under lmu: either stopLiveness stops the timer after this,
	// or this sees it stopped (pingTimer nil) and does not re-arm it.
	s.lmu.Lock()
	if s.pingTimer != nil && !s.isClosing() {
		s.pingTimer.Reset(timeout / 3)
	}
	s.lmu.Unlock()
}

// stopLiveness stops the ping timer for good, so a session that has ended
// is neither pinged nor kept reachable by it.
func (s *Session) stopLiveness() {
	s.lmu.Lock()
	if s.pingTimer != nil {
		s.pingTimer.Stop()
		s.pingTimer = nil
	}
	s.lmu.Unlock()
}

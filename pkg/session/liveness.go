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
	if p, ok := s.conn.(transport.Pinger); ok {
		go s.pingLoop(p, timeout)
	}
}

// pingLoop pings a WebSocket peer every third of timeout and closes the
// session IdleTimeout when nothing (frame, pong) has arrived for timeout.
func (s *Session) pingLoop(p transport.Pinger, timeout time.Duration) {
	tick := time.NewTicker(timeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-tick.C:
		}
		if s.heartbeating.Load() {
			continue // the idle read deadline watches this session
		}
		if time.Since(s.LastActivity()) >= timeout {
			s.Close(IdleTimeout)
			return
		}
		if err := p.Ping(time.Now().Add(s.m.opts.WriteTimeout)); err != nil {
			s.m.opts.Logger.Debug("websocket ping failed", "session", s.id, "err", err)
		}
	}
}

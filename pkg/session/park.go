package session

import (
	"errors"
	"os"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Parking an idle reader (Options.IdlePark).
//
// A session whose client has sent nothing for IdlePark gives up its reader
// goroutine: the idle timer cuts the blocked read short with a read deadline
// in the past (parkReq says why), and the reader, seeing the timeout, hands
// the socket to the manager's poller and returns (see transport.Parker for
// why nothing buffered is lost). A fresh goroutine runs read again when the
// socket becomes readable, when the session reaches its close point or is
// aborted (unpark), or when a heartbeating session's idle deadline passes
// (the idle timer again); a read that resumes keeps the idle deadline it
// had, so parking never extends it.
//
// Exactly one goroutine reads at a time: the parking reader returns right
// after Park, and of the poller's wake and unpark's Cancel exactly one
// succeeds and starts the next reader. lmu orders parking against the
// close point: park refuses once the session is closing, and a close point
// after a park sees s.parking.

// longAgo is a read deadline in the past: it cuts a blocked read short.
var longAgo = time.Unix(1, 0)

// watchIdle starts the idle timer of a session that can park.
func (s *Session) watchIdle() {
	if !s.canPark {
		return
	}
	if p, ok := s.conn.(transport.Parker); !ok || p.ReadSocket() == nil {
		return
	}
	s.lmu.Lock()
	s.idleTimer = time.AfterFunc(s.m.opts.IdlePark, s.idleCheck)
	s.lmu.Unlock()
	s.idleWatched = true
}

// stopIdle stops the idle timer for good.
func (s *Session) stopIdle() {
	s.lmu.Lock()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
		s.idleTimer = nil
	}
	s.lmu.Unlock()
}

// idleCheck runs on the idle timer's goroutine. While the reader runs, it
// asks a reader idle for IdlePark to park, and checks again IdlePark after
// the last input. While the reader is parked, the timer was set to the
// heartbeating session's idle deadline: the reader resumes and finds it
// passed.
func (s *Session) idleCheck() {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.idleTimer == nil || s.isClosing() {
		return
	}
	if s.parking != nil {
		// A run that was waiting for lmu while the reader parked is stale:
		// only a heartbeating session's passed idle deadline resumes it
		// (idleDeadline is the parked reader's, written before it parked).
		if !s.heartbeating.Load() {
			return
		}
		if d := time.Until(s.idleDeadline); d > 0 {
			s.idleTimer.Reset(d)
			return
		}
		if s.parking.Cancel() {
			go s.resume()
		}
		return
	}
	park := s.m.opts.IdlePark
	if idle := time.Since(s.LastActivity()); idle < park {
		s.idleTimer.Reset(park - idle)
		return
	}
	s.parkReq.Store(true)
	_ = s.conn.SetReadDeadline(longAgo)
	// Again later if the cut is lost (the reader set its own deadline just
	// after) or the reader could not park.
	s.idleTimer.Reset(park)
}

// parkCut reports whether err is the timeout of a read the idle timer cut
// short (and takes the request).
func (s *Session) parkCut(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) && s.parkReq.Swap(false)
}

// park hands the socket to the poller (reader goroutine, after a cut read)
// and reports whether it did; the caller must then return without touching
// the session.
func (s *Session) park() bool {
	p, ok := s.conn.(transport.Parker)
	if !ok {
		return false
	}
	raw := p.ReadSocket()
	if raw == nil {
		return false
	}
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.isClosing() || s.idleTimer == nil {
		return false
	}
	k, err := s.m.poller.Park(raw, s.resume)
	if err != nil {
		s.m.opts.Logger.Debug("reader not parked", "session", s.id, "err", err)
		return false
	}
	s.parking = k
	s.keepDeadline = true
	s.m.parked.Add(1)
	if s.heartbeating.Load() {
		s.idleTimer.Reset(time.Until(s.idleDeadline))
	} else {
		s.idleTimer.Stop()
	}
	return true
}

// unpark resumes a parked reader on a fresh goroutine (from a goroutine
// other than the reader: the close point, an abort).
func (s *Session) unpark() {
	s.lmu.Lock()
	k := s.parking
	s.lmu.Unlock()
	if k != nil && k.Cancel() {
		go s.resume()
	}
}

// resume is a parked reader's new goroutine: it takes the socket back from
// the poller and reads on.
func (s *Session) resume() {
	s.lmu.Lock()
	s.parking.Done()
	s.parking = nil
	s.m.parked.Add(-1)
	if s.idleTimer != nil && !s.isClosing() {
		s.idleTimer.Reset(s.m.opts.IdlePark)
	}
	s.lmu.Unlock()
	s.read()
}

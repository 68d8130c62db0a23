// Package relay is the built-in relay application: sessions join stages
// (rooms) and every one-way packet a session sends to its stage is pushed to
// the other sessions of that stage. Requests other than the stage commands
// are echoed, so clients can measure round trips. Authentication is open, as
// in the echo app.
package relay

import (
	"github.com/playhouse-k8s/playhouse/pkg/apps/echo"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
)

// Stage commands.
const (
	// JoinStageMsgID places the session in the request's StageId (non-zero);
	// the reply is JoinStageReply, or ErrorCode JoinStageFailed for stage 0.
	JoinStageMsgID = "JoinStageRequest"
	// LeaveStageMsgID takes the session out of its stage.
	LeaveStageMsgID = "LeaveStageRequest"
)

// Handler is the relay application. It reaches the other sessions of a
// stage through the sender's manager (Session.Manager).
type Handler struct {
	echo.Handler
}

var _ session.Handler = (*Handler)(nil)

// New returns a relay handler.
func New() *Handler { return &Handler{} }

// OnPacket handles the stage commands, relays one-way packets to the
// sender's stage, and echoes other requests.
func (h *Handler) OnPacket(s *session.Session, p *session.Packet) {
	switch {
	case p.MsgID == JoinStageMsgID && p.IsRequest():
		if p.StageID == 0 {
			_ = s.Reply(p, protocol.JoinStageFailed, nil)
			return
		}
		s.SetStageID(p.StageID)
		_ = s.Reply(p, protocol.Success, nil)
	case p.MsgID == LeaveStageMsgID && p.IsRequest():
		s.SetStageID(0)
		_ = s.Reply(p, protocol.Success, nil)
	case p.IsRequest():
		_ = s.Reply(p, protocol.Success, p.Payload)
	default:
		stage := s.StageID()
		if stage == 0 {
			return // not in a stage: nobody to relay to
		}
		_, _ = s.Manager().Broadcast(stage, p.MsgID, p.Payload, s)
	}
}

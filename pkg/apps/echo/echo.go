// Package echo is the built-in echo application: open authentication and every
// packet answered with its own payload. Benchmarks and smoke tests run against it.
package echo

import (
	"crypto/sha256"
	"encoding/hex"
	"unicode"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
)

// maxReadableAccount is the longest credential used verbatim as an account id.
const maxReadableAccount = 64

// Handler is the echo application. The zero value is ready to use.
type Handler struct{}

var _ session.Handler = Handler{}

// New returns the echo handler.
func New() Handler { return Handler{} }

// OnConnect accepts every connection.
func (Handler) OnConnect(*session.Session) error { return nil }

// Authenticate accepts any non-empty payload. The account id is the payload
// itself when it is short printable text, else "sha256:" and the first 16 hex
// digits of its SHA-256, so the same credentials always name the same account.
// The reply echoes the payload.
func (Handler) Authenticate(_ *session.Session, p *session.Packet) session.AuthResult {
	if len(p.Payload) == 0 {
		return session.AuthResult{ErrorCode: protocol.AuthenticationFailed}
	}
	return session.AuthResult{AccountID: AccountID(p.Payload), ReplyPayload: p.Payload}
}

// AccountID derives the echo app's account id from credentials.
func AccountID(credentials []byte) string {
	if len(credentials) <= maxReadableAccount && printable(credentials) {
		return string(credentials)
	}
	sum := sha256.Sum256(credentials)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

func printable(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || !unicode.IsPrint(rune(c)) {
			return false
		}
	}
	return true
}

// OnPacket answers a request with the same payload (reply MsgId: "Request"
// replaced by "Reply", same MsgSeq and StageId) and echoes a one-way packet as
// a push with the same MsgId.
func (Handler) OnPacket(s *session.Session, p *session.Packet) {
	if p.IsRequest() {
		_ = s.Reply(p, protocol.Success, p.Payload)
		return
	}
	_ = s.Push(p.MsgID, p.StageID, p.Payload)
}

// OnDisconnect does nothing.
func (Handler) OnDisconnect(*session.Session, session.CloseReason) {}

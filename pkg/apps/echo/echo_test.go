package echo

import (
	"strings"
	"testing"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
)

func TestAccountID(t *testing.T) {
	if got := AccountID([]byte("player-1")); got != "player-1" {
		t.Errorf("readable credentials: %q", got)
	}
	bin := AccountID([]byte{0, 1, 2, 0xff})
	if !strings.HasPrefix(bin, "sha256:") || len(bin) != len("sha256:")+16 || bin != AccountID([]byte{0, 1, 2, 0xff}) {
		t.Errorf("binary credentials: %q", bin)
	}
	long := AccountID([]byte(strings.Repeat("a", 65)))
	if !strings.HasPrefix(long, "sha256:") {
		t.Errorf("long credentials used verbatim: %q", long)
	}
}

func TestAuthenticate(t *testing.T) {
	h := New()
	if r := h.Authenticate(nil, &session.Packet{MsgID: "AuthenticateRequest"}); r.AccountID != "" || r.ErrorCode != protocol.AuthenticationFailed {
		t.Errorf("empty credentials accepted: %+v", r)
	}
	r := h.Authenticate(nil, &session.Packet{MsgID: "AuthenticateRequest", Payload: []byte("bob")})
	if r.AccountID != "bob" || string(r.ReplyPayload) != "bob" {
		t.Errorf("credentials refused: %+v", r)
	}
}

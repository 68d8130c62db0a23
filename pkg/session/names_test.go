package session

import (
	"strconv"
	"testing"
	"unsafe"
)

// TestNameTableSharedAndBounded checks that sessions of one manager share
// interned message names (one table, not one per session) and that random
// names cannot grow the table past maxInterned.
func TestNameTableSharedAndBounded(t *testing.T) {
	m, err := NewManager(Options{Handler: echoHandler{}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	a, b := m.newSession(nullConn{}), m.newSession(nullConn{})
	na, nb := a.intern([]byte("MoveRequest")), b.intern([]byte("MoveRequest"))
	if na.id != "MoveRequest" || na.reply != "MoveReply" {
		t.Fatalf("interned %+v", na)
	}
	if unsafe.StringData(na.id) != unsafe.StringData(nb.id) || unsafe.StringData(na.reply) != unsafe.StringData(nb.reply) {
		t.Fatal("two sessions got separate copies of the same name")
	}
	for i := range 3 * maxInterned {
		n := a.intern([]byte("Junk" + strconv.Itoa(i) + "Request"))
		if want := "Junk" + strconv.Itoa(i) + "Reply"; n.reply != want {
			t.Fatalf("reply name %q, want %q", n.reply, want)
		}
	}
	if got := m.names.size(); got > maxInterned {
		t.Fatalf("table holds %d names, bound %d", got, maxInterned)
	}
	if a.intern([]byte("MoveRequest")).id != "MoveRequest" {
		t.Fatal("known name lost")
	}
}

package apps

import (
	"slices"
	"strings"
	"testing"

	"github.com/playhouse-k8s/playhouse/pkg/apps/relay"
	"github.com/playhouse-k8s/playhouse/pkg/session"
)

// The built-in registry makes fresh handlers by name, refuses unknown names
// with the registered ones listed, and can be extended by a program.
func TestRegistry(t *testing.T) {
	r := Builtin()
	if got := r.Names(); !slices.Equal(got, []string{"echo", "relay"}) {
		t.Fatalf("names = %v", got)
	}
	h, err := r.Handler("relay")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.(*relay.Handler); !ok {
		t.Fatalf("relay handler is %T", h)
	}
	if _, err := r.Handler("chess"); err == nil || !strings.Contains(err.Error(), "echo, relay") {
		t.Fatalf("unknown app error = %v", err)
	}
	r["chess"] = func() session.Handler { return session.HandlerFuncs{} }
	if _, err := r.Handler("chess"); err != nil {
		t.Fatalf("registered app: %v", err)
	}
	if _, ok := Builtin()["chess"]; ok {
		t.Fatal("Builtin shares state between calls")
	}
}

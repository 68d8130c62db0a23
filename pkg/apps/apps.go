// Package apps is the registry of the built-in applications that
// playhouse-server can run by name (the config's app field).
package apps

import (
	"fmt"
	"slices"
	"strings"

	"github.com/playhouse-k8s/playhouse/pkg/apps/echo"
	"github.com/playhouse-k8s/playhouse/pkg/apps/relay"
	"github.com/playhouse-k8s/playhouse/pkg/session"
)

// Factory makes a fresh handler.
type Factory func() session.Handler

// Registry maps application names to their factories. A program embedding
// the engine may build its own, or add its applications to Builtin's.
type Registry map[string]Factory

// Builtin returns a new registry holding the built-in applications: echo
// and relay.
func Builtin() Registry {
	return Registry{
		"echo":  func() session.Handler { return echo.New() },
		"relay": func() session.Handler { return relay.New() },
	}
}

// Names returns the registered names, sorted.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Handler makes the handler of the application named name.
func (r Registry) Handler(name string) (session.Handler, error) {
	f, ok := r[name]
	if !ok {
		return nil, fmt.Errorf("app: unknown application %q (registered: %s)", name, strings.Join(r.Names(), ", "))
	}
	return f(), nil
}

package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// forbidden are the import-path prefixes a game server embedding the engine
// must not link: Kubernetes (client-go, controller-runtime) and YAML.
var forbidden = []string{"k8s.io/", "sigs.k8s.io/", "go.yaml.in/yaml", "gopkg.in/yaml", "github.com/goccy/go-yaml"}

// The session engine's embedding packages and this example link neither
// Kubernetes nor YAML (issue 10): only pkg/server/serverconfig, which reads
// playhouse-server's YAML file, does.
func TestImportGraph(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	for _, pkg := range []string{
		"github.com/playhouse-k8s/playhouse/pkg/session",
		"github.com/playhouse-k8s/playhouse/pkg/server",
		"github.com/playhouse-k8s/playhouse/examples/gameserver",
	} {
		out, err := exec.Command(goBin, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %q", pkg, deps)
		}
		for _, d := range deps {
			for _, f := range forbidden {
				if strings.HasPrefix(d, f) {
					t.Errorf("%s links %s", pkg, d)
				}
			}
		}
	}
	// The check itself can fail: the config-file package does link YAML.
	out, err := exec.Command(goBin, "list", "-deps", "github.com/playhouse-k8s/playhouse/pkg/server/serverconfig").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "sigs.k8s.io/yaml") {
		t.Error("serverconfig no longer links YAML: the check above may be looking at the wrong thing")
	}
}

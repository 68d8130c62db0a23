// Package charttest renders the Helm chart for tests with the helm binary
// (`helm template`), so the tests check exactly what an install would send.
// The binary is $HELM, else the pinned helm `make helm` installs into ./bin,
// else helm on $PATH; `make test` installs the pinned one and sets $HELM.
package charttest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// KubeVersion is the Kubernetes version charts are rendered for (the
// version of the envtest API server).
const KubeVersion = "1.37.0"

// repoRoot is the repository's folder, found from this source file so
// tests of any package can use it.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ChartDir is the chart's folder.
func ChartDir() string {
	return filepath.Join(repoRoot(), "charts", "playhouse")
}

// Helm returns the helm binary to run: $HELM, else ./bin/helm-* (from
// `make helm`), else helm on $PATH. Under -short it skips the test when
// there is none; otherwise it fails it.
func Helm(t testing.TB) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if found, _ := filepath.Glob(filepath.Join(repoRoot(), "bin", "helm-*")); len(found) > 0 {
		slices.Sort(found)
		return found[len(found)-1]
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	if testing.Short() {
		t.Skip("helm not found (set $HELM or run `make helm`); skipped under -short")
	}
	t.Fatal("helm not found: run `make test` (it installs helm into ./bin), or set $HELM to a helm v3 binary; -short skips chart rendering tests")
	return ""
}

// Render runs `helm template release <chart> --namespace namespace` with the
// given extra arguments (such as "--set", "watchNamespaces={a,b}") and returns
// the rendered objects, tests included (helm test hooks are rendered too).
func Render(t testing.TB, release, namespace string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := RenderE(t, release, namespace, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RenderE is Render returning helm's error (for values the schema refuses).
func RenderE(t testing.TB, release, namespace string, args ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	helm := Helm(t)
	// The chart requires Kubernetes 1.31+; helm template assumes an older one.
	cmd := exec.Command(helm, append([]string{"template", release, ChartDir(), "--namespace", namespace, "--kube-version", KubeVersion}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// helm keeps no state for template, but give it a private home anyway.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm template %v: %w\n%s", args, err, stderr.String())
	}
	return Decode(stdout.Bytes())
}

// Decode splits a multi-document YAML stream into objects, skipping empty
// documents.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		obj := map[string]any{}
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode rendered chart: %w", err)
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
}

// Find returns the rendered object of that kind and name, or nil.
func Find(objs []*unstructured.Unstructured, kind, namespace, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name && o.GetNamespace() == namespace {
			return o
		}
	}
	return nil
}

// OfKind returns the rendered objects of one kind.
func OfKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

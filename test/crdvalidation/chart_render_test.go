/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

package crdvalidation

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/playhouse-k8s/playhouse/controllers"
	"github.com/playhouse-k8s/playhouse/internal/charttest"
)

// The rendered chart (helm template), checked against the generated RBAC,
// the kustomize install, the release constants and the API server.

// as converts a rendered object to a typed one.
func as[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	if u == nil {
		t.Fatal("object not rendered")
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		t.Fatalf("convert %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

// generatedRules are the operator's rules that controller-gen wrote.
func generatedRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatalf("read role.yaml: %v", err)
	}
	var generated rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(data, &generated); err != nil {
		t.Fatalf("parse role.yaml: %v", err)
	}
	return generated.Rules
}

// operatorArgs are the args of the operator container of a rendered chart.
func operatorArgs(t *testing.T, objs []*unstructured.Unstructured, ns, name string) []string {
	t.Helper()
	d := as[appsv1.Deployment](t, charttest.Find(objs, "Deployment", ns, name))
	return d.Spec.Template.Spec.Containers[0].Args
}

// TestChartRBACClusterWide: without watchNamespaces the operator gets exactly
// the generated rules in a ClusterRole, bound to its ServiceAccount.
func TestChartRBACClusterWide(t *testing.T) {
	objs := charttest.Render(t, "ph", "games-system")
	role := as[rbacv1.ClusterRole](t, charttest.Find(objs, "ClusterRole", "", "ph-playhouse:manager"))
	if !reflect.DeepEqual(role.Rules, generatedRules(t)) {
		t.Errorf("ClusterRole rules differ from config/rbac/role.yaml:\nchart:     %+v\ngenerated: %+v", role.Rules, generatedRules(t))
	}
	b := as[rbacv1.ClusterRoleBinding](t, charttest.Find(objs, "ClusterRoleBinding", "", "ph-playhouse:manager"))
	if b.RoleRef.Name != role.Name || len(b.Subjects) != 1 || b.Subjects[0].Name != "ph-playhouse" || b.Subjects[0].Namespace != "games-system" {
		t.Errorf("binding %+v", b)
	}
	if rs := charttest.OfKind(objs, "Role"); len(rs) != 1 || rs[0].GetName() != "ph-playhouse:leader-election" {
		t.Errorf("Roles %v, want only the leader election Role", rs)
	}
	for _, a := range operatorArgs(t, objs, "games-system", "ph-playhouse") {
		if strings.HasPrefix(a, "--watch-namespace") {
			t.Errorf("cluster-wide install passes %s", a)
		}
	}
}

// TestChartRBACNamespaced: with watchNamespaces the operator gets the same
// rules as a Role in each watched namespace, no cluster-wide rules, and the
// --watch-namespace flag.
func TestChartRBACNamespaced(t *testing.T) {
	objs := charttest.Render(t, "ph", "games-system", "--set", "watchNamespaces={team-a,team-b}")
	if got := charttest.Find(objs, "ClusterRole", "", "ph-playhouse:manager"); got != nil {
		t.Error("namespaced install renders the manager ClusterRole")
	}
	if got := charttest.OfKind(objs, "ClusterRoleBinding"); len(got) != 0 {
		t.Errorf("namespaced install renders ClusterRoleBindings %v", got)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		role := as[rbacv1.Role](t, charttest.Find(objs, "Role", ns, "ph-playhouse:manager"))
		if !reflect.DeepEqual(role.Rules, generatedRules(t)) {
			t.Errorf("Role in %s: rules differ from config/rbac/role.yaml: %+v", ns, role.Rules)
		}
		b := as[rbacv1.RoleBinding](t, charttest.Find(objs, "RoleBinding", ns, "ph-playhouse:manager"))
		if b.RoleRef.Kind != "Role" || b.RoleRef.Name != role.Name || len(b.Subjects) != 1 ||
			b.Subjects[0].Name != "ph-playhouse" || b.Subjects[0].Namespace != "games-system" {
			t.Errorf("RoleBinding in %s: %+v", ns, b)
		}
	}
	if args := operatorArgs(t, objs, "games-system", "ph-playhouse"); !slices.Contains(args, "--watch-namespace=team-a,team-b") {
		t.Errorf("operator args %v lack --watch-namespace=team-a,team-b", args)
	}
}

// kustomizeNames are the "Kind namespace/name" keys of every object of the
// kustomize install (config/rbac, config/manager and config/default set
// their names in the files; kustomize adds no prefix).
func kustomizeNames(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, dir := range []string{"rbac", "manager", "default"} {
		files, err := filepath.Glob(filepath.Join("..", "..", "config", dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if filepath.Base(f) == "kustomization.yaml" {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := charttest.Decode(data)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for _, o := range objs {
				ns := o.GetNamespace()
				if ns == "" && !clusterScoped(o.GetKind()) {
					ns = "playhouse-system" // config/default sets it
				}
				out[o.GetKind()+" "+ns+"/"+o.GetName()] = true
			}
		}
	}
	if !out["ClusterRole /playhouse-operator"] {
		t.Fatalf("kustomize ClusterRole playhouse-operator not found in %v", out)
	}
	return out
}

// clusterScoped reports whether objects of kind have no namespace.
func clusterScoped(kind string) bool {
	switch kind {
	case "ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition", "PriorityClass":
		return true
	}
	return false
}

// TestChartAndKustomizeNamesDoNotClash installs (renders) the chart under
// the release names most likely to collide, into the kustomize install's
// namespace, and checks that no object would overwrite one of the kustomize
// install's RBAC objects.
func TestChartAndKustomizeNamesDoNotClash(t *testing.T) {
	kust := kustomizeNames(t)
	for _, release := range []string{"playhouse", "playhouse-operator", "operator", "playhouse-playhouseserver"} {
		objs := charttest.Render(t, release, "playhouse-system", "--set", "metrics.secure=true", "--set", "replicaCount=2")
		for _, o := range objs {
			switch o.GetKind() {
			case "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			default:
				continue // two operators in one namespace is not a supported setup
			}
			if key := o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName(); kust[key] {
				t.Errorf("release %s: %s is also an object of the kustomize install", release, key)
			}
		}
	}
}

// TestChartImages: the default images are the versioned release image,
// equal to the operator's built-in default; both are settable.
func TestChartImages(t *testing.T) {
	objs := charttest.Render(t, "ph", "games")
	d := as[appsv1.Deployment](t, charttest.Find(objs, "Deployment", "games", "ph-playhouse"))
	if img := d.Spec.Template.Spec.Containers[0].Image; img != controllers.DefaultServerImage {
		t.Errorf("operator image %q, want %q", img, controllers.DefaultServerImage)
	}
	if args := d.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--default-image="+controllers.DefaultServerImage) {
		t.Errorf("args %v lack --default-image=%s", args, controllers.DefaultServerImage)
	}

	objs = charttest.Render(t, "ph", "games", "--set", "image.repository=registry.example/team/playhouse", "--set", "image.tag=1.2.3",
		"--set", "imagePullSecrets[0].name=regcred")
	d = as[appsv1.Deployment](t, charttest.Find(objs, "Deployment", "games", "ph-playhouse"))
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example/team/playhouse:1.2.3" || !slices.Contains(c.Args, "--default-image=registry.example/team/playhouse:1.2.3") ||
		len(d.Spec.Template.Spec.ImagePullSecrets) != 1 {
		t.Errorf("own image: %q, args %v, pull secrets %v", c.Image, c.Args, d.Spec.Template.Spec.ImagePullSecrets)
	}

	objs = charttest.Render(t, "ph", "games", "--set", "defaultServerImage=registry.example/server:7")
	if args := operatorArgs(t, objs, "games", "ph-playhouse"); !slices.Contains(args, "--default-image=registry.example/server:7") {
		t.Errorf("args %v lack the defaultServerImage", args)
	}
}

// TestChartOperatorPDB: a PodDisruptionBudget with maxUnavailable 1 when
// asked for, and always with more than one replica.
func TestChartOperatorPDB(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--set", "replicaCount=2"}, true},
		{[]string{"--set", "podDisruptionBudget.enabled=true"}, true},
	} {
		objs := charttest.Render(t, "ph", "games", tc.args...)
		pdbs := charttest.OfKind(objs, "PodDisruptionBudget")
		if (len(pdbs) == 1) != tc.want || len(pdbs) > 1 {
			t.Errorf("%v: %d PodDisruptionBudgets, want %v", tc.args, len(pdbs), tc.want)
			continue
		}
		if !tc.want {
			continue
		}
		spec, _, _ := unstructured.NestedMap(pdbs[0].Object, "spec")
		sel, _, _ := unstructured.NestedStringMap(pdbs[0].Object, "spec", "selector", "matchLabels")
		d := as[appsv1.Deployment](t, charttest.Find(objs, "Deployment", "games", "ph-playhouse"))
		if fmt.Sprint(spec["maxUnavailable"]) != "1" || spec["minAvailable"] != nil || !reflect.DeepEqual(sel, d.Spec.Selector.MatchLabels) {
			t.Errorf("%v: PDB spec %v, want maxUnavailable 1 selecting the operator pods %v", tc.args, spec, d.Spec.Selector.MatchLabels)
		}
	}
}

// TestChartHelmTestPod: the helm test hook runs playhouse-bench --once
// against the fleet's Service.
func TestChartHelmTestPod(t *testing.T) {
	objs := charttest.Render(t, "ph", "games")
	pod := as[corev1.Pod](t, charttest.Find(objs, "Pod", "games", "ph-playhouse-test-echo"))
	if pod.Annotations["helm.sh/hook"] != "test" || pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("test pod metadata %v, restart policy %s", pod.Annotations, pod.Spec.RestartPolicy)
	}
	c := pod.Spec.Containers[0]
	if !reflect.DeepEqual(c.Command, []string{"playhouse-bench"}) || c.Image != controllers.DefaultServerImage ||
		!slices.Contains(c.Args, "--once") || !slices.Contains(c.Args, "--addr=echo.games.svc:7777") || !slices.Contains(c.Args, "--transport=tcp") {
		t.Errorf("test container %v %v (image %s)", c.Command, c.Args, c.Image)
	}

	objs = charttest.Render(t, "ph", "games", "--set", "test.fleet=lobby", "--set", "test.namespace=eu", "--set", "test.port=443",
		"--set", "test.transport=wss", "--set", "test.credentials=player-1")
	c = as[corev1.Pod](t, charttest.Find(objs, "Pod", "games", "ph-playhouse-test-echo")).Spec.Containers[0]
	for _, want := range []string{"--addr=lobby.eu.svc:443", "--transport=wss", "--insecure-skip-verify", "--credentials=player-1"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %v lack %s", c.Args, want)
		}
	}

	objs = charttest.Render(t, "ph", "games", "--set", "test.enabled=false")
	if len(charttest.OfKind(objs, "Pod")) != 0 {
		t.Error("test.enabled=false still renders the test Pod")
	}
}

// TestChartSchemaRefusesBadValues: values.schema.json catches typos before
// anything reaches the cluster.
func TestChartSchemaRefusesBadValues(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"watchNamespaces={Team_A}", "watchNamespaces/0"},
		{"test.transport=udp", "test/transport"},
		{"podDisruptionBudget.minAvailable=1", "podDisruptionBudget"},
	} {
		_, err := charttest.RenderE(t, "ph", "games", "--set", tc.set)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: error %v, want one naming %s", tc.set, err, tc.want)
		}
	}
}

// TestChartObjectsAreAccepted sends every rendered object of both install
// modes to the API server (server-side dry run), so names such as
// "<fullname>:manager" and every field are valid for a real cluster.
func TestChartObjectsAreAccepted(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	release := newNamespace(t, c)
	watched := newNamespace(t, c)
	for _, args := range [][]string{
		{"--set", "replicaCount=2", "--set", "metrics.secure=true"},
		{"--set", "watchNamespaces={" + watched + "}"},
	} {
		for _, o := range charttest.Render(t, "ph", release, args...) {
			if o.GetKind() == "ServiceMonitor" {
				continue
			}
			if err := c.Create(ctx, o, client.DryRunAll); err != nil {
				t.Errorf("%v: %s %s/%s refused: %v", args, o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		}
	}
	// The dry run created nothing.
	roles := &rbacv1.RoleList{}
	if err := c.List(ctx, roles, client.InNamespace(watched)); err != nil || len(roles.Items) != 0 {
		t.Errorf("dry run left Roles behind: %v %v", roles.Items, err)
	}
}

// TestKustomizeImageIsTheRelease: the kustomize install runs the same
// versioned release image as the chart and the operator's default.
func TestKustomizeImageIsTheRelease(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "manager", "manager.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := charttest.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	d := as[appsv1.Deployment](t, charttest.Find(objs, "Deployment", "playhouse-system", "playhouse-operator"))
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != controllers.DefaultServerImage || !slices.Contains(c.Args, "--default-image="+controllers.DefaultServerImage) {
		t.Errorf("kustomize operator image %q, args %v, want %s for both", c.Image, c.Args, controllers.DefaultServerImage)
	}
}

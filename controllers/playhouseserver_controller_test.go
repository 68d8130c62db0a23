package controllers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/pkg/config"
)

// minimalPHS is a PlayHouseServer with an empty spec (the API server fills the defaults).
func minimalPHS(ns, name string) *playhousev1alpha1.PlayHouseServer {
	return &playhousev1alpha1.PlayHouseServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// requireController checks that obj carries a controller reference to phs.
func requireController(t *testing.T, obj client.Object, phs *playhousev1alpha1.PlayHouseServer) {
	t.Helper()
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.UID != phs.UID || ref.Kind != "PlayHouseServer" || ref.APIVersion != "playhouse.dev/v1alpha1" ||
		!ptr.Deref(ref.BlockOwnerDeletion, false) {
		t.Errorf("%T %s: controller reference %+v, want the PlayHouseServer %s (uid %s)", obj, obj.GetName(), ref, phs.Name, phs.UID)
	}
}

// condition returns the named condition of phs, or nil.
func condition(phs *playhousev1alpha1.PlayHouseServer, typ string) *metav1.Condition {
	return meta.FindStatusCondition(phs.Status.Conditions, typ)
}

// waitObserved waits until the status reflects the current generation.
func (s *suite) waitObserved(t *testing.T, phs *playhousev1alpha1.PlayHouseServer) *playhousev1alpha1.PlayHouseServer {
	t.Helper()
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "status.observedGeneration to reach the generation", func() (bool, error) {
		ok, err := s.get(got, phs.Namespace, phs.Name)
		return ok && got.Status.ObservedGeneration == got.Generation, err
	})
	return got
}

func TestCreateGetsEveryChild(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := minimalPHS(ns, "game")
	phs.Spec.Transports = playhousev1alpha1.TransportsSpec{
		TCP:       playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7000},
		WebSocket: playhousev1alpha1.WebSocketSpec{Enabled: true, Port: 7001, Path: "/play"},
		TLSTCP:    playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7002},
		WSS:       playhousev1alpha1.WebSocketSpec{Enabled: false, Port: 7003},
		TLS:       playhousev1alpha1.TLSSpec{SecretName: "game-tls"},
	}
	phs.Spec.Limits.MaxConnections = 5000
	phs.Spec.DrainTimeout = &metav1.Duration{Duration: time.Minute}
	phs.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To(int32(2)), MaxReplicas: 8, TargetSessionsPerPod: 1500}
	phs.Spec.DisruptionBudget = playhousev1alpha1.DisruptionBudgetSpec{Enabled: true, MinAvailable: ptr.To(intstr.Parse("50%"))}
	s.createReferencedSecrets(t, phs)
	s.create(t, phs)

	cm := &corev1.ConfigMap{}
	waitFor(t, "ConfigMap game-config", func() (bool, error) { return s.get(cm, ns, "game-config") })
	requireController(t, cm, phs)
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the server refuses the ConfigMap's config: %v", err)
	}
	if cfg.Transports.TCP.Port != 7000 || cfg.Transports.WebSocket.Path != "/play" || !cfg.Transports.TLSTCP.Enabled ||
		cfg.Transports.WSS.Enabled || cfg.Limits.MaxConnections != 5000 || cfg.DrainTimeout.Duration != time.Minute ||
		cfg.BindAddress != "0.0.0.0" || cfg.Transports.TLS.CertFile != "/etc/playhouse/tls/tls.crt" {
		t.Errorf("rendered config does not follow the spec: %+v", cfg)
	}

	secret := &corev1.Secret{}
	waitFor(t, "Secret game-signing-key", func() (bool, error) { return s.get(secret, ns, "game-signing-key") })
	requireController(t, secret, phs)
	if len(secret.Data["signing-key"]) != SigningKeyBytes || !ptr.Deref(secret.Immutable, false) {
		t.Errorf("signing key Secret: %d key bytes, immutable %v", len(secret.Data["signing-key"]), secret.Immutable)
	}

	dep := &appsv1.Deployment{}
	waitFor(t, "Deployment game", func() (bool, error) { return s.get(dep, ns, "game") })
	requireController(t, dep, phs)
	want, err := desiredDeployment(phs, "playhouse:test")
	if err != nil {
		t.Fatal(err)
	}
	if got := dep.Spec.Template.Annotations[AnnotationConfigHash]; got != want.Spec.Template.Annotations[AnnotationConfigHash] {
		t.Errorf("config hash %q, want %q", got, want.Spec.Template.Annotations[AnnotationConfigHash])
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		// Autoscaled: the operator leaves replicas to the HPA (the API server defaults it to 1).
		t.Errorf("replicas %v, want the API default 1 under autoscaling", dep.Spec.Replicas)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Image != "playhouse:test" || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("container %+v", c)
	}
	var ports []string
	for _, p := range c.Ports {
		ports = append(ports, fmt.Sprintf("%s=%d", p.Name, p.ContainerPort))
	}
	if got := strings.Join(ports, ","); got != "tcp=7000,ws=7001,tls-tcp=7002,admin=9090" {
		t.Errorf("container ports %s", got)
	}
	if g := ptr.Deref(dep.Spec.Template.Spec.TerminationGracePeriodSeconds, 0); g <= 60 {
		t.Errorf("terminationGracePeriodSeconds %d not above the 60s drain timeout", g)
	}
	if !ptr.Deref(c.SecurityContext.RunAsNonRoot, false) || ptr.Deref(c.SecurityContext.AllowPrivilegeEscalation, true) {
		t.Errorf("security context %+v", c.SecurityContext)
	}

	svc := &corev1.Service{}
	waitFor(t, "Service game", func() (bool, error) { return s.get(svc, ns, "game") })
	requireController(t, svc, phs)
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal ||
		len(svc.Spec.Ports) != 3 || svc.Spec.Ports[0].Name != "tcp" || svc.Spec.Ports[0].Port != 7000 {
		t.Errorf("service %+v", svc.Spec)
	}

	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	waitFor(t, "HorizontalPodAutoscaler game", func() (bool, error) { return s.get(hpa, ns, "game") })
	requireController(t, hpa, phs)
	if hpa.Spec.MaxReplicas != 8 || ptr.Deref(hpa.Spec.MinReplicas, 0) != 2 || hpa.Spec.Metrics[0].Pods.Metric.Name != SessionsMetric ||
		hpa.Spec.Metrics[0].Pods.Target.AverageValue.Value() != 1500 {
		t.Errorf("hpa %+v", hpa.Spec)
	}

	pdb := &policyv1.PodDisruptionBudget{}
	waitFor(t, "PodDisruptionBudget game", func() (bool, error) { return s.get(pdb, ns, "game") })
	requireController(t, pdb, phs)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "50%" {
		t.Errorf("pdb %+v", pdb.Spec)
	}

	// Every write is made by the operator's field manager with server-side apply.
	for _, obj := range []client.Object{cm, secret, dep, svc, hpa, pdb} {
		applied := false
		for _, mf := range obj.GetManagedFields() {
			if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
				applied = true
			}
		}
		if !applied {
			t.Errorf("%T %s has no apply entry for %s: %+v", obj, obj.GetName(), FieldManager, obj.GetManagedFields())
		}
	}

	// Turning the HPA and PDB off removes them.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) {
		p.Spec.Autoscaling.Enabled = false
		p.Spec.DisruptionBudget.Enabled = false
		p.Spec.Replicas = ptr.To(int32(3))
	})
	waitFor(t, "HPA and PDB removed, replicas 3", func() (bool, error) {
		hpaThere, err1 := s.get(&autoscalingv2.HorizontalPodAutoscaler{}, ns, "game")
		pdbThere, err2 := s.get(&policyv1.PodDisruptionBudget{}, ns, "game")
		_, err3 := s.get(dep, ns, "game")
		return !hpaThere && !pdbThere && ptr.Deref(dep.Spec.Replicas, 0) == 3, errors.Join(err1, err2, err3)
	})
}

// updateSpec re-reads phs, changes its spec and updates it, retrying on conflicts.
func updateSpec(t *testing.T, s *suite, phs *playhousev1alpha1.PlayHouseServer, change func(*playhousev1alpha1.PlayHouseServer)) {
	t.Helper()
	waitFor(t, "spec update of "+phs.Name, func() (bool, error) {
		cur := &playhousev1alpha1.PlayHouseServer{}
		if err := s.c.Get(context.Background(), client.ObjectKeyFromObject(phs), cur); err != nil {
			return false, err
		}
		change(cur)
		if err := s.c.Update(context.Background(), cur); err != nil {
			return false, err
		}
		*phs = *cur
		return true, nil
	})
}

// setDeploymentReady plays the Deployment controller (envtest runs none):
// it reports every desired replica updated, ready and available.
func setDeploymentReady(t *testing.T, s *suite, ns, name string) {
	t.Helper()
	waitFor(t, "Deployment status update", func() (bool, error) {
		d := &appsv1.Deployment{}
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
			return false, err
		}
		n := ptr.Deref(d.Spec.Replicas, 1)
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
		return true, s.c.Status().Update(context.Background(), d)
	})
}

func TestStatusConverges(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := s.create(t, minimalPHS(ns, "echo"))

	got := s.waitObserved(t, phs)
	svc := &corev1.Service{}
	if _, err := s.get(svc, ns, "echo"); err != nil {
		t.Fatal(err)
	}
	if got.Status.Selector != "app.kubernetes.io/instance=echo,app.kubernetes.io/name=playhouse-server" ||
		got.Status.Endpoint != svc.Spec.ClusterIP+":7777" {
		t.Errorf("status %+v (service cluster IP %s)", got.Status, svc.Spec.ClusterIP)
	}
	if c := condition(got, ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Degraded %+v", c)
	}
	if c := condition(got, ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonReplicasNotReady {
		t.Errorf("Ready before any pod is ready: %+v", c)
	}
	if c := condition(got, ConditionProgressing); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Progressing before the rollout: %+v", c)
	}

	setDeploymentReady(t, s, ns, "echo")
	waitFor(t, "Ready=True and Progressing=False", func() (bool, error) {
		ok, err := s.get(got, ns, "echo")
		r, p := condition(got, ConditionReady), condition(got, ConditionProgressing)
		return ok && r != nil && r.Status == metav1.ConditionTrue && p != nil && p.Status == metav1.ConditionFalse &&
			got.Status.ReadyReplicas == 1 && got.Status.Replicas == 1, err
	})
	for _, c := range got.Status.Conditions {
		if c.ObservedGeneration != got.Generation {
			t.Errorf("condition %s observed generation %d, want %d", c.Type, c.ObservedGeneration, got.Generation)
		}
	}

	// The operator reports what it did as events on the PlayHouseServer.
	waitFor(t, "Created events", func() (bool, error) {
		evs := &eventsv1.EventList{}
		if err := s.c.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
			return false, err
		}
		n := 0
		for _, e := range evs.Items {
			if e.Regarding.Name == "echo" && e.Regarding.Kind == "PlayHouseServer" && e.Reason == "Created" && e.ReportingController == FieldManager {
				n++
			}
		}
		return n >= 4, nil
	})
}

func TestSpecChangeRollsDeployment(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := s.create(t, minimalPHS(ns, "roll"))
	dep := &appsv1.Deployment{}
	waitFor(t, "Deployment", func() (bool, error) { return s.get(dep, ns, "roll") })
	hash := dep.Spec.Template.Annotations[AnnotationConfigHash]
	if hash == "" {
		t.Fatal("no config hash on the pod template")
	}

	// Changing the replica count does not roll the pods.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Replicas = ptr.To(int32(2)) })
	waitFor(t, "replicas 2", func() (bool, error) {
		_, err := s.get(dep, ns, "roll")
		return ptr.Deref(dep.Spec.Replicas, 0) == 2, err
	})
	if got := dep.Spec.Template.Annotations[AnnotationConfigHash]; got != hash {
		t.Errorf("a replica change rolled the pods: hash %s -> %s", hash, got)
	}

	// Changing the config does, and the ConfigMap follows.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) {
		p.Spec.Limits.HeartbeatTimeout = &metav1.Duration{Duration: 45 * time.Second}
	})
	waitFor(t, "new config hash", func() (bool, error) {
		_, err := s.get(dep, ns, "roll")
		return dep.Spec.Template.Annotations[AnnotationConfigHash] != hash, err
	})
	cm := &corev1.ConfigMap{}
	if _, err := s.get(cm, ns, "roll-config"); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil || cfg.Limits.HeartbeatTimeout.Duration != 45*time.Second {
		t.Errorf("ConfigMap not updated: %v %+v", err, cfg.Limits)
	}
	if configHash([]byte(cm.Data["config.yaml"]), "", "roll-signing-key") != dep.Spec.Template.Annotations[AnnotationConfigHash] {
		t.Error("the pod template's hash is not the hash of the ConfigMap's content")
	}
	if dep.Generation < 3 {
		t.Errorf("Deployment generation %d: the template change did not reach it", dep.Generation)
	}
}

func TestDeletedOrEditedChildIsRestored(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := s.create(t, minimalPHS(ns, "heal"))
	ctx := context.Background()

	svc := &corev1.Service{}
	waitFor(t, "Service", func() (bool, error) { return s.get(svc, ns, "heal") })
	oldUID := svc.UID
	if err := s.c.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Service recreated", func() (bool, error) {
		ok, err := s.get(svc, ns, "heal")
		return ok && svc.UID != oldUID, err
	})
	requireController(t, svc, phs)

	dep := &appsv1.Deployment{}
	waitFor(t, "Deployment", func() (bool, error) { return s.get(dep, ns, "heal") })
	wantImage := dep.Spec.Template.Spec.Containers[0].Image
	wantHash := dep.Spec.Template.Annotations[AnnotationConfigHash]
	dep.Spec.Template.Spec.Containers[0].Image = "evil:latest"
	dep.Spec.Template.Annotations[AnnotationConfigHash] = "tampered"
	if err := s.c.Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Deployment restored", func() (bool, error) {
		_, err := s.get(dep, ns, "heal")
		return dep.Spec.Template.Spec.Containers[0].Image == wantImage && dep.Spec.Template.Annotations[AnnotationConfigHash] == wantHash, err
	})
	waitFor(t, "an Updated event naming the Deployment", func() (bool, error) {
		evs := &eventsv1.EventList{}
		if err := s.c.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == "Updated" && e.Regarding.Name == "heal" && e.Related != nil && e.Related.Kind == "Deployment" {
				return true, nil
			}
		}
		return false, nil
	})

	cm := &corev1.ConfigMap{}
	waitFor(t, "ConfigMap", func() (bool, error) { return s.get(cm, ns, "heal-config") })
	wantData := cm.Data["config.yaml"]
	cm.Data["config.yaml"] = "garbage: true\n"
	delete(cm.Labels, LabelManagedBy) // also drops it out of the operator's filtered cache
	if err := s.c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ConfigMap restored", func() (bool, error) {
		_, err := s.get(cm, ns, "heal-config")
		return cm.Data["config.yaml"] == wantData && cm.Labels[LabelManagedBy] == ManagedByValue, err
	})
}

func TestSigningKeySurvivesReconciles(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := s.create(t, minimalPHS(ns, "keys"))
	ctx := context.Background()

	secret := &corev1.Secret{}
	waitFor(t, "signing-key Secret", func() (bool, error) { return s.get(secret, ns, "keys-signing-key") })
	key, rv := bytes.Clone(secret.Data["signing-key"]), secret.ResourceVersion
	s.waitObserved(t, phs)

	// Spec changes and resyncs reconcile several times.
	for i := range 3 {
		updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Limits.MaxConnections = int32(1000 + i)
		})
		s.waitObserved(t, phs)
	}
	if _, err := s.get(secret, ns, "keys-signing-key"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret.Data["signing-key"], key) || secret.ResourceVersion != rv {
		t.Fatalf("the signing key changed across reconciles (resourceVersion %s -> %s)", rv, secret.ResourceVersion)
	}

	// Nobody rotates it by accident: the API server refuses a data change.
	secret.Data["signing-key"] = []byte("x")
	if err := s.c.Update(ctx, secret); err == nil {
		t.Error("the signing-key Secret accepted a data change")
	}

	// A user-named Secret replaces the generated one in the pods (which
	// roll), and the generated one is kept untouched for a switch back.
	s.createSecret(t, ns, "my-key", SigningKeyKey)
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Auth.SigningKeySecretName = "my-key" })
	dep := &appsv1.Deployment{}
	waitFor(t, "pods mount my-key", func() (bool, error) {
		_, err := s.get(dep, ns, "keys")
		for _, src := range dep.Spec.Template.Spec.Volumes[0].Projected.Sources {
			if src.Secret != nil && src.Secret.Name == "my-key" {
				return true, err
			}
		}
		return false, err
	})
	if _, err := s.get(secret, ns, "keys-signing-key"); err != nil || !bytes.Equal(secret.Data["signing-key"], key) {
		t.Errorf("generated key lost after switching to a user Secret: %v", err)
	}
}

func TestServiceMonitorOnlyWithItsCRD(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := minimalPHS(ns, "mon")
	phs.Spec.Monitoring = playhousev1alpha1.MonitoringSpec{ServiceMonitor: true, Labels: map[string]string{"release": "prom"}, Interval: "15s"}
	s.create(t, phs)
	ctx := context.Background()

	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	installed, err := s.get(crd, "", "servicemonitors.monitoring.coreos.com")
	if err != nil {
		t.Fatal(err)
	}
	if installed {
		// Run again in the same process (-count, -shuffle): the CRD stays
		// installed, since removing it would leave the operator's
		// ServiceMonitor informer failing for the rest of the suite.
		t.Log("ServiceMonitor CRD already installed; checking only the behaviour with it")
	} else {
		// Without the CRD: everything else converges, without an error.
		got := s.waitObserved(t, phs)
		if c := condition(got, ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "ServiceMonitor skipped") {
			t.Fatalf("Degraded without the ServiceMonitor CRD: %+v", c)
		}
		if ok, err := s.get(&corev1.Service{}, ns, "mon-metrics"); !ok {
			t.Fatalf("metrics Service missing: %v", err)
		}
		sm := newServiceMonitor()
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mon"}, sm); !meta.IsNoMatchError(err) {
			t.Fatalf("ServiceMonitor kind served before its CRD is installed? get: %v", err)
		}

		// Installing the CRD is picked up without a restart.
		crds, err := envtest.InstallCRDs(s.cfg, envtest.CRDInstallOptions{
			Paths:              []string{filepath.Join("testdata", "servicemonitor-crd.yaml")},
			ErrorIfPathMissing: true,
		})
		if err != nil || len(crds) != 1 {
			t.Fatalf("install ServiceMonitor CRD: %v (%d CRDs)", err, len(crds))
		}
	}
	var sm *unstructured.Unstructured
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "ServiceMonitor created", func() (bool, error) {
		sm = newServiceMonitor()
		err := s.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mon"}, sm)
		if err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return true, nil
	})
	requireController(t, sm, phs)
	waitFor(t, "the skip note to leave the Degraded message", func() (bool, error) {
		_, err := s.get(got, ns, "mon")
		c := condition(got, ConditionDegraded)
		return c != nil && c.Status == metav1.ConditionFalse && !strings.Contains(c.Message, "skipped"), err
	})
	if sm.GetLabels()["release"] != "prom" {
		t.Errorf("labels %v", sm.GetLabels())
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "admin" || eps[0].(map[string]any)["interval"] != "15s" {
		t.Errorf("endpoints %v", eps)
	}

	// Deleted: restored.
	uid := sm.GetUID()
	if err := s.c.Delete(ctx, sm); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ServiceMonitor recreated", func() (bool, error) {
		sm = newServiceMonitor()
		err := s.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mon"}, sm)
		return err == nil && sm.GetUID() != uid, client.IgnoreNotFound(err)
	})

	// Turned off: removed, with the metrics Service.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Monitoring.ServiceMonitor = false })
	waitFor(t, "ServiceMonitor and metrics Service removed", func() (bool, error) {
		err := s.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mon"}, newServiceMonitor())
		svcThere, err2 := s.get(&corev1.Service{}, ns, "mon-metrics")
		if err == nil || svcThere {
			return false, err2
		}
		return true, client.IgnoreNotFound(errors.Join(err, err2))
	})
}

func TestScaleSubresource(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := s.create(t, minimalPHS(ns, "scaled"))
	ctx := context.Background()
	s.waitObserved(t, phs)

	scale := &autoscalingv1.Scale{}
	if err := s.c.SubResource("scale").Get(ctx, phs, scale); err != nil {
		t.Fatalf("get scale: %v", err)
	}
	if scale.Spec.Replicas != 1 {
		t.Errorf("scale spec %d, want 1", scale.Spec.Replicas)
	}
	scale.Spec.Replicas = 4
	if err := s.c.SubResource("scale").Update(ctx, phs, client.WithSubResourceBody(scale)); err != nil {
		t.Fatalf("update scale: %v", err)
	}
	dep := &appsv1.Deployment{}
	waitFor(t, "Deployment scaled to 4", func() (bool, error) {
		_, err := s.get(dep, ns, "scaled")
		return ptr.Deref(dep.Spec.Replicas, 0) == 4, err
	})
	setDeploymentReady(t, s, ns, "scaled")
	waitFor(t, "scale status", func() (bool, error) {
		scale = &autoscalingv1.Scale{}
		err := s.c.SubResource("scale").Get(ctx, phs, scale)
		return scale.Status.Replicas == 4 && scale.Status.Selector == "app.kubernetes.io/instance=scaled,app.kubernetes.io/name=playhouse-server", err
	})
}

// newServerPod creates a pod as the Deployment would, then plays the kubelet:
// with ready set it reports the pod Running and Ready at ip.
func newServerPod(t *testing.T, s *suite, phs *playhousev1alpha1.PlayHouseServer, name, ip string, ready bool) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: phs.Namespace, Name: name, Labels: commonLabels(phs.Name)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: ContainerName, Image: "playhouse:test",
			Ports: []corev1.ContainerPort{{Name: PortAdmin, ContainerPort: 9090}},
		}}},
	}
	if err := s.c.Create(ctx, pod); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		PodIP:      ip,
		PodIPs:     []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}},
	}
	if err := s.c.Status().Update(ctx, pod); err != nil {
		t.Fatalf("set pod status: %v", err)
	}
	return pod
}

// podCost returns the pod's deletion-cost annotation ("" when unset).
func (s *suite) podCost(pod *corev1.Pod) (string, error) {
	p := &corev1.Pod{}
	err := s.c.Get(context.Background(), client.ObjectKeyFromObject(pod), p)
	return p.Annotations[AnnotationPodDeletionCost], err
}

func TestPodDeletionCostFromSessions(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := s.create(t, minimalPHS(ns, "cost"))
	s.waitObserved(t, phs)

	busy := newServerPod(t, s, phs, "cost-busy", "10.1.0.1", true)
	idle := newServerPod(t, s, phs, "cost-idle", "10.1.0.2", true)
	starting := newServerPod(t, s, phs, "cost-starting", "10.1.0.3", false)
	silent := newServerPod(t, s, phs, "cost-silent", "10.1.0.4", true) // its /status fails
	s.sessions.set(ns+"/cost-busy", 120)
	s.sessions.set(ns+"/cost-idle", 3)
	s.sessions.set(ns+"/cost-starting", 999)

	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "deletion costs and status.sessions", func() (bool, error) {
		b, err1 := s.podCost(busy)
		i, err2 := s.podCost(idle)
		_, err3 := s.get(got, ns, "cost")
		return b == "120" && i == "3" && got.Status.Sessions == 123, errors.Join(err1, err2, err3)
	})
	if c, err := s.podCost(starting); err != nil || c != "" {
		t.Errorf("a pod that is not ready got deletion cost %q (%v)", c, err)
	}
	if n := s.sessions.readCount(ns + "/cost-starting"); n != 0 {
		t.Errorf("a pod that is not ready was read %d times", n)
	}
	if c, err := s.podCost(silent); err != nil || c != "" {
		t.Errorf("an unreadable pod got deletion cost %q (%v)", c, err)
	}

	// Sessions move: the costs follow at the next resync; an unchanged pod is not written.
	before := &corev1.Pod{}
	if err := s.c.Get(context.Background(), client.ObjectKeyFromObject(idle), before); err != nil {
		t.Fatal(err)
	}
	s.sessions.set(ns+"/cost-busy", 7)
	waitFor(t, "updated deletion cost", func() (bool, error) {
		b, err1 := s.podCost(busy)
		_, err2 := s.get(got, ns, "cost")
		return b == "7" && got.Status.Sessions == 10, errors.Join(err1, err2)
	})
	after := &corev1.Pod{}
	if err := s.c.Get(context.Background(), client.ObjectKeyFromObject(idle), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("pod with unchanged sessions was written (resourceVersion %s -> %s)", before.ResourceVersion, after.ResourceVersion)
	}
}

func TestSamplesApply(t *testing.T) {
	s := envOrSkip(t)
	dir := filepath.Join("..", "config", "samples")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var samples []*playhousev1alpha1.PlayHouseServer
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		samples = append(samples, readSamples(t, f)...)
	}
	if len(samples) < 2 {
		t.Fatalf("want at least the minimal and the full sample in %s, found %d PlayHouseServers", dir, len(samples))
	}
	for _, phs := range samples {
		t.Run(phs.Name, func(t *testing.T) {
			ns := s.newNamespace(t)
			phs.Namespace = ns
			s.createReferencedSecrets(t, phs)
			s.create(t, phs)
			got := s.waitObserved(t, phs)
			if c := condition(got, ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
				t.Errorf("Degraded %+v", c)
			}
			for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}} {
				if ok, err := s.get(obj, ns, phs.Name); !ok {
					t.Errorf("%T missing: %v", obj, err)
				}
			}
			// The server reads the rendered file as the operator computed it
			// from the stored (defaulted) object.
			cm := &corev1.ConfigMap{}
			if ok, err := s.get(cm, ns, phs.Name+"-config"); !ok {
				t.Fatalf("ConfigMap missing: %v", err)
			}
			parsed, err := config.Parse([]byte(cm.Data[ConfigKey]))
			if err != nil {
				t.Fatalf("the server refuses the sample's config: %v\n%s", err, cm.Data[ConfigKey])
			}
			if want, err := renderConfig(got); err != nil || !reflect.DeepEqual(parsed, want) {
				t.Errorf("the server reads another config than the operator rendered (%v):\n got %+v\nwant %+v", err, parsed, want)
			}
			if parsed.Auth.SigningKeyFile != SigningKeyPath {
				t.Errorf("signingKeyFile %q in %s mode, want %q", parsed.Auth.SigningKeyFile, parsed.Auth.Mode, SigningKeyPath)
			}
			dep := &appsv1.Deployment{}
			if _, err := s.get(dep, ns, phs.Name); err != nil {
				t.Fatal(err)
			}
			if !projectedPaths(t, dep)[usedSigningKeySecret(got)+":"+SigningKeyKey+"->auth/"+SigningKeyKey] {
				t.Errorf("the pods do not mount the signing key the config names")
			}
			if phs.Spec.Autoscaling.Enabled {
				if ok, err := s.get(&autoscalingv2.HorizontalPodAutoscaler{}, ns, phs.Name); !ok {
					t.Errorf("HorizontalPodAutoscaler missing: %v", err)
				}
			}
			if phs.Spec.DisruptionBudget.Enabled {
				if ok, err := s.get(&policyv1.PodDisruptionBudget{}, ns, phs.Name); !ok {
					t.Errorf("PodDisruptionBudget missing: %v", err)
				}
			}
		})
	}
}

// readSamples decodes every PlayHouseServer document of a YAML file.
func readSamples(t *testing.T, path string) []*playhousev1alpha1.PlayHouseServer {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var out []*playhousev1alpha1.PlayHouseServer
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if tm.Kind != "PlayHouseServer" {
			continue
		}
		phs := &playhousev1alpha1.PlayHouseServer{}
		if err := yaml.UnmarshalStrict(doc, phs); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, phs)
	}
}

func TestAutoscalingKeepsReplicasOnHandover(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := minimalPHS(ns, "grow")
	phs.Spec.Replicas = ptr.To(int32(3))
	s.create(t, phs)
	dep := &appsv1.Deployment{}
	waitFor(t, "Deployment with 3 replicas", func() (bool, error) {
		_, err := s.get(dep, ns, "grow")
		return ptr.Deref(dep.Spec.Replicas, 0) == 3, err
	})

	// Turning autoscaling on must not reset the Deployment to the API
	// default of one replica while the HPA has not scaled yet.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) {
		p.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To(int32(2)), MaxReplicas: 6, TargetSessionsPerPod: 100}
	})
	s.waitObserved(t, phs)
	if ok, err := s.get(&autoscalingv2.HorizontalPodAutoscaler{}, ns, "grow"); !ok {
		t.Fatalf("HPA missing: %v", err)
	}
	if _, err := s.get(dep, ns, "grow"); err != nil {
		t.Fatal(err)
	}
	if got := ptr.Deref(dep.Spec.Replicas, 0); got != 3 {
		t.Fatalf("replicas %d after autoscaling was enabled, want 3 kept until the HPA decides", got)
	}
	if appliesReplicas(dep.ManagedFields) {
		t.Error("the operator still applies spec.replicas under autoscaling")
	}
	// The HPA (played here through the scale subresource) now moves it.
	scale := &autoscalingv1.Scale{}
	if err := s.c.SubResource("scale").Get(context.Background(), dep, scale); err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 5
	if err := s.c.SubResource("scale").Update(context.Background(), dep, client.WithSubResourceBody(scale)); err != nil {
		t.Fatal(err)
	}
	// Later passes (a spec change forces one) leave the HPA's count alone.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Limits.MaxConnections = 900 })
	s.waitObserved(t, phs)
	if _, err := s.get(dep, ns, "grow"); err != nil || ptr.Deref(dep.Spec.Replicas, 0) != 5 {
		t.Errorf("replicas %v (%v), want the autoscaler's 5", dep.Spec.Replicas, err)
	}
}

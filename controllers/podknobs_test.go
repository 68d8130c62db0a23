package controllers

import (
	"context"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/internal/testcert"
)

// TestPlatformKnobsReachTheChildren creates a PlayHouseServer with every
// platform knob through the real API server and checks that the Deployment,
// Service and HorizontalPodAutoscaler the operator writes carry them.
func TestPlatformKnobsReachTheChildren(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := minimalPHS(ns, "knobs")
	phs.Spec.Pod = playhousev1alpha1.PodOverrides{
		ImagePullSecrets:   []corev1.LocalObjectReference{{Name: "regcred"}},
		PriorityClassName:  "game-critical",
		ServiceAccountName: "game-servers",
	}
	phs.Spec.Transports = playhousev1alpha1.TransportsSpec{
		TCP:       playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7777},
		WebSocket: playhousev1alpha1.WebSocketSpec{Enabled: true, Port: 7778, ServicePort: 80, Path: "/ws"},
		TLSTCP:    playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7779, ServicePort: 443},
		TLS:       playhousev1alpha1.TLSSpec{SecretName: "knobs-tls"},
	}
	phs.Spec.DrainTimeout = &metav1.Duration{Duration: 2 * time.Minute}
	phs.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MaxReplicas: 10, TargetSessionsPerPod: 500}
	phs.Spec.DisruptionBudget.Enabled = true
	// The referenced TLS Secret exists, so nothing but the knobs is under test.
	certs, err := testcert.Write(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := os.ReadFile(certs.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(certs.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	tlsSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "knobs-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	if err := s.c.Create(context.Background(), tlsSecret); err != nil {
		t.Fatal(err)
	}
	s.create(t, phs)

	dep := &appsv1.Deployment{}
	waitFor(t, "Deployment knobs", func() (bool, error) { return s.get(dep, ns, "knobs") })
	ps := dep.Spec.Template.Spec
	if len(ps.ImagePullSecrets) != 1 || ps.ImagePullSecrets[0].Name != "regcred" || ps.PriorityClassName != "game-critical" ||
		ps.ServiceAccountName != "game-servers" {
		t.Errorf("pod spec: pull secrets %v, priority class %q, service account %q", ps.ImagePullSecrets, ps.PriorityClassName, ps.ServiceAccountName)
	}
	if len(ps.TopologySpreadConstraints) != 2 || ps.TopologySpreadConstraints[0].TopologyKey != TopologyKeyHostname ||
		ps.TopologySpreadConstraints[1].TopologyKey != TopologyKeyZone || ps.TopologySpreadConstraints[0].WhenUnsatisfiable != corev1.ScheduleAnyway {
		t.Errorf("default topology spread: %+v", ps.TopologySpreadConstraints)
	}
	res := ps.Containers[0].Resources
	if res.Requests.Cpu().String() != DefaultCPURequest || res.Requests.Memory().String() != DefaultMemoryRequest {
		t.Errorf("default requests %+v", res.Requests)
	}
	cports := map[string]int32{}
	for _, p := range ps.Containers[0].Ports {
		cports[p.Name] = p.ContainerPort
	}
	if cports[PortWS] != 7778 || cports[PortTLSTCP] != 7779 {
		t.Errorf("container ports %v", cports)
	}

	svc := &corev1.Service{}
	waitFor(t, "Service knobs", func() (bool, error) { return s.get(svc, ns, "knobs") })
	sports := map[string]corev1.ServicePort{}
	for _, p := range svc.Spec.Ports {
		sports[p.Name] = p
	}
	for name, want := range map[string]int32{PortTCP: 7777, PortWS: 80, PortTLSTCP: 443} {
		if sports[name].Port != want || sports[name].TargetPort != intstr.FromString(name) {
			t.Errorf("Service port %s %+v, want %d targeting %s", name, sports[name], want, name)
		}
	}

	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	waitFor(t, "HorizontalPodAutoscaler knobs", func() (bool, error) { return s.get(hpa, ns, "knobs") })
	sd := hpa.Spec.Behavior.ScaleDown
	if sd == nil || ptr.Deref(sd.StabilizationWindowSeconds, 0) != 300 || len(sd.Policies) != 2 ||
		sd.Policies[0] != (autoscalingv2.HPAScalingPolicy{Type: autoscalingv2.PodsScalingPolicy, Value: 1, PeriodSeconds: 120}) ||
		sd.Policies[1] != (autoscalingv2.HPAScalingPolicy{Type: autoscalingv2.PercentScalingPolicy, Value: 10, PeriodSeconds: 120}) {
		t.Errorf("scale-down behavior %+v", sd)
	}

	pdb := &policyv1.PodDisruptionBudget{}
	waitFor(t, "PodDisruptionBudget knobs", func() (bool, error) { return s.get(pdb, ns, "knobs") })
	if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("default PDB %+v", pdb.Spec)
	}

	// Own constraints and behavior replace the defaults on the live objects.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) {
		p.Spec.Pod.DefaultTopologySpread = ptr.To(false)
		p.Spec.Autoscaling.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{
			ScaleDown: &autoscalingv2.HPAScalingRules{
				StabilizationWindowSeconds: ptr.To(int32(900)),
				Policies:                   []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PodsScalingPolicy, Value: 2, PeriodSeconds: 600}},
			},
		}
	})
	waitFor(t, "the default spread to go and the own scale-down to arrive", func() (bool, error) {
		if ok, err := s.get(dep, ns, "knobs"); !ok || err != nil {
			return false, err
		}
		if ok, err := s.get(hpa, ns, "knobs"); !ok || err != nil {
			return false, err
		}
		sd := hpa.Spec.Behavior.ScaleDown
		return len(dep.Spec.Template.Spec.TopologySpreadConstraints) == 0 && sd != nil &&
			ptr.Deref(sd.StabilizationWindowSeconds, 0) == 900 && len(sd.Policies) == 1 && sd.Policies[0].Value == 2, nil
	})
}

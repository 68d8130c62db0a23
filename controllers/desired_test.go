package controllers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/pkg/config"
)

// newPHS returns a PlayHouseServer as the API server stores a minimal one:
// with the CRD's defaults filled in.
func newPHS() *playhousev1alpha1.PlayHouseServer {
	return &playhousev1alpha1.PlayHouseServer{
		TypeMeta: metav1.TypeMeta{APIVersion: playhousev1alpha1.GroupVersion.String(), Kind: "PlayHouseServer"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "game", Namespace: "ns", UID: types.UID("uid-1"), Generation: 3,
		},
		Spec: playhousev1alpha1.PlayHouseServerSpec{
			Replicas: ptr.To(int32(2)),
			App:      "echo",
			Transports: playhousev1alpha1.TransportsSpec{
				TCP:       playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7777},
				WebSocket: playhousev1alpha1.WebSocketSpec{Enabled: true, Port: 7778, Path: "/ws"},
				TLSTCP:    playhousev1alpha1.ListenerSpec{Port: 7779},
				WSS:       playhousev1alpha1.WebSocketSpec{Port: 7780, Path: "/ws"},
			},
			Auth:         playhousev1alpha1.AuthSpec{Mode: "open"},
			Service:      playhousev1alpha1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal},
			DrainTimeout: &metav1.Duration{Duration: 30 * time.Second},
		},
	}
}

// withTLS enables both TLS transports with a certificate Secret.
func withTLS(p *playhousev1alpha1.PlayHouseServer) *playhousev1alpha1.PlayHouseServer {
	p.Spec.Transports.TLSTCP.Enabled = true
	p.Spec.Transports.WSS.Enabled = true
	p.Spec.Transports.TLS.SecretName = "game-tls"
	return p
}

func mustDeployment(t *testing.T, p *playhousev1alpha1.PlayHouseServer) *appsv1.Deployment {
	t.Helper()
	d, err := desiredDeployment(p, "example/playhouse:1")
	if err != nil {
		t.Fatalf("desiredDeployment: %v", err)
	}
	return d
}

func checkOwned(t *testing.T, obj metav1.Object) {
	t.Helper()
	refs := obj.GetOwnerReferences()
	if len(refs) != 1 {
		t.Fatalf("%s: want 1 owner reference, got %d", obj.GetName(), len(refs))
	}
	r := refs[0]
	if r.Kind != "PlayHouseServer" || r.Name != "game" || r.UID != "uid-1" || r.APIVersion != "playhouse.dev/v1alpha1" ||
		!ptr.Deref(r.Controller, false) || !ptr.Deref(r.BlockOwnerDeletion, false) {
		t.Errorf("%s: owner reference %+v is not a controller reference to the PlayHouseServer", obj.GetName(), r)
	}
	want := map[string]string{LabelName: AppName, LabelInstance: "game", LabelManagedBy: ManagedByValue}
	for k, v := range want {
		if obj.GetLabels()[k] != v {
			t.Errorf("%s: label %s = %q, want %q", obj.GetName(), k, obj.GetLabels()[k], v)
		}
	}
	if obj.GetNamespace() != "ns" {
		t.Errorf("%s: namespace %q, want ns", obj.GetName(), obj.GetNamespace())
	}
}

func TestRenderConfigDefaults(t *testing.T) {
	c, err := renderConfig(newPHS())
	if err != nil {
		t.Fatal(err)
	}
	if c.BindAddress != "0.0.0.0" || c.Log.Format != "json" {
		t.Errorf("bind %q log %q, want 0.0.0.0 and json", c.BindAddress, c.Log.Format)
	}
	if c.Auth.SigningKeyFile != "/etc/playhouse/auth/signing-key" {
		t.Errorf("signing key file %q", c.Auth.SigningKeyFile)
	}
	if c.Transports.TLS != config.Default().Transports.TLS {
		t.Errorf("TLS files set without a TLS secret, or TLS defaults lost: %+v", c.Transports.TLS)
	}
	if c.Transports.ProxyProtocol.Enabled || c.Transports.ProxyProtocol.HeaderTimeout != config.Default().Transports.ProxyProtocol.HeaderTimeout {
		t.Errorf("PROXY protocol %+v, want off with the default header timeout", c.Transports.ProxyProtocol)
	}
	// Everything the spec leaves unset keeps the server's defaults.
	def := config.Default()
	if c.Limits.MaxConnections != def.Limits.MaxConnections || c.Limits.HeartbeatTimeout != def.Limits.HeartbeatTimeout ||
		c.Limits.RateLimit != def.Limits.RateLimit || c.Protocol != def.Protocol || c.Admin.Port != 9090 {
		t.Errorf("defaults not kept: %+v", c)
	}
}

func TestRenderConfigOverlay(t *testing.T) {
	p := withTLS(newPHS())
	p.Spec.Limits = playhousev1alpha1.LimitsSpec{
		MaxPacketSize:       4096,
		MaxConnections:      500,
		MaxConnectionsPerIP: 3,
		PerIPExempt:         []string{"10.0.0.0/8"},
		RateLimit:           playhousev1alpha1.RateLimitSpec{PacketsPerSecond: 50, Burst: 60, MaxViolations: 7},
		HeartbeatTimeout:    &metav1.Duration{Duration: 20 * time.Second},
		AuthTimeout:         &metav1.Duration{Duration: 3 * time.Second},
		MaxAuthAttempts:     2,
		WriteTimeout:        &metav1.Duration{Duration: time.Second},
	}
	p.Spec.Protocol = playhousev1alpha1.ProtocolSpec{RequestHeader: "full", HeartbeatMsgId: "hb",
		Compression: playhousev1alpha1.CompressionSpec{Enabled: true, Threshold: 100}}
	p.Spec.Auth = playhousev1alpha1.AuthSpec{Mode: "token", ReconnectTokenLifetime: &metav1.Duration{Duration: time.Minute}}
	p.Spec.Transports.ProxyProtocol = playhousev1alpha1.ProxyProtocolSpec{Enabled: true, TrustedCIDRs: []string{"10.1.0.0/16"}}
	p.Spec.Transports.WebSocket.AllowedOrigins = []string{"https://game.example"}
	p.Spec.DrainTimeout = &metav1.Duration{Duration: 45 * time.Second}

	c, err := renderConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.MaxPacketSize != 4096 || l.MaxConnections != 500 || l.MaxConnectionsPerIP != 3 || l.PerIPExempt[0] != "10.0.0.0/8" ||
		l.RateLimit != (config.RateLimit{PacketsPerSecond: 50, Burst: 60, MaxViolations: 7}) ||
		l.HeartbeatTimeout.Duration != 20*time.Second || l.AuthTimeout.Duration != 3*time.Second || l.MaxAuthAttempts != 2 ||
		l.WriteTimeout.Duration != time.Second || l.TLSHandshakeTimeout != config.Default().Limits.TLSHandshakeTimeout {
		t.Errorf("limits not overlaid: %+v", l)
	}
	if c.Protocol.RequestHeader != "full" || c.Protocol.HeartbeatMsgID != "hb" || c.Protocol.AuthenticateMsgID != "AuthenticateRequest" ||
		!c.Protocol.Compression.Enabled || c.Protocol.Compression.Threshold != 100 {
		t.Errorf("protocol not overlaid: %+v", c.Protocol)
	}
	if c.Auth.Mode != "token" || c.Auth.ReconnectTokenLifetime.Duration != time.Minute {
		t.Errorf("auth not overlaid: %+v", c.Auth)
	}
	if c.Transports.TLS.CertFile != "/etc/playhouse/tls/tls.crt" || c.Transports.TLS.KeyFile != "/etc/playhouse/tls/tls.key" {
		t.Errorf("TLS files: %+v", c.Transports.TLS)
	}
	if !c.Transports.TLSTCP.Enabled || c.Transports.TLSTCP.Port != 7779 || !c.Transports.WSS.Enabled || c.Transports.WSS.Path != "/ws" {
		t.Errorf("TLS listeners: %+v %+v", c.Transports.TLSTCP, c.Transports.WSS)
	}
	if !c.Transports.ProxyProtocol.Enabled || c.Transports.WebSocket.AllowedOrigins[0] != "https://game.example" {
		t.Errorf("proxy protocol / origins not overlaid: %+v", c.Transports)
	}
	if c.DrainTimeout.Duration != 45*time.Second {
		t.Errorf("drain timeout %s", c.DrainTimeout.Duration)
	}
}

func TestRenderConfigInvalid(t *testing.T) {
	p := newPHS()
	p.Spec.Transports.TCP.Enabled = false
	p.Spec.Transports.WebSocket.Enabled = false
	if _, err := renderConfig(p); err == nil || !strings.Contains(err.Error(), "no transport is enabled") {
		t.Fatalf("want a validation error naming the problem, got %v", err)
	}
	if _, err := desiredDeployment(p, ""); err == nil {
		t.Fatal("desiredDeployment accepted an invalid spec")
	}
}

func TestDesiredConfigMap(t *testing.T) {
	cm, err := desiredConfigMap(newPHS())
	if err != nil {
		t.Fatal(err)
	}
	checkOwned(t, cm)
	if cm.Name != "game-config" || cm.Kind != "ConfigMap" || cm.APIVersion != "v1" {
		t.Errorf("name/type: %s %s/%s", cm.Name, cm.APIVersion, cm.Kind)
	}
	// The server reads the file back unchanged.
	got, err := config.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("server refuses the rendered config: %v", err)
	}
	want, _ := renderConfig(newPHS())
	if got.BindAddress != want.BindAddress || got.Transports.TCP != want.Transports.TCP || got.Auth != want.Auth {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got, want)
	}
}

func TestDesiredSigningKeySecret(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	s := desiredSigningKeySecret(newPHS(), key)
	checkOwned(t, s)
	if s.Name != "game-signing-key" || string(s.Data["signing-key"]) != string(key) || !ptr.Deref(s.Immutable, false) {
		t.Errorf("secret: %+v", s)
	}
	p := newPHS()
	p.Spec.Auth.SigningKeySecretName = "mine"
	if desiredSigningKeySecret(p, key) != nil {
		t.Error("a Secret is generated although the spec names its own")
	}
}

func TestDesiredDeploymentPorts(t *testing.T) {
	type port struct {
		name string
		port int32
	}
	for _, tc := range []struct {
		name string
		phs  *playhousev1alpha1.PlayHouseServer
		want []port
	}{
		{"default", newPHS(), []port{{"tcp", 7777}, {"ws", 7778}, {"admin", 9090}}},
		{"tls", withTLS(newPHS()), []port{{"tcp", 7777}, {"ws", 7778}, {"tls-tcp", 7779}, {"wss", 7780}, {"admin", 9090}}},
		{"custom", func() *playhousev1alpha1.PlayHouseServer {
			p := newPHS()
			p.Spec.Transports.TCP.Port = 9000
			p.Spec.Transports.WebSocket.Enabled = false
			return p
		}(), []port{{"tcp", 9000}, {"admin", 9090}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustDeployment(t, tc.phs).Spec.Template.Spec.Containers[0]
			var got []port
			for _, p := range c.Ports {
				if p.Protocol != corev1.ProtocolTCP {
					t.Errorf("port %s protocol %s", p.Name, p.Protocol)
				}
				got = append(got, port{p.Name, p.ContainerPort})
			}
			if len(got) != len(tc.want) {
				t.Fatalf("ports %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("ports %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestDesiredDeployment(t *testing.T) {
	p := newPHS()
	p.Spec.Pod = playhousev1alpha1.PodOverrides{
		NodeSelector: map[string]string{"pool": "game"},
		Tolerations:  []corev1.Toleration{{Key: "game", Operator: corev1.TolerationOpExists}},
		Env:          []corev1.EnvVar{{Name: "A", Value: "b"}},
		Annotations:  map[string]string{"team": "x", AnnotationConfigHash: "user-cannot-set-this"},
		Labels:       map[string]string{"tier": "edge", LabelManagedBy: "someone-else"},
	}
	p.Spec.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}
	p.Spec.ImagePullPolicy = corev1.PullAlways
	d := mustDeployment(t, p)
	checkOwned(t, d)
	if d.Name != "game" || d.APIVersion != "apps/v1" || d.Kind != "Deployment" {
		t.Errorf("name/type: %s %s/%s", d.Name, d.APIVersion, d.Kind)
	}
	if ptr.Deref(d.Spec.Replicas, -1) != 2 {
		t.Errorf("replicas %v, want 2", d.Spec.Replicas)
	}
	if sel := d.Spec.Selector.MatchLabels; len(sel) != 2 || sel[LabelName] != AppName || sel[LabelInstance] != "game" {
		t.Errorf("selector %v", sel)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update %+v: want maxUnavailable 0", ru)
	}
	tpl := d.Spec.Template
	if tpl.Labels["tier"] != "edge" || tpl.Labels[LabelManagedBy] != ManagedByValue || tpl.Labels[LabelInstance] != "game" {
		t.Errorf("pod labels %v: user labels kept, operator labels win", tpl.Labels)
	}
	if tpl.Annotations["team"] != "x" || len(tpl.Annotations[AnnotationConfigHash]) != 64 {
		t.Errorf("pod annotations %v", tpl.Annotations)
	}
	ps := tpl.Spec
	if ps.NodeSelector["pool"] != "game" || len(ps.Tolerations) != 1 || ptr.Deref(ps.EnableServiceLinks, true) {
		t.Errorf("scheduling overrides not applied: %+v", ps)
	}
	if ptr.Deref(ps.AutomountServiceAccountToken, true) {
		t.Error("service account token mounted into a pod that never calls the API")
	}
	c := ps.Containers[0]
	if c.Name != "playhouse-server" || c.Image != "example/playhouse:1" || c.ImagePullPolicy != corev1.PullAlways ||
		strings.Join(c.Args, " ") != "--config /etc/playhouse/config.yaml" || c.Env[0].Name != "A" ||
		!c.Resources.Limits.Memory().Equal(resource.MustParse("256Mi")) {
		t.Errorf("container %+v", c)
	}

	// Probes on the admin port.
	for name, pr := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != name || pr.HTTPGet.Port != intstr.FromString("admin") {
			t.Errorf("probe %s: %+v", name, pr)
		}
	}

	// Restricted pod security standard.
	psc, sc := ps.SecurityContext, c.SecurityContext
	if !ptr.Deref(psc.RunAsNonRoot, false) || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || ptr.Deref(psc.RunAsUser, 0) == 0 {
		t.Errorf("pod security context %+v", psc)
	}
	if ptr.Deref(sc.AllowPrivilegeEscalation, true) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || !ptr.Deref(sc.RunAsNonRoot, false) ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container security context %+v", sc)
	}

	// The config file and the signing key are mounted where the config says.
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/playhouse" || !c.VolumeMounts[0].ReadOnly {
		t.Errorf("mounts %+v", c.VolumeMounts)
	}
	paths := projectedPaths(t, d)
	for _, want := range []string{"game-config:config.yaml->config.yaml", "game-signing-key:signing-key->auth/signing-key"} {
		if !paths[want] {
			t.Errorf("projected volume lacks %s: %v", want, paths)
		}
	}
	if len(paths) != 2 {
		t.Errorf("unexpected projections without TLS: %v", paths)
	}
}

// projectedPaths lists "source:key->path" of the pod's projected volume.
func projectedPaths(t *testing.T, d *appsv1.Deployment) map[string]bool {
	t.Helper()
	vols := d.Spec.Template.Spec.Volumes
	if len(vols) != 1 || vols[0].Projected == nil {
		t.Fatalf("volumes %+v: want one projected volume", vols)
	}
	out := map[string]bool{}
	for _, s := range vols[0].Projected.Sources {
		switch {
		case s.ConfigMap != nil:
			for _, i := range s.ConfigMap.Items {
				out[s.ConfigMap.Name+":"+i.Key+"->"+i.Path] = true
			}
		case s.Secret != nil:
			for _, i := range s.Secret.Items {
				out[s.Secret.Name+":"+i.Key+"->"+i.Path] = true
			}
		}
	}
	return out
}

func TestDesiredDeploymentTLSAndUserSigningKey(t *testing.T) {
	p := withTLS(newPHS())
	p.Spec.Auth.SigningKeySecretName = "my-key"
	paths := projectedPaths(t, mustDeployment(t, p))
	for _, want := range []string{
		"game-tls:tls.crt->tls/tls.crt", "game-tls:tls.key->tls/tls.key", "my-key:signing-key->auth/signing-key",
	} {
		if !paths[want] {
			t.Errorf("projected volume lacks %s: %v", want, paths)
		}
	}
}

func TestDesiredDeploymentDefaultImage(t *testing.T) {
	p := newPHS()
	d, err := desiredDeployment(p, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Spec.Template.Spec.Containers[0].Image; got != DefaultServerImage {
		t.Errorf("image %q, want %q", got, DefaultServerImage)
	}
	p.Spec.Image = "mine:2"
	if got := mustDeployment(t, p).Spec.Template.Spec.Containers[0].Image; got != "mine:2" {
		t.Errorf("spec image ignored: %q", got)
	}
}

func TestTerminationGraceAboveDrainTimeout(t *testing.T) {
	for _, drain := range []time.Duration{time.Second, 30 * time.Second, 90*time.Second + 500*time.Millisecond, 10 * time.Minute} {
		p := newPHS()
		p.Spec.DrainTimeout = &metav1.Duration{Duration: drain}
		grace := ptr.Deref(mustDeployment(t, p).Spec.Template.Spec.TerminationGracePeriodSeconds, 0)
		if time.Duration(grace)*time.Second <= drain {
			t.Errorf("drain %s: terminationGracePeriodSeconds %d is not above it", drain, grace)
		}
	}
}

func TestConfigHash(t *testing.T) {
	hash := func(p *playhousev1alpha1.PlayHouseServer) string {
		return mustDeployment(t, p).Spec.Template.Annotations[AnnotationConfigHash]
	}
	base := hash(newPHS())
	if base != hash(newPHS()) {
		t.Fatal("hash is not stable for the same spec")
	}
	changes := map[string]func(p *playhousev1alpha1.PlayHouseServer){
		"limit": func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Limits.MaxConnections = 42 },
		"port":  func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Transports.TCP.Port = 7000 },
		"drain": func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.DrainTimeout = &metav1.Duration{Duration: time.Minute}
		},
		"tls secret":  func(p *playhousev1alpha1.PlayHouseServer) { withTLS(p) },
		"signing key": func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Auth.SigningKeySecretName = "other" },
		"auth mode":   func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Auth.Mode = "token" },
		"allowed orgs": func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Transports.WebSocket.AllowedOrigins = []string{"https://a"}
		},
	}
	for name, change := range changes {
		p := newPHS()
		change(p)
		if hash(p) == base {
			t.Errorf("%s: config hash did not change", name)
		}
	}
	// Changes that do not touch the pods' files keep the hash.
	p := newPHS()
	p.Spec.Replicas = ptr.To(int32(9))
	p.Spec.Service.Type = corev1.ServiceTypeClusterIP
	if hash(p) != base {
		t.Error("replicas or service type changed the config hash")
	}
	if got := configHash([]byte("a"), "x", ""); got == configHash([]byte("a"), "", "x") {
		t.Error("hash confuses the TLS and signing-key secret names")
	}
}

func TestDesiredDeploymentAutoscaled(t *testing.T) {
	p := newPHS()
	p.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MaxReplicas: 5, TargetSessionsPerPod: 100}
	if d := mustDeployment(t, p); d.Spec.Replicas != nil {
		t.Errorf("replicas %d set although the autoscaler owns them", *d.Spec.Replicas)
	}
}

func TestDesiredService(t *testing.T) {
	p := withTLS(newPHS())
	p.Spec.Service.Annotations = map[string]string{"lb": "nlb"}
	p.Spec.Service.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
	svc, err := desiredService(p)
	if err != nil {
		t.Fatal(err)
	}
	checkOwned(t, svc)
	if svc.Name != "game" || svc.Spec.Type != corev1.ServiceTypeLoadBalancer ||
		svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal ||
		svc.Annotations["lb"] != "nlb" || svc.Spec.LoadBalancerSourceRanges[0] != "203.0.113.0/24" {
		t.Errorf("service %+v", svc)
	}
	want := []corev1.ServicePort{
		{Name: "tcp", Port: 7777, TargetPort: intstr.FromString("tcp"), Protocol: corev1.ProtocolTCP},
		{Name: "ws", Port: 7778, TargetPort: intstr.FromString("ws"), Protocol: corev1.ProtocolTCP},
		{Name: "tls-tcp", Port: 7779, TargetPort: intstr.FromString("tls-tcp"), Protocol: corev1.ProtocolTCP},
		{Name: "wss", Port: 7780, TargetPort: intstr.FromString("wss"), Protocol: corev1.ProtocolTCP},
	}
	if len(svc.Spec.Ports) != len(want) {
		t.Fatalf("ports %+v", svc.Spec.Ports)
	}
	for i := range want {
		if svc.Spec.Ports[i] != want[i] {
			t.Errorf("port %d: %+v, want %+v", i, svc.Spec.Ports[i], want[i])
		}
	}
	if sel := svc.Spec.Selector; len(sel) != 2 || sel[LabelInstance] != "game" {
		t.Errorf("selector %v", sel)
	}

	p.Spec.Service.Type = corev1.ServiceTypeClusterIP
	svc, _ = desiredService(p)
	if svc.Spec.ExternalTrafficPolicy != "" || svc.Spec.LoadBalancerSourceRanges != nil {
		t.Errorf("ClusterIP Service carries load balancer fields: %+v", svc.Spec)
	}
	p.Spec.Service.Type = corev1.ServiceTypeNodePort
	p.Spec.Service.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	svc, _ = desiredService(p)
	if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster || svc.Spec.LoadBalancerSourceRanges != nil {
		t.Errorf("NodePort Service: %+v", svc.Spec)
	}
}

func TestDesiredHPA(t *testing.T) {
	p := newPHS()
	if h, err := desiredHPA(p); h != nil || err != nil {
		t.Fatalf("HPA without autoscaling: %v %v", h, err)
	}
	p.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To(int32(2)), MaxReplicas: 20, TargetSessionsPerPod: 800}
	h, err := desiredHPA(p)
	if err != nil {
		t.Fatal(err)
	}
	checkOwned(t, h)
	s := h.Spec
	if s.ScaleTargetRef != (autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "game"}) ||
		ptr.Deref(s.MinReplicas, 0) != 2 || s.MaxReplicas != 20 || h.APIVersion != "autoscaling/v2" {
		t.Errorf("hpa %+v", h)
	}
	if len(s.Metrics) != 1 || s.Metrics[0].Type != autoscalingv2.PodsMetricSourceType || s.Metrics[0].Pods.Metric.Name != "playhouse_sessions_active" ||
		s.Metrics[0].Pods.Target.Type != autoscalingv2.AverageValueMetricType || s.Metrics[0].Pods.Target.AverageValue.Value() != 800 {
		t.Errorf("metrics %+v", s.Metrics)
	}
	if ptr.Deref(s.Behavior.ScaleDown.StabilizationWindowSeconds, 0) != 300 {
		t.Errorf("default scale-down stabilization %v", s.Behavior.ScaleDown.StabilizationWindowSeconds)
	}
	p.Spec.Autoscaling.ScaleDownStabilizationSeconds = ptr.To(int32(60))
	h, _ = desiredHPA(p)
	if ptr.Deref(h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds, 0) != 60 {
		t.Errorf("scale-down stabilization %v", h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds)
	}
}

func TestDesiredPDB(t *testing.T) {
	p := newPHS()
	if desiredPDB(p) != nil {
		t.Fatal("PDB without disruptionBudget.enabled")
	}
	p.Spec.DisruptionBudget.Enabled = true
	pdb := desiredPDB(p)
	checkOwned(t, pdb)
	if pdb.APIVersion != "policy/v1" || pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable.IntValue() != 1 ||
		pdb.Spec.Selector.MatchLabels[LabelInstance] != "game" {
		t.Errorf("default PDB %+v", pdb.Spec)
	}
	p.Spec.DisruptionBudget.MinAvailable = ptr.To(intstr.FromString("50%"))
	pdb = desiredPDB(p)
	if pdb.Spec.MinAvailable.String() != "50%" || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PDB %+v", pdb.Spec)
	}
}

func TestDesiredMonitoring(t *testing.T) {
	p := newPHS()
	if desiredServiceMonitor(p) != nil || desiredMetricsService(p) != nil {
		t.Fatal("monitoring objects without monitoring.serviceMonitor")
	}
	p.Spec.Monitoring = playhousev1alpha1.MonitoringSpec{ServiceMonitor: true, Labels: map[string]string{"release": "prom"}, Interval: "15s"}
	svc := desiredMetricsService(p)
	checkOwned(t, svc)
	if svc.Name != "game-metrics" || svc.Spec.ClusterIP != corev1.ClusterIPNone || len(svc.Spec.Ports) != 1 ||
		svc.Spec.Ports[0].Name != "admin" || svc.Spec.Ports[0].Port != 9090 || svc.Labels[LabelComponent] != "metrics" {
		t.Errorf("metrics service %+v", svc)
	}
	sm := desiredServiceMonitor(p)
	if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetKind() != "ServiceMonitor" || sm.GetName() != "game" ||
		sm.GetLabels()["release"] != "prom" || sm.GetLabels()[LabelManagedBy] != ManagedByValue {
		t.Errorf("service monitor %v", sm.Object)
	}
	if refs := sm.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != "uid-1" || !ptr.Deref(refs[0].Controller, false) {
		t.Errorf("owner references %+v", refs)
	}
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	for k, v := range sel {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selector %v does not select the metrics Service %v", sel, svc.Labels)
		}
	}
	if sel[LabelComponent] != "metrics" {
		t.Errorf("ServiceMonitor selector %v would also select the client Service", sel)
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "admin" || eps[0].(map[string]any)["interval"] != "15s" {
		t.Errorf("endpoints %v", eps)
	}
	// The object must survive a deep copy (only JSON-compatible values).
	_ = sm.DeepCopy()
}

func TestToApplyObject(t *testing.T) {
	d := mustDeployment(t, newPHS())
	u, err := toApplyObject(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Object["status"]; ok {
		t.Error("status is sent with the apply")
	}
	if _, ok, _ := unstructured.NestedFieldNoCopy(u.Object, "metadata", "creationTimestamp"); ok {
		t.Error("null creationTimestamp is sent with the apply")
	}
	if u.GetKind() != "Deployment" || u.GetAPIVersion() != "apps/v1" {
		t.Errorf("type %s/%s", u.GetAPIVersion(), u.GetKind())
	}
	if _, err := toApplyObject(&corev1.ConfigMap{}); err == nil {
		t.Error("an object without TypeMeta was accepted")
	}
}

func TestComputeStatus(t *testing.T) {
	dep := func(desired, ready, updated, available, replicas int32, observed int64) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Generation: 4},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(desired)},
			Status: appsv1.DeploymentStatus{ObservedGeneration: observed, Replicas: replicas, ReadyReplicas: ready,
				UpdatedReplicas: updated, AvailableReplicas: available},
		}
	}
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1", Ports: []corev1.ServicePort{{Name: "tcp", Port: 7777}}}}
	cond := func(st playhousev1alpha1.PlayHouseServerStatus, typ string) metav1.Condition {
		for _, c := range st.Conditions {
			if c.Type == typ {
				return c
			}
		}
		t.Fatalf("no %s condition in %+v", typ, st.Conditions)
		return metav1.Condition{}
	}
	sessions := int64(42)

	t.Run("ready", func(t *testing.T) {
		p := newPHS()
		st := computeStatus(p, &observation{deployment: dep(2, 2, 2, 2, 2, 4), service: svc, sessions: &sessions})
		if st.ObservedGeneration != 3 || st.Replicas != 2 || st.ReadyReplicas != 2 || st.Sessions != 42 ||
			st.Endpoint != "10.0.0.1:7777" || st.Selector != "app.kubernetes.io/instance=game,app.kubernetes.io/name=playhouse-server" {
			t.Errorf("status %+v", st)
		}
		if c := cond(st, ConditionReady); c.Status != metav1.ConditionTrue || c.Reason != ReasonReplicasReady || c.ObservedGeneration != 3 {
			t.Errorf("Ready %+v", c)
		}
		if c := cond(st, ConditionProgressing); c.Status != metav1.ConditionFalse || c.Reason != ReasonRolloutComplete {
			t.Errorf("Progressing %+v", c)
		}
		if c := cond(st, ConditionDegraded); c.Status != metav1.ConditionFalse {
			t.Errorf("Degraded %+v", c)
		}
	})
	t.Run("rolling", func(t *testing.T) {
		st := computeStatus(newPHS(), &observation{deployment: dep(2, 2, 1, 2, 3, 4)})
		if c := cond(st, ConditionProgressing); c.Status != metav1.ConditionTrue || c.Reason != ReasonRollingOut {
			t.Errorf("Progressing %+v", c)
		}
		st = computeStatus(newPHS(), &observation{deployment: dep(2, 2, 2, 2, 2, 3)})
		if c := cond(st, ConditionProgressing); c.Status != metav1.ConditionTrue {
			t.Errorf("Progressing while the Deployment has not observed its spec: %+v", c)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		st := computeStatus(newPHS(), &observation{deployment: dep(3, 1, 3, 1, 3, 4)})
		if c := cond(st, ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != ReasonReplicasNotReady {
			t.Errorf("Ready %+v", c)
		}
		if c := cond(st, ConditionReconciling); c.Status != metav1.ConditionTrue {
			t.Errorf("Reconciling %+v", c)
		}
		// Scaled to zero is a settled state, not a wait.
		st = computeStatus(newPHS(), &observation{deployment: dep(0, 0, 0, 0, 0, 4)})
		if c := cond(st, ConditionReady); c.Status != metav1.ConditionTrue || c.Reason != ReasonScaledToZero {
			t.Errorf("Ready at zero replicas %+v", c)
		}
		if c := cond(st, ConditionReconciling); c.Status != metav1.ConditionFalse {
			t.Errorf("Reconciling at zero replicas %+v", c)
		}
	})
	t.Run("apply failed keeps what was not observed", func(t *testing.T) {
		p := newPHS()
		p.Status = computeStatus(p, &observation{deployment: dep(2, 2, 2, 2, 2, 4), service: svc, sessions: &sessions})
		p.Generation = 4
		st := computeStatus(p, &observation{applyErr: errFake("apply Deployment game: timeout")})
		// The pass worked on generation 4 and says how it ended.
		if st.ObservedGeneration != 4 {
			t.Errorf("observedGeneration %d on a failed pass, want 4", st.ObservedGeneration)
		}
		for _, typ := range []string{ConditionDegraded, ConditionStalled} {
			if c := cond(st, typ); c.Status != metav1.ConditionTrue || c.Reason != ReasonApplyFailed ||
				!strings.Contains(c.Message, "timeout") || c.ObservedGeneration != 4 {
				t.Errorf("%s %+v", typ, c)
			}
		}
		if c := cond(st, ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != ReasonApplyFailed || c.ObservedGeneration != 4 {
			t.Errorf("Ready on a stuck fleet: %+v", c)
		}
		if c := cond(st, ConditionReconciling); c.Status != metav1.ConditionFalse {
			t.Errorf("Reconciling on a stuck fleet: %+v", c)
		}
		if st.Sessions != 42 || st.Endpoint != "10.0.0.1:7777" || st.ReadyReplicas != 2 {
			t.Errorf("unobserved fields changed: %+v", st)
		}
	})
	t.Run("invalid spec", func(t *testing.T) {
		st := computeStatus(newPHS(), &observation{invalidSpec: errFake("invalid config: transports: no transport is enabled")})
		if c := cond(st, ConditionStalled); c.Status != metav1.ConditionTrue || c.Reason != ReasonInvalidSpec {
			t.Errorf("Stalled %+v", c)
		}
		if c := cond(st, ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != ReasonInvalidSpec {
			t.Errorf("Ready %+v", c)
		}
		if st.ObservedGeneration != 3 {
			t.Errorf("observedGeneration %d, want 3", st.ObservedGeneration)
		}
	})
	t.Run("service monitor skipped", func(t *testing.T) {
		st := computeStatus(newPHS(), &observation{serviceMonitorSkipped: true})
		if c := cond(st, ConditionDegraded); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "ServiceMonitor skipped") {
			t.Errorf("Degraded %+v", c)
		}
		if st.ObservedGeneration != 3 {
			t.Errorf("a skipped ServiceMonitor kept the generation from being observed: %d", st.ObservedGeneration)
		}
	})
	t.Run("stuck", func(t *testing.T) {
		d := dep(2, 1, 2, 1, 2, 4)
		d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"}}
		st := computeStatus(newPHS(), &observation{deployment: d})
		if c := cond(st, ConditionDegraded); c.Status != metav1.ConditionTrue || c.Reason != ReasonProgressDeadlineExceeded {
			t.Errorf("Degraded %+v", c)
		}
		if c := cond(st, ConditionStalled); c.Status != metav1.ConditionTrue || c.Reason != ReasonProgressDeadlineExceeded {
			t.Errorf("Stalled %+v", c)
		}
		if c := cond(st, ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != ReasonProgressDeadlineExceeded {
			t.Errorf("Ready on a stuck rollout: %+v", c)
		}
	})
	t.Run("no deployment", func(t *testing.T) {
		st := computeStatus(newPHS(), &observation{conflict: &childConflictError{kind: "Deployment", name: "game"}})
		if c := cond(st, ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != ReasonChildNameConflict ||
			!strings.Contains(c.Message, "Deployment game") {
			t.Errorf("Ready without a Deployment: %+v", c)
		}
	})
}

// errFake is a fixed error.
type errFake string

func (e errFake) Error() string { return string(e) }

func TestServiceEndpoint(t *testing.T) {
	ports := []corev1.ServicePort{{Name: "ws", Port: 7778}}
	for _, tc := range []struct {
		name string
		svc  corev1.Service
		want string
	}{
		{"cluster ip", corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1", Ports: ports}}, "10.0.0.1:7778"},
		{"lb ip", corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1", Ports: ports},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}}}}, "203.0.113.7:7778"},
		{"lb hostname", corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1", Ports: ports},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{Hostname: "lb.example"}}}}}, "lb.example:7778"},
		{"ipv6", corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "fd00::1", Ports: ports}}, "[fd00::1]:7778"},
		{"headless", corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "None", Ports: ports}}, ""},
		{"no ports", corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1"}}, ""},
	} {
		if got := serviceEndpoint(&tc.svc); got != tc.want {
			t.Errorf("%s: endpoint %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestChartAppVersionIsTheDefaultImageTag keeps the Go release constant and
// the chart's appVersion equal, so the default server image is the image
// released with the chart.
func TestChartAppVersionIsTheDefaultImageTag(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "charts", "playhouse", "Chart.yaml"))
	if err != nil {
		t.Fatalf("read Chart.yaml: %v", err)
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(data, &chart); err != nil {
		t.Fatalf("parse Chart.yaml: %v", err)
	}
	if chart.AppVersion != Version {
		t.Errorf("Chart.yaml appVersion %q, controllers.Version %q: keep them equal", chart.AppVersion, Version)
	}
	if !strings.HasSuffix(DefaultServerImage, ":"+chart.AppVersion) || strings.HasPrefix(DefaultServerImage, "playhouse:") {
		t.Errorf("DefaultServerImage %q is not a versioned, pullable reference for appVersion %q", DefaultServerImage, chart.AppVersion)
	}
}

func TestDesiredDeploymentPodKnobs(t *testing.T) {
	p := newPHS()
	d := mustDeployment(t, p)
	ps := d.Spec.Template.Spec
	if len(ps.ImagePullSecrets) != 0 || ps.PriorityClassName != "" || ps.ServiceAccountName != "" {
		t.Errorf("knobs set without a spec: pull secrets %v, priority class %q, service account %q", ps.ImagePullSecrets, ps.PriorityClassName, ps.ServiceAccountName)
	}

	p.Spec.Pod.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}, {Name: "mirror"}}
	p.Spec.Pod.PriorityClassName = "game-critical"
	p.Spec.Pod.ServiceAccountName = "game-servers"
	ps = mustDeployment(t, p).Spec.Template.Spec
	if len(ps.ImagePullSecrets) != 2 || ps.ImagePullSecrets[0].Name != "regcred" || ps.ImagePullSecrets[1].Name != "mirror" {
		t.Errorf("image pull secrets %v", ps.ImagePullSecrets)
	}
	if ps.PriorityClassName != "game-critical" || ps.ServiceAccountName != "game-servers" {
		t.Errorf("priority class %q, service account %q", ps.PriorityClassName, ps.ServiceAccountName)
	}
	if !ptr.Equal(ps.AutomountServiceAccountToken, ptr.To(false)) {
		t.Errorf("a service account must not bring an API token: automount %v", ps.AutomountServiceAccountToken)
	}
}

func TestDesiredDeploymentTopologySpread(t *testing.T) {
	p := newPHS()
	got := mustDeployment(t, p).Spec.Template.Spec.TopologySpreadConstraints
	if len(got) != 2 {
		t.Fatalf("default spread: want 2 constraints, got %+v", got)
	}
	for i, key := range []string{"kubernetes.io/hostname", "topology.kubernetes.io/zone"} {
		c := got[i]
		if c.TopologyKey != key || c.MaxSkew != 1 || c.WhenUnsatisfiable != corev1.ScheduleAnyway || c.LabelSelector == nil ||
			len(c.LabelSelector.MatchLabels) != 2 || c.LabelSelector.MatchLabels[LabelInstance] != "game" || c.LabelSelector.MatchLabels[LabelName] != AppName {
			t.Errorf("default constraint %d: %+v", i, c)
		}
	}

	own := []corev1.TopologySpreadConstraint{{MaxSkew: 3, TopologyKey: "rack", WhenUnsatisfiable: corev1.DoNotSchedule}}
	p.Spec.Pod.TopologySpreadConstraints = own
	if got := mustDeployment(t, p).Spec.Template.Spec.TopologySpreadConstraints; len(got) != 1 || got[0].TopologyKey != "rack" || got[0].MaxSkew != 3 {
		t.Errorf("own constraints replaced: %+v", got)
	}

	p.Spec.Pod.TopologySpreadConstraints = nil
	p.Spec.Pod.DefaultTopologySpread = ptr.To(false)
	if got := mustDeployment(t, p).Spec.Template.Spec.TopologySpreadConstraints; len(got) != 0 {
		t.Errorf("defaultTopologySpread false still spreads: %+v", got)
	}
}

func TestDesiredDeploymentDefaultResources(t *testing.T) {
	p := newPHS()
	r := mustDeployment(t, p).Spec.Template.Spec.Containers[0].Resources
	if r.Requests.Cpu().String() != DefaultCPURequest || r.Requests.Memory().String() != DefaultMemoryRequest || len(r.Limits) != 0 {
		t.Errorf("default resources %+v, want requests cpu %s memory %s and no limits", r, DefaultCPURequest, DefaultMemoryRequest)
	}

	// A limit alone stands for the request: no default request may exceed it.
	p.Spec.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}
	r = mustDeployment(t, p).Spec.Template.Spec.Containers[0].Resources
	if _, ok := r.Requests[corev1.ResourceMemory]; ok || r.Requests.Cpu().String() != DefaultCPURequest || r.Limits.Memory().String() != "64Mi" {
		t.Errorf("resources with a memory limit %+v", r)
	}
	if p.Spec.Resources.Requests != nil {
		t.Errorf("the spec was modified: %+v", p.Spec.Resources)
	}

	p.Spec.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}}
	r = mustDeployment(t, p).Spec.Template.Spec.Containers[0].Resources
	if r.Requests.Cpu().String() != "2" || r.Requests.Memory().String() != DefaultMemoryRequest {
		t.Errorf("resources with a CPU request %+v", r)
	}
}

func TestDesiredServicePortSeparateFromContainerPort(t *testing.T) {
	p := withTLS(newPHS())
	p.Spec.Transports.TLSTCP.Port = 7779
	p.Spec.Transports.TLSTCP.ServicePort = 443
	p.Spec.Transports.WebSocket.ServicePort = 80
	svc, err := desiredService(p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]corev1.ServicePort{}
	for _, sp := range svc.Spec.Ports {
		got[sp.Name] = sp
	}
	want := map[string]int32{PortTCP: 7777, PortWS: 80, PortTLSTCP: 443, PortWSS: 7780}
	for name, port := range want {
		if got[name].Port != port || got[name].TargetPort != intstr.FromString(name) {
			t.Errorf("Service port %s: %+v, want port %d targeting the container port by name", name, got[name], port)
		}
	}
	cports := map[string]int32{}
	for _, cp := range mustDeployment(t, p).Spec.Template.Spec.Containers[0].Ports {
		cports[cp.Name] = cp.ContainerPort
	}
	if cports[PortTLSTCP] != 7779 || cports[PortWS] != 7778 {
		t.Errorf("container ports %v: the container must keep listening on the unprivileged ports", cports)
	}
}

func TestDesiredHPABehavior(t *testing.T) {
	p := newPHS()
	p.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MaxReplicas: 20, TargetSessionsPerPod: 800}
	for _, tc := range []struct {
		drain      time.Duration
		wantPeriod int32
	}{
		{30 * time.Second, 30},
		{90*time.Second + 200*time.Millisecond, 91},
		{5 * time.Second, 15},
		{time.Hour, 1800},
	} {
		p.Spec.DrainTimeout = &metav1.Duration{Duration: tc.drain}
		h, err := desiredHPA(p)
		if err != nil {
			t.Fatal(err)
		}
		sd := h.Spec.Behavior.ScaleDown
		if ptr.Deref(sd.StabilizationWindowSeconds, 0) < 300 || ptr.Deref(sd.SelectPolicy, "") != autoscalingv2.MaxChangePolicySelect || len(sd.Policies) != 2 {
			t.Fatalf("drain %s: default scale-down %+v", tc.drain, sd)
		}
		pods, pct := sd.Policies[0], sd.Policies[1]
		if pods.Type != autoscalingv2.PodsScalingPolicy || pods.Value != 1 || pods.PeriodSeconds != tc.wantPeriod ||
			pct.Type != autoscalingv2.PercentScalingPolicy || pct.Value != 10 || pct.PeriodSeconds != tc.wantPeriod {
			t.Errorf("drain %s: policies %+v, want 1 pod or 10%% per %ds", tc.drain, sd.Policies, tc.wantPeriod)
		}
		if h.Spec.Behavior.ScaleUp != nil {
			t.Errorf("scale-up changed from the autoscaler's default: %+v", h.Spec.Behavior.ScaleUp)
		}
	}

	// A scale-up of the spec keeps the default scale-down.
	p.Spec.Autoscaling.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{
		ScaleUp: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To(int32(30))},
	}
	h, _ := desiredHPA(p)
	if ptr.Deref(h.Spec.Behavior.ScaleUp.StabilizationWindowSeconds, 0) != 30 || h.Spec.Behavior.ScaleDown == nil || len(h.Spec.Behavior.ScaleDown.Policies) != 2 {
		t.Errorf("scale-up only behavior %+v", h.Spec.Behavior)
	}
	if p.Spec.Autoscaling.Behavior.ScaleDown != nil {
		t.Error("the spec's behavior was modified")
	}

	// A scale-down of the spec is used as written.
	own := &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr.To(int32(900)),
		Policies:                   []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PodsScalingPolicy, Value: 2, PeriodSeconds: 600}},
	}
	p.Spec.Autoscaling.Behavior.ScaleDown = own
	h, _ = desiredHPA(p)
	if !equality.Semantic.DeepEqual(h.Spec.Behavior.ScaleDown, own) {
		t.Errorf("own scale-down %+v, want %+v", h.Spec.Behavior.ScaleDown, own)
	}
}

// TestDesiredPDBAtOneReplica: the default budget must never block a node
// drain of a one-replica fleet, so it is maxUnavailable 1, not a minAvailable
// equal to the replica count.
func TestDesiredPDBAtOneReplica(t *testing.T) {
	p := newPHS()
	p.Spec.Replicas = ptr.To(int32(1))
	p.Spec.DisruptionBudget.Enabled = true
	pdb := desiredPDB(p)
	if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("default PDB at one replica %+v, want maxUnavailable 1", pdb.Spec)
	}
}

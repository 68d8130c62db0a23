package controllers

import (
	"maps"
	"math"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/metrics"
)

// The ServiceMonitor kind of the Prometheus operator, handled as unstructured
// data so the operator does not depend on the Prometheus operator's Go module.
const (
	// MonitoringGroup is the API group of ServiceMonitor.
	MonitoringGroup = "monitoring.coreos.com"
	// ServiceMonitorKind is the kind name.
	ServiceMonitorKind = "ServiceMonitor"
	// serviceMonitorVersion is the only version the operator writes.
	serviceMonitorVersion = "v1"
)

// Names of the sessions metric and the HPA's default target.
const (
	// SessionsMetric is the per-pod gauge the autoscalers scale on (the
	// session engine's metrics.SessionsActive: one name for both sides).
	SessionsMetric = metrics.SessionsActive
	// defaultTargetSessionsFraction is the target average sessions per pod, as
	// a fraction of limits.maxConnections, when the spec does not name one.
	defaultTargetSessionsFraction = 0.8
)

// clientPort is one enabled client listener.
type clientPort struct {
	name string
	port int32
}

// clientPorts lists the enabled client listeners of a rendered config, in the
// fixed order tcp, ws, tls-tcp, wss.
func clientPorts(c *config.Config) []clientPort {
	var out []clientPort
	for _, l := range []struct {
		name string
		l    config.Listener
	}{
		{PortTCP, c.Transports.TCP},
		{PortWS, c.Transports.WebSocket.Listener},
		{PortTLSTCP, c.Transports.TLSTCP},
		{PortWSS, c.Transports.WSS.Listener},
	} {
		if l.l.Enabled {
			out = append(out, clientPort{name: l.name, port: int32(l.l.Port)})
		}
	}
	return out
}

// ownerRef is the controller owner reference every child carries.
// unstructuredChildMeta is the metadata of a child built as unstructured
// (ServiceMonitor, ScaledObject): named after the CR, in its namespace, with
// labels and the CR as controller.
func unstructuredChildMeta(phs *playhousev1alpha1.PlayHouseServer, labels map[string]any) map[string]any {
	ref := ownerRef(phs)
	return map[string]any{
		"name":      phs.Name,
		"namespace": phs.Namespace,
		"labels":    labels,
		"ownerReferences": []any{map[string]any{
			"apiVersion":         ref.APIVersion,
			"kind":               ref.Kind,
			"name":               ref.Name,
			"uid":                string(ref.UID),
			"controller":         true,
			"blockOwnerDeletion": true,
		}},
	}
}

func ownerRef(phs *playhousev1alpha1.PlayHouseServer) metav1.OwnerReference {
	return *metav1.NewControllerRef(phs, playhousev1alpha1.GroupVersion.WithKind("PlayHouseServer"))
}

// childMeta is the metadata of a child object.
func childMeta(phs *playhousev1alpha1.PlayHouseServer, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            name,
		Namespace:       phs.Namespace,
		Labels:          commonLabels(phs.Name),
		OwnerReferences: []metav1.OwnerReference{ownerRef(phs)},
	}
}

// usedSigningKeySecret names the Secret whose "signing-key" the pods mount:
// the user's, or the generated one.
func usedSigningKeySecret(phs *playhousev1alpha1.PlayHouseServer) string {
	if phs.Spec.Auth.SigningKeySecretName != "" {
		return phs.Spec.Auth.SigningKeySecretName
	}
	return signingKeySecretName(phs.Name)
}

// SelectorString is the label selector of a PlayHouseServer's pods, as
// published in status.selector for the scale subresource.
func SelectorString(phs *playhousev1alpha1.PlayHouseServer) string {
	return labels.SelectorFromSet(selectorLabels(phs.Name)).String()
}

// desiredConfigMap renders the server configuration into the ConfigMap the
// pods mount.
func desiredConfigMap(phs *playhousev1alpha1.PlayHouseServer) (*corev1.ConfigMap, error) {
	data, err := renderConfigYAML(phs)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: childMeta(phs, configMapName(phs.Name)),
		Data:       map[string]string{ConfigKey: string(data)},
	}, nil
}

// desiredSigningKeySecret is the generated signing-key Secret holding key, or
// nil when the spec names its own Secret. The caller passes the key already
// stored in the cluster when there is one, so the key is generated once and
// never rotated by a reconcile; the Secret is immutable so nothing else
// rotates it by accident either.
func desiredSigningKeySecret(phs *playhousev1alpha1.PlayHouseServer, key []byte) *corev1.Secret {
	if phs.Spec.Auth.SigningKeySecretName != "" {
		return nil
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: childMeta(phs, signingKeySecretName(phs.Name)),
		Type:       corev1.SecretTypeOpaque,
		Immutable:  ptr.To(true),
		Data:       map[string][]byte{SigningKeyKey: key},
	}
}

// terminationGracePeriod is the pod's grace period: the drain timeout plus a
// margin, rounded up to whole seconds.
func terminationGracePeriod(c *config.Config) int64 {
	return int64(math.Ceil((c.DrainTimeout.Duration + terminationGraceMargin).Seconds()))
}

// desiredDeployment builds the Deployment of the session-engine pods.
// defaultImage is used when the spec names none. The pod template carries the
// hash of the rendered config, so a config change rolls the pods.
func desiredDeployment(phs *playhousev1alpha1.PlayHouseServer, defaultImage string) (*appsv1.Deployment, error) {
	cfg, err := renderConfig(phs)
	if err != nil {
		return nil, err
	}
	cfgYAML, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	s := &phs.Spec
	image := s.Image
	if image == "" {
		image = defaultImage
	}
	if image == "" {
		image = DefaultServerImage
	}
	tlsSecret := ""
	if s.Transports.TLS.SecretName != "" {
		tlsSecret = s.Transports.TLS.SecretName
	}
	signingSecret := usedSigningKeySecret(phs)

	podLabels := maps.Clone(s.Pod.Labels)
	if podLabels == nil {
		podLabels = map[string]string{}
	}
	maps.Copy(podLabels, commonLabels(phs.Name))
	podAnnotations := maps.Clone(s.Pod.Annotations)
	if podAnnotations == nil {
		podAnnotations = map[string]string{}
	}
	podAnnotations[AnnotationConfigHash] = configHash(cfgYAML, tlsSecret, signingSecret)

	var ports []corev1.ContainerPort
	for _, p := range clientPorts(&cfg) {
		ports = append(ports, corev1.ContainerPort{Name: p.name, ContainerPort: p.port, Protocol: corev1.ProtocolTCP})
	}
	ports = append(ports, corev1.ContainerPort{Name: PortAdmin, ContainerPort: int32(cfg.Admin.Port), Protocol: corev1.ProtocolTCP})

	// One projected volume holds the config file and both secrets, so nothing
	// is mounted inside another read-only volume.
	sources := []corev1.VolumeProjection{{
		ConfigMap: &corev1.ConfigMapProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: configMapName(phs.Name)},
			Items:                []corev1.KeyToPath{{Key: ConfigKey, Path: ConfigKey}},
		},
	}, {
		Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: signingSecret},
			Items:                []corev1.KeyToPath{{Key: SigningKeyKey, Path: "auth/" + SigningKeyKey}},
		},
	}}
	if tlsSecret != "" {
		sources = append(sources, corev1.VolumeProjection{
			Secret: &corev1.SecretProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: tlsSecret},
				Items: []corev1.KeyToPath{
					{Key: corev1.TLSCertKey, Path: "tls/" + corev1.TLSCertKey},
					{Key: corev1.TLSPrivateKeyKey, Path: "tls/" + corev1.TLSPrivateKeyKey},
				},
			},
		})
	}

	adminPort := intstr.FromString(PortAdmin)
	container := corev1.Container{
		Name:            ContainerName,
		Image:           image,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            []string{"--config", ConfigPath},
		Ports:           ports,
		Env:             s.Pod.Env,
		Resources:       defaultResources(s.Resources),
		VolumeMounts:    []corev1.VolumeMount{{Name: "config", MountPath: ConfigDir, ReadOnly: true}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: adminPort}},
			PeriodSeconds:    5,
			TimeoutSeconds:   2,
			FailureThreshold: 2,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: adminPort}},
			PeriodSeconds:    10,
			TimeoutSeconds:   2,
			FailureThreshold: 3,
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}

	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: childMeta(phs, phs.Name),
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: selectorLabels(phs.Name)},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					// Never drop below the desired count: sessions are
					// long-lived, so capacity is added before a pod drains.
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromString("25%")),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					Containers:                    []corev1.Container{container},
					TerminationGracePeriodSeconds: ptr.To(terminationGracePeriod(&cfg)),
					// The server never talks to the Kubernetes API.
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					NodeSelector:                 s.Pod.NodeSelector,
					Tolerations:                  s.Pod.Tolerations,
					Affinity:                     s.Pod.Affinity,
					ImagePullSecrets:             s.Pod.ImagePullSecrets,
					PriorityClassName:            s.Pod.PriorityClassName,
					ServiceAccountName:           s.Pod.ServiceAccountName,
					TopologySpreadConstraints:    topologySpread(phs),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To(int64(65532)),
						RunAsGroup:     ptr.To(int64(65532)),
						FSGroup:        ptr.To(int64(65532)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Volumes: []corev1.Volume{{
						Name: "config",
						VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
							Sources:     sources,
							DefaultMode: ptr.To(int32(0o440)),
						}},
					}},
				},
			},
		},
	}
	if !s.Autoscaling.Enabled {
		// Left unset under autoscaling: the HorizontalPodAutoscaler owns it.
		d.Spec.Replicas = ptr.To(ptr.Deref(s.Replicas, 1))
	}
	return d, nil
}

// desiredService builds the client Service: one port per enabled transport.
// externalTrafficPolicy (default Local, so the per-IP limit sees real client
// addresses) and source ranges apply only to the types that accept them.
func desiredService(phs *playhousev1alpha1.PlayHouseServer) (*corev1.Service, error) {
	cfg, err := renderConfig(phs)
	if err != nil {
		return nil, err
	}
	s := &phs.Spec.Service
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: childMeta(phs, phs.Name),
		Spec: corev1.ServiceSpec{
			Type:     s.Type,
			Selector: selectorLabels(phs.Name),
		},
	}
	if svc.Spec.Type == "" {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	}
	if len(s.Annotations) > 0 {
		svc.Annotations = maps.Clone(s.Annotations)
	}
	// The Service port may differ from the container port (servicePort); the
	// target is the container port by name either way.
	override := servicePorts(phs)
	for _, p := range clientPorts(&cfg) {
		port := p.port
		if sp, ok := override[p.name]; ok {
			port = sp
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name:       p.name,
			Port:       port,
			TargetPort: intstr.FromString(p.name),
			Protocol:   corev1.ProtocolTCP,
		})
	}
	switch svc.Spec.Type {
	case corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort:
		svc.Spec.ExternalTrafficPolicy = s.ExternalTrafficPolicy
		if svc.Spec.ExternalTrafficPolicy == "" {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		svc.Spec.LoadBalancerSourceRanges = s.LoadBalancerSourceRanges
	}
	return svc, nil
}

// desiredMetricsService builds the headless Service on the admin port that the
// ServiceMonitor selects, so the admin port is never exposed on the client
// Service (which is often a public load balancer). nil when monitoring is off.
func desiredMetricsService(phs *playhousev1alpha1.PlayHouseServer) *corev1.Service {
	if !phs.Spec.Monitoring.ServiceMonitor {
		return nil
	}
	meta := childMeta(phs, metricsServiceName(phs.Name))
	meta.Labels[LabelComponent] = "metrics"
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: corev1.ClusterIPNone,
			Selector:  selectorLabels(phs.Name),
			Ports: []corev1.ServicePort{{
				Name:       PortAdmin,
				Port:       config.DefaultAdminPort,
				TargetPort: intstr.FromString(PortAdmin),
				Protocol:   corev1.ProtocolTCP,
			}},
		},
	}
}

// desiredHPA builds the autoscaling/v2 HorizontalPodAutoscaler on the
// per-pod sessions gauge, or nil when autoscaling is off or its provider is
// not hpa (KEDA creates its own HPA from the ScaledObject).
func desiredHPA(phs *playhousev1alpha1.PlayHouseServer) (*autoscalingv2.HorizontalPodAutoscaler, error) {
	a := &phs.Spec.Autoscaling
	if !a.Enabled || autoscalingProvider(phs) != playhousev1alpha1.AutoscalingProviderHPA {
		return nil, nil
	}
	cfg, err := renderConfig(phs)
	if err != nil {
		return nil, err
	}
	target, err := targetSessionsPerPod(phs)
	if err != nil {
		return nil, err
	}
	minReplicas := ptr.Deref(a.MinReplicas, 1)
	maxReplicas := max(a.MaxReplicas, minReplicas)
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"},
		ObjectMeta: childMeta(phs, phs.Name),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: phs.Name},
			MinReplicas:    ptr.To(minReplicas),
			MaxReplicas:    maxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: SessionsMetric},
					Target: autoscalingv2.MetricTarget{
						Type:         autoscalingv2.AverageValueMetricType,
						AverageValue: resource.NewQuantity(target, resource.DecimalSI),
					},
				},
			}},
			Behavior: hpaBehavior(phs, cfg.DrainTimeout.Duration),
		},
	}, nil
}

// desiredPDB builds the policy/v1 PodDisruptionBudget, or nil when it is off.
// With neither bound set it allows one pod to be disrupted at a time
// (maxUnavailable 1), which never blocks a node drain, even at one replica,
// while keeping a drain from evicting several pods of the fleet at once.
func desiredPDB(phs *playhousev1alpha1.PlayHouseServer) *policyv1.PodDisruptionBudget {
	b := &phs.Spec.DisruptionBudget
	if !b.Enabled {
		return nil
	}
	pdb := &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: childMeta(phs, phs.Name),
		Spec: policyv1.PodDisruptionBudgetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(phs.Name)},
			MinAvailable:   b.MinAvailable,
			MaxUnavailable: b.MaxUnavailable,
		},
	}
	if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
		pdb.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	}
	return pdb
}

// desiredServiceMonitor builds the monitoring.coreos.com/v1 ServiceMonitor
// scraping the admin port through the metrics Service, or nil when monitoring
// is off.
func desiredServiceMonitor(phs *playhousev1alpha1.PlayHouseServer) *unstructured.Unstructured {
	m := &phs.Spec.Monitoring
	if !m.ServiceMonitor {
		return nil
	}
	lbls := map[string]any{}
	for k, v := range m.Labels {
		lbls[k] = v
	}
	for k, v := range commonLabels(phs.Name) {
		lbls[k] = v
	}
	endpoint := map[string]any{"port": PortAdmin, "path": "/metrics", "scheme": "http"}
	if m.Interval != "" {
		endpoint["interval"] = m.Interval
	}
	sel := map[string]any{}
	for k, v := range selectorLabels(phs.Name) {
		sel[k] = v
	}
	sel[LabelComponent] = "metrics"
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": MonitoringGroup + "/" + serviceMonitorVersion,
		"kind":       ServiceMonitorKind,
		"metadata":   unstructuredChildMeta(phs, lbls),
		"spec": map[string]any{
			"selector":  map[string]any{"matchLabels": sel},
			"endpoints": []any{endpoint},
		},
	}}
	return u
}

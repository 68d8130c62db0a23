package controllers

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// PlayHouseServerReconciler turns each PlayHouseServer into its child objects,
// keeps the pods' deletion cost equal to their live session count, and reports
// what it observed in the status.
type PlayHouseServerReconciler struct {
	// Client reads (through the manager's cache) and writes objects.
	Client client.Client
	// APIReader reads from the API server directly; used to make sure a
	// signing key really is absent before generating one. nil uses Client.
	APIReader client.Reader
	// Scheme knows every type the reconciler handles.
	Scheme *runtime.Scheme
	// RESTMapper tells whether the ServiceMonitor kind is served, at reconcile
	// time, so installing its CRD later is picked up without a restart.
	RESTMapper meta.RESTMapper
	// Recorder emits Kubernetes events on the PlayHouseServer.
	Recorder events.EventRecorder
	// Sessions reads a pod's live session count; nil skips deletion costs.
	Sessions SessionReader
	// DefaultImage is the server image when the spec names none.
	DefaultImage string
	// ResyncInterval is how often a PlayHouseServer is reconciled without an
	// event, refreshing session counts; zero means DefaultResyncInterval.
	ResyncInterval time.Duration
	// MaxConcurrentReconciles is how many PlayHouseServers are reconciled in
	// parallel; zero means one.
	MaxConcurrentReconciles int

	// controller and cache are set by SetupWithManager; they let the
	// reconciler start watching ServiceMonitors once their CRD appears.
	controller controller.Controller
	cache      cache.Cache
	// smMu guards the ServiceMonitor discovery state below.
	smMu sync.Mutex
	// smWatching is set once owned ServiceMonitors are watched (and cached).
	smWatching bool
	// smMissAt is when discovery last said ServiceMonitor is not served; a
	// miss is trusted for one resync interval, so many PlayHouseServers do
	// not each trigger a full discovery round on every pass.
	smMissAt time.Time
}

// Options configure a reconciler built by NewPlayHouseServerReconciler.
type Options struct {
	// DefaultImage is the server image when the spec names none.
	DefaultImage string
	// ResyncInterval is how often session counts are refreshed (default 30s).
	ResyncInterval time.Duration
	// Sessions reads live session counts; nil uses an HTTPSessionReader.
	Sessions SessionReader
	// MaxConcurrentReconciles is how many PlayHouseServers are reconciled in
	// parallel; zero means one.
	MaxConcurrentReconciles int
}

// NewPlayHouseServerReconciler builds a reconciler from a manager's client,
// cache, REST mapper and event recorder.
func NewPlayHouseServerReconciler(mgr ctrl.Manager, o Options) *PlayHouseServerReconciler {
	sessions := o.Sessions
	if sessions == nil {
		sessions = NewHTTPSessionReader(DefaultSessionReadTimeout)
	}
	return &PlayHouseServerReconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Scheme:         mgr.GetScheme(),
		RESTMapper:     mgr.GetRESTMapper(),
		Recorder:       mgr.GetEventRecorder(FieldManager),
		Sessions:       sessions,
		DefaultImage:   o.DefaultImage,
		ResyncInterval: o.ResyncInterval,

		MaxConcurrentReconciles: o.MaxConcurrentReconciles,
	}
}

// CacheByObject restricts the manager's cache to the objects the operator
// manages (those labelled managed-by=playhouse-operator) for every kind it
// owns, so the operator does not hold every Pod, ConfigMap or Service of the
// cluster in memory. Use it as cache.Options.ByObject.
//
// Secrets are the exception: the operator watches their metadata only (never
// their data), unfiltered, so a PlayHouseServer waiting for a Secret it
// references (TLS, signing key, env) is reconciled the moment the Secret
// appears. The cache keeps no managed fields or last-applied annotation of a
// Secret (that annotation can hold its data), and never a Secret's data.
func CacheByObject() map[client.Object]cache.ByObject {
	managed := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})
	out := map[client.Object]cache.ByObject{}
	for _, o := range []client.Object{
		&corev1.Pod{}, &corev1.ConfigMap{}, &corev1.Service{},
		&appsv1.Deployment{}, &autoscalingv2.HorizontalPodAutoscaler{}, &policyv1.PodDisruptionBudget{},
	} {
		out[o] = cache.ByObject{Label: managed}
	}
	out[&corev1.Secret{}] = cache.ByObject{Transform: stripSecret}
	return out
}

// lastAppliedAnnotation is kubectl's client-side apply record; on a Secret it
// holds the Secret's data.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// stripSecret is the cache transform of Secrets: no data, no managed fields,
// no last-applied annotation.
func stripSecret(in any) (any, error) {
	if s, ok := in.(*corev1.Secret); ok {
		s.Data, s.StringData = nil, nil
	}
	if m, ok := in.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[lastAppliedAnnotation] != "" {
			a = maps.Clone(a)
			delete(a, lastAppliedAnnotation)
			m.SetAnnotations(a)
		}
	}
	return in, nil
}

// secretMetadata is an empty metadata-only Secret, for reads and watches
// that must not touch Secret data.
func secretMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// SetupWithManager registers the controller: it reconciles PlayHouseServers on
// spec changes and whenever an owned child changes or disappears, so a deleted
// or hand-edited child is repaired, and when a Secret a PlayHouseServer owns
// or references changes (metadata-only watch).
func (r *PlayHouseServerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	c, err := ctrl.NewControllerManagedBy(mgr).
		For(&playhousev1alpha1.PlayHouseServer{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.ConfigMap{}).
		Watches(secretMetadata(), handler.EnqueueRequestsFromMapFunc(r.secretRequests), builder.OnlyMetadata).
		Owns(&corev1.Service{}).
		Owns(&appsv1.Deployment{}).
		Owns(&autoscalingv2.HorizontalPodAutoscaler{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Named("playhouseserver").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Build(r)
	if err != nil {
		return fmt.Errorf("build playhouseserver controller: %w", err)
	}
	r.controller = c
	r.cache = mgr.GetCache()
	return nil
}

// +kubebuilder:rbac:groups=playhouse.dev,resources=playhouseservers,verbs=get;list;watch
// +kubebuilder:rbac:groups=playhouse.dev,resources=playhouseservers/status,verbs=get;patch
// +kubebuilder:rbac:groups=playhouse.dev,resources=playhouseservers/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=servicemonitors,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile converges one PlayHouseServer. It writes the status exactly once,
// at the end, from what this pass observed, and asks to run again after the
// resync interval to refresh the session counts.
func (r *PlayHouseServerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	phs := &playhousev1alpha1.PlayHouseServer{}
	if err := r.Client.Get(ctx, req.NamespacedName, phs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !phs.DeletionTimestamp.IsZero() {
		// The children carry owner references: the garbage collector removes them.
		return ctrl.Result{}, nil
	}

	obs := &observation{}
	defer func() {
		if obs.staleRead {
			return
		}
		if err := r.patchStatus(ctx, phs, obs); err != nil {
			res, retErr = ctrl.Result{}, errors.Join(retErr, err)
		}
	}()

	if err := r.reconcileChildren(ctx, phs, obs); err != nil {
		return ctrl.Result{}, err
	}
	if obs.staleRead {
		return ctrl.Result{RequeueAfter: staleReadRetry}, nil
	}
	if obs.stalled() == nil || obs.deployment != nil {
		r.reconcileDeletionCost(ctx, phs, obs)
	}
	return ctrl.Result{RequeueAfter: r.resyncInterval()}, nil
}

// staleReadRetry is how soon a pass whose write met a newer object than it
// read (a cache lagging behind the API server) runs again.
const staleReadRetry = 500 * time.Millisecond

// resyncInterval is ResyncInterval or its default.
func (r *PlayHouseServerReconciler) resyncInterval() time.Duration {
	if r.ResyncInterval > 0 {
		return r.ResyncInterval
	}
	return DefaultResyncInterval
}

// desiredSet is every child a spec renders to (nil: the child is disabled).
type desiredSet struct {
	configMap      *corev1.ConfigMap
	deployment     *appsv1.Deployment
	service        *corev1.Service
	hpa            *autoscalingv2.HorizontalPodAutoscaler
	pdb            *policyv1.PodDisruptionBudget
	metricsService *corev1.Service
	serviceMonitor *unstructured.Unstructured
}

// render builds every desired child; an error means the spec is invalid.
func (r *PlayHouseServerReconciler) render(phs *playhousev1alpha1.PlayHouseServer) (*desiredSet, error) {
	var ds desiredSet
	var err error
	if ds.configMap, err = desiredConfigMap(phs); err != nil {
		return nil, err
	}
	if ds.deployment, err = desiredDeployment(phs, r.DefaultImage); err != nil {
		return nil, err
	}
	if ds.service, err = desiredService(phs); err != nil {
		return nil, err
	}
	if ds.hpa, err = desiredHPA(phs); err != nil {
		return nil, err
	}
	ds.pdb = desiredPDB(phs)
	ds.metricsService = desiredMetricsService(phs)
	ds.serviceMonitor = desiredServiceMonitor(phs)
	return &ds, nil
}

// reconcileChildren applies every child in dependency order (config and
// secret before the Deployment that mounts them) and removes the optional
// children the spec turned off. It stops at the first failed write.
func (r *PlayHouseServerReconciler) reconcileChildren(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, obs *observation) error {
	ds, err := r.render(phs)
	if err != nil {
		obs.invalidSpec = err
		r.Recorder.Eventf(phs, nil, corev1.EventTypeWarning, ReasonInvalidSpec, "Render", "%v", err)
		// Nothing is written, but the running fleet is still observed.
		r.observeExisting(ctx, phs, obs)
		return nil
	}
	switch problem, err := r.checkSecrets(ctx, phs); {
	case err != nil:
		obs.applyErr = err
		r.Recorder.Eventf(phs, nil, corev1.EventTypeWarning, ReasonApplyFailed, "CheckSecrets", "%v", err)
		return err
	case problem != nil:
		// Nothing is written: the running fleet keeps its last good spec.
		obs.secret = problem
		r.Recorder.Eventf(phs, nil, corev1.EventTypeWarning, problem.reason, "CheckSecrets", "%s", problem.message)
		r.observeExisting(ctx, phs, obs)
		return nil
	}
	fail := func(err error) error {
		var conflict *childConflictError
		switch {
		case errors.As(err, &conflict):
			// Not an error of the operator: reported, and retried at each resync.
			obs.conflict = conflict
			r.Recorder.Eventf(phs, nil, corev1.EventTypeWarning, ReasonChildNameConflict, "Apply", "%v", err)
			r.observeExisting(ctx, phs, obs)
			return nil
		case apierrors.IsConflict(err):
			logf.FromContext(ctx).V(1).Info("a child changed since it was read; retrying", "error", err.Error())
			obs.staleRead = true
			return nil
		}
		obs.applyErr = err
		r.Recorder.Eventf(phs, nil, corev1.EventTypeWarning, ReasonApplyFailed, "Apply", "%v", err)
		return err
	}

	if err := r.apply(ctx, phs, ds.configMap, nil); err != nil {
		return fail(err)
	}
	if err := r.reconcileSigningKey(ctx, phs); err != nil {
		return fail(err)
	}
	svc := &corev1.Service{}
	if err := r.apply(ctx, phs, ds.service, svc); err != nil {
		return fail(err)
	}
	obs.service = svc
	if ds.deployment.Spec.Replicas == nil {
		if err := r.handOverReplicas(ctx, phs); err != nil {
			return fail(err)
		}
	}
	dep := &appsv1.Deployment{}
	if err := r.apply(ctx, phs, ds.deployment, dep); err != nil {
		return fail(err)
	}
	obs.deployment = dep

	as, err := r.reconcileAutoscaler(ctx, phs, ds.hpa)
	obs.autoscaler = as
	if err != nil {
		return fail(err)
	}
	if ds.pdb != nil {
		err = r.apply(ctx, phs, ds.pdb, nil)
	} else {
		err = r.deleteOwned(ctx, phs, &policyv1.PodDisruptionBudget{}, phs.Name)
	}
	if err != nil {
		return fail(err)
	}
	if err := r.reconcileMonitoring(ctx, phs, ds, obs); err != nil {
		return fail(err)
	}
	return nil
}

// handoverFieldManager keeps a Deployment's replica count while ownership of
// spec.replicas passes from the operator to the HorizontalPodAutoscaler.
const handoverFieldManager = "playhouse-operator-handover"

// handOverReplicas runs before the operator stops applying spec.replicas
// (autoscaling was just turned on). Dropping a field it alone owns would make
// server-side apply remove it, and the API server would default the
// Deployment to one replica, draining every other pod. So the current count is
// first applied under a second field manager, which keeps owning it after the
// operator lets go, until the autoscaler writes its own count. This is the
// ownership transfer the Kubernetes server-side apply documentation gives for
// handing replicas to an HPA.
func (r *PlayHouseServerReconciler) handOverReplicas(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer) error {
	live := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(phs), live); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("get Deployment %s: %w", phs.Name, err)
	}
	if !metav1.IsControlledBy(live, phs) || live.Spec.Replicas == nil || !appliesReplicas(live.ManagedFields) {
		return nil
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata":   map[string]any{"name": live.Name, "namespace": live.Namespace},
		"spec":       map[string]any{"replicas": int64(*live.Spec.Replicas)},
	}}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(handoverFieldManager)); err != nil {
		return fmt.Errorf("hand Deployment %s replicas over to the autoscaler: %w", phs.Name, err)
	}
	logf.FromContext(ctx).Info("handing Deployment replicas over to the autoscaler", "replicas", *live.Spec.Replicas)
	return nil
}

// appliesReplicas reports whether the operator's apply owns spec.replicas.
func appliesReplicas(mfs []metav1.ManagedFieldsEntry) bool {
	for _, mf := range mfs {
		if mf.Manager != FieldManager || mf.Operation != metav1.ManagedFieldsOperationApply || mf.FieldsV1 == nil {
			continue
		}
		var fields map[string]map[string]any
		if err := json.Unmarshal(mf.FieldsV1.Raw, &fields); err != nil {
			continue
		}
		if _, ok := fields["f:spec"]["f:replicas"]; ok {
			return true
		}
	}
	return false
}

// observeExisting reads the current Deployment and Service, for the status of
// a pass that could not apply them.
func (r *PlayHouseServerReconciler) observeExisting(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, obs *observation) {
	key := client.ObjectKeyFromObject(phs)
	dep := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, key, dep); err == nil && metav1.IsControlledBy(dep, phs) {
		obs.deployment = dep
	}
	svc := &corev1.Service{}
	if err := r.Client.Get(ctx, key, svc); err == nil && metav1.IsControlledBy(svc, phs) {
		obs.service = svc
	}
}

// apply writes one child through the single apply path and records an event
// when the API server created or changed it.
func (r *PlayHouseServerReconciler) apply(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, desired client.Object, live client.Object) error {
	outcome, err := r.applyObject(ctx, phs, desired, live)
	if err != nil {
		return err
	}
	kind := desired.GetObjectKind().GroupVersionKind().Kind
	switch outcome {
	case outcomeCreated:
		logf.FromContext(ctx).Info("created child", "kind", kind, "name", desired.GetName())
		r.Recorder.Eventf(phs, desired, corev1.EventTypeNormal, "Created", "Apply", "created %s %s", kind, desired.GetName())
	case outcomeUpdated:
		logf.FromContext(ctx).Info("updated child", "kind", kind, "name", desired.GetName())
		r.Recorder.Eventf(phs, desired, corev1.EventTypeNormal, "Updated", "Apply", "updated %s %s", kind, desired.GetName())
	}
	return nil
}

// deleteOwned deletes the named child of kind obj if it exists and this
// PlayHouseServer controls it; anything else of that name is left alone.
func (r *PlayHouseServerReconciler) deleteOwned(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, obj client.Object, name string) error {
	key := client.ObjectKey{Namespace: phs.Namespace, Name: name}
	kind := fmt.Sprintf("%T", obj)
	if gvk, err := r.Client.GroupVersionKindFor(obj); err == nil {
		kind = gvk.Kind
	}
	if err := r.getChild(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return nil
		}
		return fmt.Errorf("get %s %s: %w", kind, name, err)
	}
	if !metav1.IsControlledBy(obj, phs) {
		return nil
	}
	if err := r.Client.Delete(ctx, obj, client.Preconditions{UID: ptrTo(obj.GetUID())}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("delete %s %s: %w", kind, name, err)
	}
	logf.FromContext(ctx).Info("deleted child", "kind", kind, "name", name)
	r.Recorder.Eventf(phs, obj, corev1.EventTypeNormal, "Deleted", "Delete", "deleted %s %s", kind, name)
	return nil
}

// reconcileSigningKey applies the generated signing-key Secret, keeping the
// key already stored when there is one: it is generated once and never
// rotated by a reconcile. Nothing is done when the spec names its own Secret.
//
// The Secret is immutable, so while the metadata cache shows it controlled by
// this PlayHouseServer with its labels and applied hash, nothing is read or
// written. Otherwise its key is read straight from the API server (the cache
// holds no Secret data) before anything is generated, so a cold or stale
// cache can never cause a rotation.
func (r *PlayHouseServerReconciler) reconcileSigningKey(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer) error {
	if phs.Spec.Auth.SigningKeySecretName != "" {
		return nil
	}
	name := signingKeySecretName(phs.Name)
	m := secretMetadata()
	switch err := r.Client.Get(ctx, client.ObjectKey{Namespace: phs.Namespace, Name: name}, m); {
	case err == nil && !metav1.IsControlledBy(m, phs):
		return newConflict("Secret", m)
	case err == nil && m.GetAnnotations()[AnnotationAppliedHash] != "" && hasLabels(m.GetLabels(), commonLabels(phs.Name)):
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("get Secret %s: %w", name, err)
	}
	key, err := r.existingSigningKey(ctx, phs)
	if err != nil {
		return err
	}
	if key == nil {
		key = make([]byte, SigningKeyBytes)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("generate signing key: %w", err)
		}
		r.Recorder.Eventf(phs, nil, corev1.EventTypeNormal, "SigningKeyGenerated", "Generate",
			"generated a token signing key in Secret %s", name)
	}
	return r.apply(ctx, phs, desiredSigningKeySecret(phs, key), nil)
}

// hasLabels reports whether have holds every label of want.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// existingSigningKey returns the signing key stored in the generated Secret,
// read from the API server, or nil when there is none. A Secret of that name
// this PlayHouseServer does not control is a *childConflictError: its key is
// neither used nor replaced.
func (r *PlayHouseServerReconciler) existingSigningKey(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer) ([]byte, error) {
	key := client.ObjectKey{Namespace: phs.Namespace, Name: signingKeySecretName(phs.Name)}
	s := &corev1.Secret{}
	switch err := r.apiReader().Get(ctx, key, s); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get Secret %s: %w", key.Name, err)
	case !metav1.IsControlledBy(s, phs):
		return nil, newConflict("Secret", s)
	default:
		return nonEmpty(s.Data[SigningKeyKey]), nil
	}
}

// nonEmpty returns b, or nil when it is empty.
func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// serviceMonitorGK is the group and kind of the Prometheus operator's ServiceMonitor.
var serviceMonitorGK = schema.GroupKind{Group: MonitoringGroup, Kind: ServiceMonitorKind}

// serviceMonitorInstalled asks the REST mapper whether the API server serves
// ServiceMonitor. The mapper re-reads discovery on a miss, so a CRD installed
// after the operator started is found at the latest one resync interval later.
func (r *PlayHouseServerReconciler) serviceMonitorInstalled() (bool, error) {
	r.smMu.Lock()
	defer r.smMu.Unlock()
	if !r.smMissAt.IsZero() && time.Since(r.smMissAt) < r.resyncInterval() {
		return false, nil
	}
	_, err := r.RESTMapper.RESTMapping(serviceMonitorGK, serviceMonitorVersion)
	switch {
	case err == nil:
		r.smMissAt = time.Time{}
		return true, nil
	case meta.IsNoMatchError(err):
		r.smMissAt = time.Now()
		return false, nil
	default:
		return false, fmt.Errorf("look up the ServiceMonitor kind: %w", err)
	}
}

// getChild reads a child for the apply and delete paths: from the manager's
// cache, including ServiceMonitors once they are watched (the client does not
// cache unstructured objects by itself).
func (r *PlayHouseServerReconciler) getChild(ctx context.Context, key client.ObjectKey, obj client.Object) error {
	if _, ok := obj.(*unstructured.Unstructured); ok && r.cache != nil {
		r.smMu.Lock()
		watching := r.smWatching
		r.smMu.Unlock()
		if watching {
			return r.cache.Get(ctx, key, obj)
		}
	}
	return r.Client.Get(ctx, key, obj)
}

// reconcileMonitoring applies or removes the metrics Service and, when its
// CRD is installed, the ServiceMonitor. Without the CRD the ServiceMonitor is
// skipped, and the Degraded=False message says so: that is a supported
// setup, not an error.
func (r *PlayHouseServerReconciler) reconcileMonitoring(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, ds *desiredSet, obs *observation) error {
	if ds.metricsService != nil {
		if err := r.apply(ctx, phs, ds.metricsService, nil); err != nil {
			return err
		}
	} else if err := r.deleteOwned(ctx, phs, &corev1.Service{}, metricsServiceName(phs.Name)); err != nil {
		return err
	}

	if ds.serviceMonitor == nil {
		// A ServiceMonitor to remove can only exist where the kind is served.
		installed, err := r.serviceMonitorInstalled()
		if err != nil || !installed {
			return err
		}
		return r.deleteOwned(ctx, phs, newServiceMonitor(), phs.Name)
	}

	installed, err := r.serviceMonitorInstalled()
	if err != nil {
		return err
	}
	if !installed {
		logf.FromContext(ctx).V(1).Info("ServiceMonitor skipped: the monitoring.coreos.com CRD is not installed")
		obs.serviceMonitorSkipped = true
		return nil
	}
	r.watchServiceMonitors(ctx)
	err = r.apply(ctx, phs, ds.serviceMonitor, nil)
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		// The CRD went away after the mapper saw it.
		logf.FromContext(ctx).V(1).Info("ServiceMonitor skipped: the monitoring.coreos.com CRD is gone", "error", err.Error())
		obs.serviceMonitorSkipped = true
		return nil
	}
	return err
}

// newServiceMonitor is an empty unstructured ServiceMonitor for reads.
func newServiceMonitor() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(serviceMonitorGK.WithVersion(serviceMonitorVersion))
	return u
}

// watchServiceMonitors starts watching owned ServiceMonitors, once, after
// their CRD is found, so a deleted or edited one is repaired at once instead
// of at the next resync. Without a controller (a reconciler called directly)
// it does nothing.
func (r *PlayHouseServerReconciler) watchServiceMonitors(ctx context.Context) {
	if r.controller == nil || r.cache == nil {
		return
	}
	r.smMu.Lock()
	defer r.smMu.Unlock()
	if r.smWatching {
		return
	}
	if err := r.controller.Watch(r.serviceMonitorSource()); err != nil {
		logf.FromContext(ctx).Error(err, "cannot watch ServiceMonitors; they are repaired at each resync instead")
		return
	}
	r.smWatching = true
}

// serviceMonitorSource is the watch of owned ServiceMonitors, started at
// runtime once their CRD is served. It is wrapped in a loggableSource: the
// controller logs a source started after the manager as a structured value,
// and the bare source (which holds functions) cannot be encoded as JSON.
func (r *PlayHouseServerReconciler) serviceMonitorSource() source.Source {
	return loggableSource{
		SyncingSource: source.Kind[client.Object](r.cache, newServiceMonitor(),
			handler.EnqueueRequestForOwner(r.Scheme, r.RESTMapper, &playhousev1alpha1.PlayHouseServer{}, handler.OnlyControllerOwner())),
		name: "kind source: ServiceMonitor." + MonitoringGroup + "/" + serviceMonitorVersion,
	}
}

// loggableSource is a source with a plain-text form for logs.
type loggableSource struct {
	source.SyncingSource
	// name is what logs show.
	name string
}

// String implements fmt.Stringer.
func (s loggableSource) String() string { return s.name }

// LogValue implements slog.LogValuer.
func (s loggableSource) LogValue() slog.Value { return slog.StringValue(s.name) }

// MarshalJSON encodes the source as its name.
func (s loggableSource) MarshalJSON() ([]byte, error) { return json.Marshal(s.name) }

// MarshalLog implements logr.Marshaler.
func (s loggableSource) MarshalLog() any { return s.name }

// reconcileDeletionCost reads each ready pod's live session count and sets
// its pod-deletion-cost annotation to it (only when it changed), so a
// scale-down removes the emptiest pods first. The sum becomes
// status.sessions. A pod that cannot be read keeps its annotation and is left
// out of the sum; when no ready pod can be read at all, nothing was observed
// and status.sessions keeps its last value rather than claiming zero.
// Failures here never fail the reconcile.
func (r *PlayHouseServerReconciler) reconcileDeletionCost(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, obs *observation) {
	if r.Sessions == nil {
		return
	}
	log := logf.FromContext(ctx)
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(phs.Namespace), client.MatchingLabels(selectorLabels(phs.Name))); err != nil {
		log.Error(err, "cannot list pods to refresh their deletion cost")
		return
	}
	var ready []*corev1.Pod
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			ready = append(ready, &pods.Items[i])
		}
	}
	var total int64
	read := 0
	for _, c := range readSessions(ctx, r.Sessions, ready) {
		if c.err != nil {
			log.V(1).Info("cannot read session count", "pod", c.pod.Name, "error", c.err.Error())
			continue
		}
		read++
		total += c.sessions
		want := deletionCost(c.sessions)
		if c.pod.Annotations[AnnotationPodDeletionCost] == want {
			continue
		}
		base := c.pod.DeepCopy()
		if c.pod.Annotations == nil {
			c.pod.Annotations = map[string]string{}
		}
		c.pod.Annotations[AnnotationPodDeletionCost] = want
		if err := r.Client.Patch(ctx, c.pod, client.MergeFrom(base), client.FieldOwner(FieldManager)); err != nil {
			if !apierrors.IsNotFound(err) {
				log.Error(err, "cannot set pod deletion cost", "pod", c.pod.Name)
			}
			continue
		}
	}
	if len(ready) > 0 && read == 0 {
		log.Info("cannot read the session count of any ready pod; status.sessions keeps its last value", "readyPods", len(ready))
		return
	}
	obs.sessions = &total
}

// patchStatus writes the status computed from obs in one merge patch, and
// not at all when nothing changed.
func (r *PlayHouseServerReconciler) patchStatus(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, obs *observation) error {
	st := computeStatus(phs, obs)
	if equality.Semantic.DeepEqual(phs.Status, st) {
		return nil
	}
	base := phs.DeepCopy()
	phs.Status = st
	if err := r.Client.Status().Patch(ctx, phs, client.MergeFrom(base), client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile; its children go with it
		}
		return fmt.Errorf("patch status of PlayHouseServer %s/%s: %w", phs.Namespace, phs.Name, err)
	}
	return nil
}

// ptrTo returns a pointer to v.
func ptrTo[T any](v T) *T { return &v }

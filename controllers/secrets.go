package controllers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// secretRef is a Secret the pods need: its name, the keys they read, and
// the spec field that names it.
type secretRef struct {
	name  string
	keys  []string
	field string
}

// referencedSecrets lists the Secrets a spec makes the pods depend on, other
// than the generated signing key: the TLS Secret, a user-provided signing
// key, and every non-optional env secretKeyRef.
func referencedSecrets(phs *playhousev1alpha1.PlayHouseServer) []secretRef {
	var refs []secretRef
	if n := phs.Spec.Transports.TLS.SecretName; n != "" {
		refs = append(refs, secretRef{name: n, keys: []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey}, field: "transports.tls.secretName"})
	}
	if n := phs.Spec.Auth.SigningKeySecretName; n != "" {
		refs = append(refs, secretRef{name: n, keys: []string{SigningKeyKey}, field: "auth.signingKeySecretName"})
	}
	for _, e := range phs.Spec.Pod.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || ptr.Deref(e.ValueFrom.SecretKeyRef.Optional, false) {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		refs = append(refs, secretRef{name: ref.Name, keys: []string{ref.Key}, field: fmt.Sprintf("pod.env[%s]", e.Name)})
	}
	return refs
}

// secretProblem is a referenced Secret the pods could not start with.
type secretProblem struct {
	// reason is ReasonSecretNotFound or ReasonSecretInvalid.
	reason  string
	message string
}

// checkSecrets reads every referenced Secret straight from the API server
// (the operator's cache holds no Secret data) and returns the first one that
// is missing or lacks a required key. Pods mounting it would wait in
// ContainerCreating until the Deployment's progress deadline, so the
// operator reports it instead and writes nothing until it is fixed; the
// Secret watch brings the PlayHouseServer back as soon as it changes.
func (r *PlayHouseServerReconciler) checkSecrets(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer) (*secretProblem, error) {
	for _, ref := range referencedSecrets(phs) {
		s := &corev1.Secret{}
		err := r.apiReader().Get(ctx, client.ObjectKey{Namespace: phs.Namespace, Name: ref.name}, s)
		switch {
		case apierrors.IsNotFound(err):
			return &secretProblem{reason: ReasonSecretNotFound, message: fmt.Sprintf(
				"Secret %s (%s) does not exist in namespace %s; the pods cannot start without it",
				ref.name, ref.field, phs.Namespace)}, nil
		case err != nil:
			return nil, fmt.Errorf("get Secret %s (%s): %w", ref.name, ref.field, err)
		}
		for _, k := range ref.keys {
			if len(s.Data[k]) == 0 {
				return &secretProblem{reason: ReasonSecretInvalid, message: fmt.Sprintf(
					"Secret %s (%s) has no key %q (or it is empty); it needs %v",
					ref.name, ref.field, k, ref.keys)}, nil
			}
		}
	}
	return nil, nil
}

// secretRequests maps a Secret event to the PlayHouseServers it concerns: its
// controller, and every PlayHouseServer of its namespace that references it.
func (r *PlayHouseServerReconciler) secretRequests(ctx context.Context, obj client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	if ref := metav1.GetControllerOfNoCopy(obj); ref != nil && ref.Kind == "PlayHouseServer" &&
		ref.APIVersion == playhousev1alpha1.GroupVersion.String() {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: ref.Name}})
	}
	list := &playhousev1alpha1.PlayHouseServerList{}
	if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace())); err != nil {
		logf.FromContext(ctx).Error(err, "cannot list PlayHouseServers for a Secret event", "secret", obj.GetName())
		return reqs
	}
	for i := range list.Items {
		p := &list.Items[i]
		if slices.ContainsFunc(referencedSecrets(p), func(s secretRef) bool { return s.name == obj.GetName() }) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(p)})
		}
	}
	return reqs
}

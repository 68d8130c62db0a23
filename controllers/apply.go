package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// applyOutcome tells what an apply did to the object in the cluster.
type applyOutcome int

const (
	// outcomeUnchanged: the object already matched; the API server wrote nothing.
	outcomeUnchanged applyOutcome = iota
	// outcomeCreated: the object did not exist.
	outcomeCreated
	// outcomeUpdated: the object existed and changed.
	outcomeUpdated
)

// toApplyObject converts a typed object built by a desired* function into the
// unstructured form sent with server-side apply. Null fields (unset pointers
// serialised by the typed structs, such as metadata.creationTimestamp) and the
// status are dropped, so the operator owns exactly the fields it sets.
func toApplyObject(obj runtime.Object) (*unstructured.Unstructured, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return u.DeepCopy(), nil
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return nil, fmt.Errorf("apply %T: TypeMeta (apiVersion and kind) must be set", obj)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %s to unstructured: %w", gvk.Kind, err)
	}
	delete(m, "status")
	pruneNulls(m)
	return &unstructured.Unstructured{Object: m}, nil
}

// pruneNulls removes nil values from nested maps and lists, in place.
func pruneNulls(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if e == nil {
				delete(t, k)
				continue
			}
			pruneNulls(e)
		}
	case []any:
		for _, e := range t {
			pruneNulls(e)
		}
	}
}

// applyObject writes obj with server-side apply under FieldManager, forcing
// ownership of the fields it sets (the operator is the only writer of those),
// and stores the object returned by the API server into live when live is not
// nil. It is the single write path of every child object.
//
// The outcome compares the resourceVersion before and after: an apply that
// matches the live object is a no-op on the server and keeps it.
func (r *PlayHouseServerReconciler) applyObject(ctx context.Context, desired client.Object, live client.Object) (applyOutcome, error) {
	u, err := toApplyObject(desired)
	if err != nil {
		return outcomeUnchanged, err
	}
	// A typed copy, so the read is served by the manager's cache.
	before, ok := desired.DeepCopyObject().(client.Object)
	if !ok {
		return outcomeUnchanged, fmt.Errorf("apply %s %s: cannot copy %T", u.GetKind(), u.GetName(), desired)
	}
	beforeRV := ""
	switch err := r.getChild(ctx, client.ObjectKeyFromObject(desired), before); {
	case err == nil:
		beforeRV = before.GetResourceVersion()
	case apierrors.IsNotFound(err):
	default:
		return outcomeUnchanged, fmt.Errorf("get %s %s: %w", u.GetKind(), u.GetName(), err)
	}

	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return outcomeUnchanged, fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	if live != nil {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, live); err != nil {
			return outcomeUnchanged, fmt.Errorf("convert applied %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	switch {
	case beforeRV == "":
		return outcomeCreated, nil
	case beforeRV != u.GetResourceVersion():
		return outcomeUpdated, nil
	default:
		return outcomeUnchanged, nil
	}
}

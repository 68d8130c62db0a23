package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// applyOutcome tells what an apply did to the object in the cluster.
type applyOutcome int

const (
	// outcomeUnchanged: the object already matched; nothing was written.
	outcomeUnchanged applyOutcome = iota
	// outcomeCreated: the object did not exist.
	outcomeCreated
	// outcomeUpdated: the object existed and changed.
	outcomeUpdated
)

// childConflictError reports a child name held by an object that this
// PlayHouseServer does not control. The operator never writes such an object.
type childConflictError struct {
	// kind and name are the child's.
	kind, name string
	// owner describes the object's controller, or is empty when it has none.
	owner string
}

// Error implements error.
func (e *childConflictError) Error() string {
	by := "it has no controller"
	if e.owner != "" {
		by = "it is controlled by " + e.owner
	}
	return fmt.Sprintf("%s %s already exists and is not controlled by this PlayHouseServer (%s); "+
		"the operator leaves it untouched: delete or rename it, or give the PlayHouseServer another name",
		e.kind, e.name, by)
}

// newConflict builds the conflict error for obj.
func newConflict(kind string, obj metav1.Object) *childConflictError {
	e := &childConflictError{kind: kind, name: obj.GetName()}
	if ref := metav1.GetControllerOfNoCopy(obj); ref != nil {
		e.owner = fmt.Sprintf("%s %s (uid %s)", ref.Kind, ref.Name, ref.UID)
	}
	return e
}

// toApplyObject converts a typed object built by a desired* function into the
// unstructured form sent with server-side apply. Null fields (unset pointers
// serialised by the typed structs, such as metadata.creationTimestamp) and the
// status are dropped, so the operator owns exactly the fields it sets.
func toApplyObject(obj runtime.Object) (*unstructured.Unstructured, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u = u.DeepCopy()
		pruneNulls(u.Object)
		return u, nil
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

// appliedHash is the hash of an apply object, stored on the child in
// AnnotationAppliedHash: a child whose annotation matches the desired
// object's hash got exactly this object applied last.
func appliedHash(u *unstructured.Unstructured) (string, error) {
	b, err := json.Marshal(u.Object) // map keys are sorted: the encoding is stable
	if err != nil {
		return "", fmt.Errorf("hash %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]), nil
}

// applyObject writes one child with server-side apply under FieldManager,
// forcing ownership of the fields it sets (the operator is the only writer of
// those), and stores the child as it is in the cluster into live when live is
// not nil. It is the single write path of every child object:
//
//   - An object of that name that this PlayHouseServer does not control
//     (no controller reference with its UID) is never written: the result is
//     a *childConflictError. The manager's cache only holds objects labelled
//     as managed by the operator, so a miss there is confirmed by a direct
//     metadata read before anything is created.
//   - A child that carries the hash of the desired object and still holds
//     every field the operator sets (nobody edited them) is not written at
//     all, so a resync of a converged fleet sends no request.
//   - Otherwise the object is applied with the resourceVersion just read as
//     a precondition: an object replaced meanwhile, or a stale cached read,
//     fails with a Conflict instead of being taken over, and the outcome
//     (Updated or unchanged) is exact.
func (r *PlayHouseServerReconciler) applyObject(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, desired client.Object, live client.Object) (applyOutcome, error) {
	u, err := toApplyObject(desired)
	if err != nil {
		return outcomeUnchanged, err
	}
	kind, name := u.GetKind(), u.GetName()
	hash, err := appliedHash(u)
	if err != nil {
		return outcomeUnchanged, err
	}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationAppliedHash] = hash
	u.SetAnnotations(ann)

	// A typed copy, so the read is served by the manager's cache; a Secret is
	// read as metadata only (the cache holds no Secret data).
	var cur client.Object = secretMetadata()
	if _, isSecret := desired.(*corev1.Secret); !isSecret {
		var ok bool
		if cur, ok = desired.DeepCopyObject().(client.Object); !ok {
			return outcomeUnchanged, fmt.Errorf("apply %s %s: cannot copy %T", kind, name, desired)
		}
	}
	key := client.ObjectKeyFromObject(desired)
	rv := ""
	switch err := r.getChild(ctx, key, cur); {
	case err == nil:
		if !metav1.IsControlledBy(cur, phs) {
			return outcomeUnchanged, newConflict(kind, cur)
		}
		rv = cur.GetResourceVersion()
		if cur.GetAnnotations()[AnnotationAppliedHash] == hash {
			same, err := holdsApplied(cur, u)
			if err != nil {
				return outcomeUnchanged, fmt.Errorf("compare %s %s: %w", kind, name, err)
			}
			if same {
				return outcomeUnchanged, copyInto(cur, live)
			}
		}
	case apierrors.IsNotFound(err):
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(u.GroupVersionKind())
		switch err := r.apiReader().Get(ctx, key, meta); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return outcomeUnchanged, fmt.Errorf("get %s %s: %w", kind, name, err)
		case !metav1.IsControlledBy(meta, phs):
			return outcomeUnchanged, newConflict(kind, meta)
		default:
			// Ours, but not in the cache (yet, or its label was removed).
			rv = meta.GetResourceVersion()
		}
	default:
		return outcomeUnchanged, fmt.Errorf("get %s %s: %w", kind, name, err)
	}

	if rv != "" {
		u.SetResourceVersion(rv)
	}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return outcomeUnchanged, fmt.Errorf("apply %s %s: %w", kind, name, err)
	}
	if live != nil {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, live); err != nil {
			return outcomeUnchanged, fmt.Errorf("convert applied %s %s: %w", kind, name, err)
		}
	}
	switch {
	case rv == "":
		return outcomeCreated, nil
	case rv != u.GetResourceVersion():
		return outcomeUpdated, nil
	default:
		return outcomeUnchanged, nil
	}
}

// apiReader is APIReader, or Client when it is nil.
func (r *PlayHouseServerReconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// copyInto copies the live object src into dst (nil: nothing to do).
func copyInto(src, dst client.Object) error {
	if dst == nil {
		return nil
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(src)
	if err != nil {
		return fmt.Errorf("convert %T: %w", src, err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, dst); err != nil {
		return fmt.Errorf("convert into %T: %w", dst, err)
	}
	return nil
}

// holdsApplied reports whether the live object still holds every field of
// the apply object with the same value: nobody changed a field the operator
// sets. Fields the API server or other writers added are ignored, and so are
// extra entries in lists of objects (lists keyed by name or port, which
// server-side apply merges); lists of plain values must match exactly.
func holdsApplied(live client.Object, applied *unstructured.Unstructured) (bool, error) {
	var m map[string]any
	if u, ok := live.(*unstructured.Unstructured); ok {
		m = u.Object
	} else {
		var err error
		if m, err = runtime.DefaultUnstructuredConverter.ToUnstructured(live); err != nil {
			return false, fmt.Errorf("convert %T: %w", live, err)
		}
	}
	want := applied.DeepCopy().Object
	delete(want, "apiVersion")
	delete(want, "kind")
	if md, ok := want["metadata"].(map[string]any); ok {
		delete(md, "resourceVersion")
	}
	if _, metaOnly := live.(*metav1.PartialObjectMetadata); metaOnly {
		want = map[string]any{"metadata": want["metadata"]}
	}
	return contains(m, want), nil
}

// contains reports whether have holds want: every key of a wanted map with a
// contained value, lists of maps as an ordered subsequence, other values equal.
func contains(have, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			hv, ok := h[k]
			if !ok || !contains(hv, wv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok {
			return false
		}
		if !listOfMaps(w) {
			if len(h) != len(w) {
				return false
			}
			for i := range w {
				if !contains(h[i], w[i]) {
					return false
				}
			}
			return true
		}
		i := 0
		for _, wv := range w {
			for i < len(h) && !contains(h[i], wv) {
				i++
			}
			if i == len(h) {
				return false
			}
			i++
		}
		return true
	default:
		return scalarEqual(have, want)
	}
}

// listOfMaps reports whether every element of l is a map.
func listOfMaps(l []any) bool {
	for _, e := range l {
		if _, ok := e.(map[string]any); !ok {
			return false
		}
	}
	return len(l) > 0
}

// scalarEqual compares two JSON scalars, numbers by value whatever their Go type.
func scalarEqual(a, b any) bool {
	fa, aNum := number(a)
	fb, bNum := number(b)
	if aNum || bNum {
		return aNum && bNum && fa == fb
	}
	return a == b
}

// number returns v as a float64 when it is a number.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case float32:
		return float64(n), true
	default:
		return 0, false
	}
}

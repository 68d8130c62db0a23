package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Cache lifetimes of metrics access decisions.
const (
	allowTTL      = time.Minute
	denyTTL       = 10 * time.Second
	reviewTimeout = 10 * time.Second
	// maxDecisions bounds the decision cache; it is cleared when full.
	maxDecisions = 1024
)

// metricsAuthFilter protects the metrics endpoint with the cluster's own
// authentication and authorization, as a metricsserver.FilterProvider: the
// caller's bearer token is checked with a TokenReview, and the caller must be
// allowed to GET the request path (a non-resource URL such as /metrics) by a
// SubjectAccessReview. It needs RBAC to create tokenreviews
// (authentication.k8s.io) and subjectaccessreviews (authorization.k8s.io).
//
// It does what controller-runtime's filters.WithAuthenticationAndAuthorization
// does without pulling k8s.io/apiserver into the module.
func metricsAuthFilter(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authnclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("build TokenReview client: %w", err)
	}
	authz, err := authzclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("build SubjectAccessReview client: %w", err)
	}
	a := &metricsAuthorizer{
		review: func(ctx context.Context, token, verb, path string) (verdict, error) {
			tr, err := authn.TokenReviews().Create(ctx, &authenticationv1.TokenReview{
				Spec: authenticationv1.TokenReviewSpec{Token: token},
			}, metav1.CreateOptions{})
			if err != nil {
				return verdict{}, fmt.Errorf("token review: %w", err)
			}
			if !tr.Status.Authenticated {
				return verdict{reason: "unauthenticated: " + tr.Status.Error}, nil
			}
			u := tr.Status.User
			extra := map[string]authorizationv1.ExtraValue{}
			for k, v := range u.Extra {
				extra[k] = authorizationv1.ExtraValue(v)
			}
			sar, err := authz.SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{
					User:                  u.Username,
					UID:                   u.UID,
					Groups:                u.Groups,
					Extra:                 extra,
					NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
				},
			}, metav1.CreateOptions{})
			if err != nil {
				return verdict{}, fmt.Errorf("subject access review: %w", err)
			}
			if !sar.Status.Allowed {
				return verdict{authenticated: true, reason: fmt.Sprintf("user %s may not %s %s", u.Username, verb, path)}, nil
			}
			return verdict{authenticated: true, allowed: true}, nil
		},
		decisions: map[decisionKey]decision{},
		now:       time.Now,
	}
	return a.filter, nil
}

// decisionKey identifies one cached decision (the token is kept only as a hash).
type decisionKey struct {
	token [sha256.Size]byte
	verb  string
	path  string
}

// verdict is the answer of one access review.
type verdict struct {
	// authenticated: the TokenReview accepted the token. A request with a
	// token it rejects gets 401 Unauthorized.
	authenticated bool
	// allowed: the SubjectAccessReview allowed the request; an authenticated
	// caller that is not allowed gets 403 Forbidden.
	allowed bool
	// reason explains a refusal (logged at V(4)).
	reason string
}

// decision is a cached access decision.
type decision struct {
	verdict
	expires time.Time
}

// metricsAuthorizer checks metrics requests and caches the answers briefly,
// so a scrape every few seconds does not cost two API calls each.
type metricsAuthorizer struct {
	review func(ctx context.Context, token, verb, path string) (verdict, error)
	now    func() time.Time

	mu        sync.Mutex
	decisions map[decisionKey]decision
}

// filter implements metricsserver.Filter.
func (a *metricsAuthorizer) filter(log logr.Logger, next http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		key := decisionKey{token: sha256.Sum256([]byte(token)), verb: strings.ToLower(req.Method), path: req.URL.Path}
		d, err := a.decide(req.Context(), token, key)
		if err != nil {
			log.Error(err, "cannot authorize a metrics request")
			http.Error(w, "authorization failed", http.StatusInternalServerError)
			return
		}
		if !d.authenticated {
			log.V(4).Info("metrics request unauthenticated", "reason", d.reason)
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		if !d.allowed {
			log.V(4).Info("metrics request denied", "reason", d.reason)
			http.Error(w, "Forbidden", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, req)
	}), nil
}

// decide returns the cached decision for key or asks the API server.
func (a *metricsAuthorizer) decide(ctx context.Context, token string, key decisionKey) (decision, error) {
	now := a.now()
	a.mu.Lock()
	d, ok := a.decisions[key]
	a.mu.Unlock()
	if ok && now.Before(d.expires) {
		return d, nil
	}
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	v, err := a.review(ctx, token, key.verb, key.path)
	if err != nil {
		return decision{}, err
	}
	d = decision{verdict: v, expires: now.Add(denyTTL)}
	if v.allowed {
		d.expires = now.Add(allowTTL)
	}
	a.mu.Lock()
	if len(a.decisions) >= maxDecisions {
		clear(a.decisions)
	}
	a.decisions[key] = d
	a.mu.Unlock()
	return d, nil
}

/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

// Package crdvalidation tests the PlayHouseServer CRD against a real API
// server (envtest): the OpenAPI bounds and CEL rules refuse bad objects with
// the expected messages, the samples are accepted, the API server applies the
// defaults, and the scale subresource works. Two tests that need no API
// server keep the Helm chart's CRDs and ClusterRole equal to the generated
// manifests.
//
// The tests need KUBEBUILDER_ASSETS (see hack/envtest-bins.sh); they fail
// without it, except under `go test -short`, where they are skipped.
package crdvalidation

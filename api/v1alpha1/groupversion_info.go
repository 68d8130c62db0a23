/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

// Package v1alpha1 holds the PlayHouseServer API of the playhouse.dev group.
//
// A PlayHouseServer describes one fleet of session-engine pods: its image, the
// client transports it listens on, session limits, authentication, the Service
// that exposes it, autoscaling, disruption budget and monitoring. The operator
// turns it into a ConfigMap, a Deployment, a Service and optional children.
//
// Validation lives in the CRD itself (OpenAPI bounds and CEL rules), so a bad
// object is refused by the API server with a message naming the field.
//
// +kubebuilder:object:generate=true
// +groupName=playhouse.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "playhouse.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers PlayHouseServer and PlayHouseServerList under GroupVersion.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &PlayHouseServer{}, &PlayHouseServerList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

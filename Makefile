# PlayHouse for Kubernetes. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# Tools are installed into ./bin (ignored by git); test API server binaries are
# cached outside the repo by hack/envtest-bins.sh.
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
# helm renders the chart in the chart tests (internal/charttest reads $HELM).
HELM_VERSION ?= v3.22.0
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
GO_TEST_FLAGS ?= -race -count=1 -timeout 30m
PKGS ?= ./...

.PHONY: all
all: build ## Build every binary (the default).

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: run
run: ## Build and run the session engine on its embedded defaults (TCP 127.0.0.1:7777, WS 127.0.0.1:7778/ws, admin :9090, echo app).
	go build -o $(LOCALBIN)/playhouse-server ./cmd/playhouse-server
	$(LOCALBIN)/playhouse-server $(ARGS)

.PHONY: fmt
fmt: ## Run gofmt on every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: fmt-check
fmt-check: ## Fail when gofmt would change a file.
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## Run go vet.
	go vet $(PKGS)

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests under config/ and the chart's CRDs.
	$(CONTROLLER_GEN) rbac:roleName=playhouse-operator crd:allowDangerousTypes=false webhook paths="./api/..." paths="./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	mkdir -p charts/playhouse/crds && cp config/crd/bases/*.yaml charts/playhouse/crds/

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: check-generated
check-generated: ## Fail when generated files are stale (runs generate and manifests, then compares).
	hack/check-generated.sh

##@ Test

.PHONY: envtest-bins
envtest-bins: ## Build (once) and cache kube-apiserver and etcd for envtest.
	hack/envtest-bins.sh

.PHONY: test-deps
test-deps: ## Install the test tools that are not Go modules (Debian's chromium for the browser test).
	hack/test-deps.sh

.PHONY: test
test: fmt-check vet check-generated test-deps helm ## Install what the tests need, run the allocation tests without the race detector, then every test with it.
	go test -count=1 -run 'ZeroAlloc|BoundedAlloc' ./pkg/...
	HELM="$(HELM)" KUBEBUILDER_ASSETS="$$(hack/envtest-bins.sh)" PROMTOOL="$$(hack/e2e-bins.sh promtool)/promtool" go test $(GO_TEST_FLAGS) $(PKGS)

.PHONY: e2e-bins
e2e-bins: ## Build (once) and cache the fuller control plane: kube-controller-manager, kube-scheduler, kwok, Prometheus, KEDA.
	hack/e2e-bins.sh

E2E_TIMEOUT ?= 30m

.PHONY: e2e
e2e: test-deps helm build ## Run the end-to-end suite on a fuller control plane (root: it makes a network namespace; first run builds ~30 min of binaries).
	HELM="$(HELM)" KUBEBUILDER_ASSETS="$$(hack/envtest-bins.sh)" E2E_BINS="$$(hack/e2e-bins.sh)" PLAYHOUSE_BIN="$(LOCALBIN)" \
		go test -count=1 -timeout $(E2E_TIMEOUT) -tags e2e -v -run 'TestE2E' ./test/e2e/

.PHONY: test-short
test-short: ## Run the tests without the race detector and without envtest.
	go test -count=1 -short $(PKGS)

.PHONY: bench
bench: ## Run the Go benchmarks of the protocol and engine (results: docs/benchmarks.md).
	go test -run '^$$' -bench . -benchmem ./pkg/protocol/... ./pkg/transport/... ./pkg/session/...

##@ Build

.PHONY: build
build: ## Build playhouse-server, playhouse-operator and playhouse-bench into ./bin.
	go build -o $(LOCALBIN)/ ./cmd/...

# VERSION is the release: the chart's appVersion, which controllers.Version
# equals (a test checks). IMG is the image reference docker-build tags and
# docker-push pushes; set it to your own registry, for example
#   make docker-build docker-push IMG=registry.example.com/team/playhouse:0.1.0
# and install the chart with --set image.repository=...,image.tag=...
VERSION ?= $(shell awk '/^appVersion:/ { gsub(/"/, "", $$2); print $$2 }' charts/playhouse/Chart.yaml)
IMG ?= ghcr.io/playhouse-k8s/playhouse:$(VERSION)

.PHONY: docker-build
docker-build: ## Build the image of the server, operator and bench binaries (needs a Docker engine; IMG=...).
	docker build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image built by docker-build (IMG=...; log in to the registry first).
	docker push $(IMG)

.PHONY: install
install: manifests ## Install the CRDs into the cluster of the current kubeconfig.
	kubectl apply -f config/crd/bases

.PHONY: deploy
deploy: manifests ## Deploy the operator with kustomize into the current kubeconfig's cluster.
	kubectl apply -k config/default

##@ Tools

.PHONY: helm
helm: $(HELM) ## Install helm into ./bin (the chart tests render the chart with it).
$(HELM):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/helm $(HELM)

.PHONY: chart-lint
chart-lint: helm ## Lint the Helm chart.
	$(HELM) lint charts/playhouse

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into ./bin.
$(CONTROLLER_GEN):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)

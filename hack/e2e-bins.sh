#!/usr/bin/env bash
# Builds (once) the binaries of the fuller control plane that `make e2e` runs,
# from Go sources fetched through the Go module proxy, and caches them outside
# the repository, each in a folder keyed by its version:
#
#   kube-controller-manager, kube-scheduler   k8s.io/kubernetes v$K8S_VERSION
#   kwok                                      sigs.k8s.io/kwok v$KWOK_VERSION
#   prometheus, promtool                      github.com/prometheus/prometheus v$PROM_VERSION
#   keda-operator, keda-adapter               github.com/kedacore/keda/v2 v$KEDA_VERSION
#
# Usage: hack/e2e-bins.sh [COMPONENT...]   (default: all of them)
#   COMPONENT is one of kcm, scheduler, kwok, prometheus, promtool, keda.
#
# Prints, as its only stdout line, a folder holding symlinks to every binary
# asked for (the folder is keyed by all pinned versions), so:
#
#   E2E_BINS="$(hack/e2e-bins.sh)" go test ./test/e2e/...
#   PROMTOOL="$(hack/e2e-bins.sh promtool)/promtool"
#
# Progress goes to stderr; the go tool's output to a log file in the cache.
# Components are built one at a time (the build machine is shared). A second
# caller waits on a lock for the first. Fast path: nothing to build, ~0.1 s.
# See hack/README.md.
set -euo pipefail

K8S_VERSION=1.37.2
KWOK_VERSION=0.8.0
PROM_VERSION=0.316.0
KEDA_VERSION=2.21.0
STAGING_VERSION="0.${K8S_VERSION#1.}"
# KEDA's go.mod carries one replace and one exclude that `go install` refuses;
# the throwaway module repeats them.
KEDA_REPLACE="github.com/nexus-rpc/nexus-proto-annotations@v0.1.0=github.com/nexus-rpc/nexus-proto-annotations@v0.1.1-0.20260629224316-835bd8d49cb4"
KEDA_EXCLUDE="github.com/go-chi/chi/v5@v5.2.3"

CACHE_ROOT="${PLAYHOUSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/playhouse}"
E2E_ROOT="$CACHE_ROOT/e2e"
LINKS="$E2E_ROOT/bin-k8s-$K8S_VERSION-kwok-$KWOK_VERSION-prom-$PROM_VERSION-keda-$KEDA_VERSION"

exec 3>&1 1>&2
log() { printf 'e2e-bins: %s\n' "$*" >&2; }

# dir_of COMPONENT: the versioned cache folder of a component.
dir_of() {
  case "$1" in
    kcm | scheduler) echo "$E2E_ROOT/k8s-$K8S_VERSION" ;;
    kwok) echo "$E2E_ROOT/kwok-$KWOK_VERSION" ;;
    prometheus | promtool) echo "$E2E_ROOT/prometheus-$PROM_VERSION" ;;
    keda) echo "$E2E_ROOT/keda-$KEDA_VERSION" ;;
    *) log "unknown component $1 (want kcm, scheduler, kwok, prometheus, promtool, keda)"; exit 2 ;;
  esac
}

# bins_of COMPONENT: the binaries a component provides.
bins_of() {
  case "$1" in
    kcm) echo kube-controller-manager ;;
    scheduler) echo kube-scheduler ;;
    kwok) echo kwok ;;
    prometheus) echo prometheus ;;
    promtool) echo promtool ;;
    keda) echo keda-operator keda-adapter ;;
  esac
}

# works COMPONENT: every binary is present, executable, and stamped as built
# by this script (the stamp is written only after the binary ran).
works() {
  local d b
  d="$(dir_of "$1")"
  for b in $(bins_of "$1"); do
    [[ -x "$d/$b" && -f "$d/.$b.ok" ]] || return 1
  done
  case "$1" in
    keda) [[ -f "$d/crds/.ok" ]] ;;
    kwok) [[ -f "$d/stages/.ok" ]] ;;
  esac
}

components=("$@")
((${#components[@]} > 0)) || components=(promtool kcm scheduler kwok prometheus keda)
for c in "${components[@]}"; do dir_of "$c" >/dev/null; done

link_all() {
  local c d b
  mkdir -p "$LINKS"
  for c in "${components[@]}"; do
    d="$(dir_of "$c")"
    for b in $(bins_of "$c"); do ln -sfn "$d/$b" "$LINKS/$b"; done
    case "$c" in
      keda) ln -sfn "$d/crds" "$LINKS/keda-crds" ;;
      kwok) ln -sfn "$d/stages" "$LINKS/kwok-stages" ;;
    esac
  done
  printf '%s\n' "$LINKS" >&3
  exit 0
}

all_work() {
  local c
  for c in "${components[@]}"; do works "$c" || return 1; done
}

all_work && link_all

mkdir -p "$E2E_ROOT"
exec 9>"$E2E_ROOT/.build.lock"
if ! flock -n 9; then
  log "another e2e-bins.sh is building into $E2E_ROOT; waiting for it"
  flock 9
fi
all_work && link_all

WORK="$(mktemp -d "${TMPDIR:-/tmp}/playhouse-e2e-bins.XXXXXX")"
STAGE="$(mktemp -d "$E2E_ROOT/.stage-XXXXXX")"
cleanup() { rm -rf "$WORK" "$STAGE"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
rm -rf "$E2E_ROOT"/.stage-* 2>/dev/null || true
mkdir -p "$STAGE"

export CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod

BUILD_LOG="$E2E_ROOT/build.log"
log "go output is logged to $BUILD_LOG"
run() {
  printf '+ %s\n' "$*" >>"$BUILD_LOG"
  if ! nice -n 10 "$@" >>"$BUILD_LOG" 2>&1; then
    log "failed: $*"
    tail -n 40 "$BUILD_LOG" >&2
    exit 1
  fi
}

# install_bin COMPONENT NAME ARG...: run $STAGE/NAME ARG... to check it runs,
# then rename it into the component's folder and stamp it.
install_bin() {
  local c="$1" name="$2" d out
  shift 2
  d="$(dir_of "$c")"
  mkdir -p "$d"
  # --help exits 0 or 2 depending on the flag library; a binary that does
  # not run at all prints no usage text.
  out="$(timeout 60 "$STAGE/$name" "$@" 2>&1)" || true
  if [[ "$out" != *"$K8S_VERSION"* && "$out" != *"$PROM_VERSION"* && "$out" != *[Uu]sage* && "$out" != *-help* ]]; then
    log "built $name does not run: ${out:0:400}"
    exit 1
  fi
  chmod 0755 "$STAGE/$name"
  mv -f "$STAGE/$name" "$d/$name"
  printf '%s\n' "$out" | head -n 3 >"$d/.$name.ok"
  log "installed $d/$name"
}

k8s_ldflags() {
  local major="${K8S_VERSION%%.*}" rest="${K8S_VERSION#*.}" minor pkg kv ld="-s -w"
  minor="${rest%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for kv in "gitVersion=v$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
              "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
      ld+=" -X $pkg.$kv"
    done
  done
  printf '%s' "$ld"
}

# k8s_module: a throwaway module that requires k8s.io/kubernetes with its
# staging modules replaced by their published releases (as envtest-bins.sh).
K8S_MOD=""
k8s_module() {
  [[ -n "$K8S_MOD" ]] && return 0
  K8S_MOD="$WORK/k8s"
  mkdir -p "$K8S_MOD"
  local gomod m gd staging=() edits=()
  (cd "$K8S_MOD" && run go mod init playhouse.invalid/e2e-k8s)
  gomod="$(cd "$K8S_MOD" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" 2>>"$BUILD_LOG" \
    | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$gomod" ]] || { log "could not locate go.mod of k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
  while read -r m; do staging+=("$m"); done < <(
    awk '/=>[[:space:]]*\.\/staging\/src\// {
           for (i = 1; i <= NF; i++) if ($i == "=>") { print $(i-1); break }
         }' "$gomod" | sort -u)
  ((${#staging[@]} > 0)) || { log "no staging replace directives found in $gomod"; exit 1; }
  edits=(-require="k8s.io/kubernetes@v$K8S_VERSION")
  for m in "${staging[@]}"; do edits+=(-replace="$m=$m@v$STAGING_VERSION"); done
  while read -r gd; do
    [[ -n "$gd" ]] && edits+=(-godebug="$gd")
  done < <(awk '$1 == "godebug" && NF == 2 { print $2 }' "$gomod")
  (cd "$K8S_MOD" && run go mod edit "${edits[@]}")
}

build_k8s_cmd() {
  local c="$1" name="$2" start=$SECONDS
  k8s_module
  log "building $name v$K8S_VERSION (KCM 4-6 min cold on 2 cores, the scheduler ~1 min after it)"
  (
    cd "$K8S_MOD"
    run go get "k8s.io/kubernetes/cmd/$name@v$K8S_VERSION"
    run go build -trimpath -ldflags "$(k8s_ldflags)" -o "$STAGE/$name" "k8s.io/kubernetes/cmd/$name"
  )
  log "$name built in $((SECONDS - start))s"
  install_bin "$c" "$name" --version
}

build_kwok() {
  local start=$SECONDS
  log "building kwok v$KWOK_VERSION (~3 min cold)"
  run env GOBIN="$STAGE" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  log "kwok built in $((SECONDS - start))s"
  install_bin kwok kwok --help
  # The stages (node heartbeat, pod ready, ...) kwok applies ship in its module.
  local src
  src="$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" 2>>"$BUILD_LOG" \
    | sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
  [[ -d "$src/kustomize/stage" ]] || { log "kwok stages not found in the module ($src)"; exit 1; }
  rm -rf "$(dir_of kwok)/stages"
  mkdir -p "$(dir_of kwok)/stages"
  cp -rf "$src/kustomize/stage/." "$(dir_of kwok)/stages/"
  chmod -R u+w "$(dir_of kwok)/stages"
  touch "$(dir_of kwok)/stages/.ok"
}

build_prom() {
  local c="$1" start=$SECONDS
  log "building $c v$PROM_VERSION (prometheus ~6.5 min cold, promtool ~2 min)"
  # Stamp the module version, so --version names it (unstamped it is empty).
  run env GOBIN="$STAGE" go install -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROM_VERSION -X github.com/prometheus/common/version.Branch=module" \
    "github.com/prometheus/prometheus/cmd/$c@v$PROM_VERSION"
  log "$c built in $((SECONDS - start))s"
  install_bin "$c" "$c" --version
}

build_keda() {
  local mod="$WORK/keda" start=$SECONDS
  log "building KEDA v$KEDA_VERSION operator (~6.5 min cold) and metrics adapter (~1.5 min after it)"
  mkdir -p "$mod"
  (
    cd "$mod"
    run go mod init playhouse.invalid/e2e-keda
    run go mod edit -replace="$KEDA_REPLACE" -exclude="$KEDA_EXCLUDE"
    run go get "github.com/kedacore/keda/v2/cmd/operator@v$KEDA_VERSION" "github.com/kedacore/keda/v2/cmd/adapter@v$KEDA_VERSION"
    run go build -trimpath -ldflags "-s -w" -o "$STAGE/keda-operator" github.com/kedacore/keda/v2/cmd/operator
    install_bin keda keda-operator --help
    log "KEDA operator built in $((SECONDS - start))s"
    run go build -trimpath -ldflags "-s -w" -o "$STAGE/keda-adapter" github.com/kedacore/keda/v2/cmd/adapter
    install_bin keda keda-adapter --help
  )
  # KEDA's CRDs (the e2e suite installs them) are in the module cache.
  local src
  src="$(cd "$mod" && go list -m -f '{{.Dir}}' "github.com/kedacore/keda/v2")"
  mkdir -p "$(dir_of keda)/crds"
  cp -f "$src"/config/crd/bases/*.yaml "$(dir_of keda)/crds/"
  chmod -R u+w "$(dir_of keda)/crds"
  touch "$(dir_of keda)/crds/.ok"
  log "KEDA built in $((SECONDS - start))s"
}

for c in "${components[@]}"; do
  works "$c" && continue
  case "$c" in
    kcm) build_k8s_cmd kcm kube-controller-manager ;;
    scheduler) build_k8s_cmd scheduler kube-scheduler ;;
    kwok) build_kwok ;;
    prometheus | promtool) build_prom "$c" ;;
    keda) build_keda ;;
  esac
done

log "e2e binaries ready in $LINKS"
link_all

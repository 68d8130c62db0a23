#!/usr/bin/env bash
# Builds (once) the kube-apiserver and etcd binaries that controller-runtime's
# envtest needs, from Go sources fetched through the Go module proxy, and caches
# them outside the repository. Prints the folder holding them as the last (and
# only) line on stdout, so a Makefile can do:
#
#   KUBEBUILDER_ASSETS := $(shell hack/envtest-bins.sh)
#
# All progress goes to stderr. See hack/README.md.
set -euo pipefail

K8S_VERSION=1.37.2     # kube-apiserver, from k8s.io/kubernetes v$K8S_VERSION
ETCD_VERSION=3.6.16    # etcd, from go.etcd.io/etcd/server/v3 v$ETCD_VERSION
STAGING_VERSION="0.${K8S_VERSION#1.}"   # k8s.io/<staging module> v0.37.2

CACHE_ROOT="${PLAYHOUSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/playhouse}"
DEST="$CACHE_ROOT/envtest/k8s-$K8S_VERSION"

# Keep the real stdout on fd 3 for the final path; everything else (including
# the go tool's own output) goes to stderr.
exec 3>&1 1>&2

log() { printf 'envtest-bins: %s\n' "$*" >&2; }

# works NAME: true when $DEST/NAME exists, runs, and reports the expected version.
works() {
  local out
  case "$1" in
    kube-apiserver)
      [[ -x "$DEST/kube-apiserver" ]] || return 1
      out="$("$DEST/kube-apiserver" --version 2>&1)" || return 1
      [[ "$out" == *"v$K8S_VERSION"* ]]
      ;;
    etcd)
      [[ -x "$DEST/etcd" ]] || return 1
      out="$("$DEST/etcd" --version 2>&1)" || return 1
      [[ "$out" == *"$ETCD_VERSION"* ]]
      ;;
  esac
}

done_here() {
  printf '%s\n' "$DEST" >&3
  exit 0
}

# Fast path: nothing to do.
if works kube-apiserver && works etcd; then
  done_here
fi

mkdir -p "$DEST"

# One builder at a time; a second caller waits, then finds the binaries built.
exec 9>"$CACHE_ROOT/envtest/.k8s-$K8S_VERSION.lock"
if ! flock -n 9; then
  log "another envtest-bins.sh is building into $DEST; waiting for it"
  flock 9
fi
if works kube-apiserver && works etcd; then
  done_here
fi

# Leftovers of a build that was killed hard (we hold the lock, so they are stale).
rm -rf "$DEST"/.build-* 2>/dev/null || true

WORK="$(mktemp -d "${TMPDIR:-/tmp}/playhouse-envtest.XXXXXX")"
# Same filesystem as $DEST, so the final mv is an atomic rename.
STAGE="$(mktemp -d "$DEST/.build-XXXXXX")"
cleanup() { rm -rf "$WORK" "$STAGE"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export CGO_ENABLED=0
export GOWORK=off   # never pick up a go.work from the caller's tree

# The go tool's chatter (hundreds of "go: downloading" lines) goes to a log
# file that outlives the build; its tail is shown if a step fails.
BUILD_LOG="$CACHE_ROOT/envtest/build-k8s-$K8S_VERSION.log"
: >"$BUILD_LOG"
log "go output is logged to $BUILD_LOG"
run() {
  printf '+ %s\n' "$*" >>"$BUILD_LOG"
  if ! "$@" >>"$BUILD_LOG" 2>&1; then
    log "failed: $*"
    tail -n 40 "$BUILD_LOG" >&2
    exit 1
  fi
}

# install NAME: verify $STAGE/NAME runs, then rename it into $DEST.
install_bin() {
  local name="$1" out
  out="$("$STAGE/$name" --version 2>&1)" || { log "built $name does not run: $out"; exit 1; }
  chmod 0755 "$STAGE/$name"
  mv -f "$STAGE/$name" "$DEST/$name"
  works "$name" || { log "$name installed but reports an unexpected version: $out"; exit 1; }
  log "installed $DEST/$name"
}

build_etcd() {
  local mod="$WORK/etcd" start=$SECONDS
  log "building etcd v$ETCD_VERSION (about 1 minute cold, seconds with a warm Go build cache)"
  mkdir -p "$mod"
  (
    cd "$mod"
    run go mod init playhouse.invalid/envtest-etcd
    run go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    # The etcd server's main package sits at the root of the server module.
    run go build -trimpath -ldflags "-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
  )
  log "etcd built in $((SECONDS - start))s"
  install_bin etcd
}

build_kube_apiserver() {
  local mod="$WORK/kube-apiserver" start=$SECONDS gomod
  log "building kube-apiserver v$K8S_VERSION (about 6 minutes cold on 2 cores, seconds with a warm Go build cache)"
  mkdir -p "$mod"
  cd "$mod"
  run go mod init playhouse.invalid/envtest-kube-apiserver

  # k8s.io/kubernetes requires its staging modules at v0.0.0 and points them at
  # ./staging/src/... with replace directives, which only apply inside its own
  # tree. Replace each of them with its published v0.X.Y release instead.
  gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" 2>>"$BUILD_LOG" \
    | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$gomod" ]] || { log "could not locate go.mod of k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }

  local staging=() m
  while read -r m; do staging+=("$m"); done < <(
    awk '/=>[[:space:]]*\.\/staging\/src\// {
           for (i = 1; i <= NF; i++) if ($i == "=>") { print $(i-1); break }
         }' "$gomod" | sort -u)
  ((${#staging[@]} > 0)) || { log "no staging replace directives found in $gomod"; exit 1; }
  log "replacing ${#staging[@]} staging modules with v$STAGING_VERSION"

  local edits=(-require="k8s.io/kubernetes@v$K8S_VERSION")
  for m in "${staging[@]}"; do
    edits+=(-replace="$m=$m@v$STAGING_VERSION")
  done
  # Match the GODEBUG defaults Kubernetes builds with (e.g. "godebug default=go1.26").
  local gd
  while read -r gd; do
    [[ -n "$gd" ]] && edits+=(-godebug="$gd")
  done < <(awk '$1 == "godebug" && NF == 2 { print $2 }' "$gomod")
  run go mod edit "${edits[@]}"

  run go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION"

  # What Kubernetes' own hack/lib/version.sh stamps (minus the git commit,
  # which the module proxy does not tell us).
  local major="${K8S_VERSION%%.*}" rest="${K8S_VERSION#*.}" minor
  minor="${rest%%.*}"
  local ldflags="-s -w" pkg kv
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for kv in "gitVersion=v$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
              "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
      ldflags+=" -X $pkg.$kv"
    done
  done
  run go build -trimpath -ldflags "$ldflags" -o "$STAGE/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  cd - >/dev/null
  log "kube-apiserver built in $((SECONDS - start))s"
  install_bin kube-apiserver
}

works etcd || build_etcd
works kube-apiserver || build_kube_apiserver

log "envtest binaries ready in $DEST"
done_here

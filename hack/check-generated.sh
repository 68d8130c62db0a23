#!/usr/bin/env bash
# Regenerates every generated file and fails when the result differs from what
# is in the working tree, so stale deepcopy code or manifests never land.
set -euo pipefail
cd "$(dirname "$0")/.."
gen_paths=(api config/crd config/rbac charts/playhouse/crds)
before=$(git status --porcelain --untracked-files=all -- "${gen_paths[@]}"; git diff -- "${gen_paths[@]}" | sha256sum)
make -s generate manifests >/dev/null
after=$(git status --porcelain --untracked-files=all -- "${gen_paths[@]}"; git diff -- "${gen_paths[@]}" | sha256sum)
if [ "$before" != "$after" ]; then
  echo "generated files are stale: run 'make generate manifests' and commit the result" >&2
  git status --short -- "${gen_paths[@]}" >&2
  exit 1
fi
echo "generated files are up to date"

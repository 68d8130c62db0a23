#!/usr/bin/env bash
# Installs what the tests need besides Go modules: Debian's chromium for the
# browser test (test/e2e). The envtest binaries come from hack/envtest-bins.sh.
set -euo pipefail
if [ -n "${CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "test-deps: chromium is needed for the browser test; install it with: sudo apt-get install chromium (or set CHROMIUM=/path/to/chrome)" >&2
  exit 1
fi
echo "test-deps: installing chromium (Debian package) for the browser test" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium >&2

#!/usr/bin/env bash
# Installs what the tests need besides Go modules, from Debian's packages:
# chromium for the browser tests (test/e2e, examples/gameserver) and iproute2
# (`ip netns`) for `make e2e`. The envtest binaries come from
# hack/envtest-bins.sh, the fuller control plane from hack/e2e-bins.sh.
set -euo pipefail
missing=()
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
if ! command -v ip >/dev/null 2>&1; then
  missing+=(iproute2)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "test-deps: the tests need ${missing[*]}; install with: sudo apt-get install ${missing[*]} (or set CHROMIUM=/path/to/chrome)" >&2
  exit 1
fi
echo "test-deps: installing ${missing[*]} (Debian packages) for the tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

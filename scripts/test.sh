#!/usr/bin/env bash
# Run zdeploy's whole test suite, installing what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests drive real git and drop privileges with setpriv (util-linux).
needed=()
command -v git >/dev/null || needed+=(git)
command -v setpriv >/dev/null || needed+=(util-linux)
if [ ${#needed[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: please install: ${needed[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}"
fi

cargo test --workspace --all-targets
